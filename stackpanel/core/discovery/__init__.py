"""Find the servers stackpanel drives on this machine, and say how to install what is missing.

This is the core of ``stackpanel doctor`` and the source of machine facts for the renderers:

- :func:`find_nginx` / :func:`find_apache`: the system's nginx and apache2/httpd binaries, their
  versions, and for Apache the modules directory, the compiled-in and shared modules and a
  ``mime.types`` file (:meth:`ApacheInfo.load_module_lines` writes the ``LoadModule`` lines).
- :func:`find_php_fpm`: php-fpm (Debian's versioned ``php-fpm8.2`` too) and its version.
- :func:`python_env`: gunicorn / uvicorn / uvicorn-worker versions for *an* interpreter (the app
  may run under another venv than stackpanel itself); :func:`module_importable` checks that an
  app module can be found there without importing it.
- :func:`detect_platform` / :func:`install_hint`: the exact command that installs a missing piece.
- :func:`run_doctor` / :func:`format_report`: one :class:`DoctorReport` with an entry per component.

Discovery spawns processes (``nginx -V``, ``apache2 -v/-l/-V``, ``python -c ...``), so results are
cached for the life of the process; :func:`clear_cache` forgets them (tests, "re-check" buttons).
Nothing here raises for a missing component: absence is a value (``None`` or ``found=False``).

One module per concern: :mod:`.platform` (platform and install hints), :mod:`.executables`
(probe processes, executable search), :mod:`.nginx`, :mod:`.apache` (and the module list a
rendered httpd.conf loads), :mod:`.python_env`, :mod:`.doctor` (the report). This package
re-exports their public names.
"""
from __future__ import annotations

from stackpanel.core.discovery.apache import (
    APACHE_BASE_MODULES,
    APACHE_PROXY_MODULES,
    STACKPANEL_APACHE_MODULES,
    ApacheInfo,
    find_apache,
    normalize_module_name,
    parse_apache_compiled_in,
    parse_apache_defines,
)
from stackpanel.core.discovery.doctor import ComponentStatus, DoctorReport, format_report, run_doctor
from stackpanel.core.discovery.errors import ApacheModuleError, DiscoveryError
from stackpanel.core.discovery.executables import EXTRA_BIN_DIRS, find_executable
from stackpanel.core.discovery.nginx import NginxInfo, find_nginx, parse_nginx_version_output
from stackpanel.core.discovery.php import PhpFpmInfo, find_php_fpm, parse_php_fpm_version
from stackpanel.core.discovery.platform import (
    ALL_KINDS,
    COMPONENT_ORDER,
    PIP_REQUIREMENTS,
    PYTHON_DISTRIBUTIONS,
    PYTHON_KINDS,
    Component,
    Kind,
    Platform,
    PlatformFamily,
    detect_platform,
    install_hint,
)
from stackpanel.core.discovery.python_env import PythonEnv, _python_env_cached, module_importable, python_env


def clear_cache() -> None:
    """Forget everything discovered (the next call probes the machine again)."""
    for fn in (detect_platform, find_nginx, find_apache, find_php_fpm, _python_env_cached):
        fn.cache_clear()


__all__ = [
    "ALL_KINDS",
    "APACHE_BASE_MODULES",
    "APACHE_PROXY_MODULES",
    "COMPONENT_ORDER",
    "EXTRA_BIN_DIRS",
    "PIP_REQUIREMENTS",
    "PYTHON_DISTRIBUTIONS",
    "PYTHON_KINDS",
    "STACKPANEL_APACHE_MODULES",
    "ApacheInfo",
    "ApacheModuleError",
    "Component",
    "ComponentStatus",
    "DiscoveryError",
    "DoctorReport",
    "Kind",
    "NginxInfo",
    "PhpFpmInfo",
    "Platform",
    "PlatformFamily",
    "PythonEnv",
    "clear_cache",
    "detect_platform",
    "find_apache",
    "find_executable",
    "find_nginx",
    "find_php_fpm",
    "format_report",
    "install_hint",
    "module_importable",
    "normalize_module_name",
    "parse_apache_compiled_in",
    "parse_apache_defines",
    "parse_nginx_version_output",
    "parse_php_fpm_version",
    "python_env",
    "run_doctor",
]
