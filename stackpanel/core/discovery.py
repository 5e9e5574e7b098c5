"""Find the servers stackpanel drives on this machine, and say how to install what is missing.

This is the core of ``stackpanel doctor`` and the source of machine facts for the renderers:

- :func:`find_nginx` / :func:`find_apache`: the system's nginx and apache2/httpd binaries, their
  versions, and for Apache the modules directory, the compiled-in and shared modules and a
  ``mime.types`` file (:meth:`ApacheInfo.load_module_lines` writes the ``LoadModule`` lines).
- :func:`python_env`: gunicorn / uvicorn / uvicorn-worker versions for *an* interpreter (the app
  may run under another venv than stackpanel itself); :func:`module_importable` checks that an
  app module can be found there without importing it.
- :func:`detect_platform` / :func:`install_hint`: the exact command that installs a missing piece.
- :func:`run_doctor` / :func:`format_report`: one :class:`DoctorReport` with an entry per component.

Discovery spawns processes (``nginx -V``, ``apache2 -v/-l/-V``, ``python -c ...``), so results are
cached for the life of the process; :func:`clear_cache` forgets them (tests, "re-check" buttons).
Nothing here raises for a missing component: absence is a value (``None`` or ``found=False``).

Quirks worth knowing (Debian 12, Apache 2.4):

- ``apache2 -v`` and ``apache2 -l`` work without Debian's ``/etc/apache2/envvars``;
  ``apache2 -V`` parses the configuration, so without the envvars it warns about
  ``${APACHE_RUN_DIR}`` and exits 1, though it still prints the compile settings. We run it as
  ``-V -f /dev/null`` (exit 1, "No MPM loaded", output intact) and ignore the exit status.
- ``nginx -v``/``-V`` write to stderr, not stdout.
"""
from __future__ import annotations

import difflib
import functools
import importlib.machinery
import importlib.metadata
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from stackpanel.core.errors import RenderError, StackpanelError

log = logging.getLogger("stackpanel.discovery")

#: What a profile can need; ``run_doctor(needs=...)`` takes a set of these.
Kind = Literal["nginx", "apache", "gunicorn", "uvicorn", "uvicorn_worker"]
#: Components in a report: the kinds plus the Python interpreter the app servers run under.
Component = Literal["nginx", "apache", "python", "gunicorn", "uvicorn", "uvicorn_worker"]
ALL_KINDS: frozenset[Kind] = frozenset({"nginx", "apache", "gunicorn", "uvicorn", "uvicorn_worker"})
PYTHON_KINDS: frozenset[Kind] = frozenset({"gunicorn", "uvicorn", "uvicorn_worker"})
COMPONENT_ORDER: tuple[Component, ...] = ("nginx", "apache", "python", "gunicorn", "uvicorn", "uvicorn_worker")

PlatformFamily = Literal["debian", "rhel", "suse", "arch", "alpine", "macos", "other"]

#: Python distribution name per kind (what ``pip install`` and importlib.metadata call it).
PYTHON_DISTRIBUTIONS: Mapping[str, str] = {
    "gunicorn": "gunicorn",
    "uvicorn": "uvicorn",
    "uvicorn_worker": "uvicorn-worker",
}
#: What to ``pip install`` per kind (uvicorn with its fast loop/parser extras).
PIP_REQUIREMENTS: Mapping[str, str] = {
    "gunicorn": "gunicorn",
    "uvicorn": "uvicorn[standard]",
    "uvicorn_worker": "uvicorn-worker",
}

#: The Apache modules stackpanel's rendered httpd.conf uses (the doctor checks them).
STACKPANEL_APACHE_MODULES: tuple[str, ...] = (
    "mpm_event", "unixd", "authz_core", "log_config", "mime", "dir", "alias",
    "env", "setenvif", "headers", "unique_id", "proxy", "proxy_http", "reqtimeout",
)

#: Directories searched after $PATH (servers live in sbin, which a normal user's PATH may lack).
EXTRA_BIN_DIRS: tuple[str, ...] = (
    "/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin", "/usr/local/bin",
    "/opt/homebrew/bin", "/opt/homebrew/sbin", "/opt/local/sbin", "/opt/local/bin",
)
NGINX_NAMES: tuple[str, ...] = ("nginx",)
APACHE_NAMES: tuple[str, ...] = ("apache2", "httpd")
APACHE_MODULE_DIRS: tuple[str, ...] = (
    "/usr/lib/apache2/modules", "/usr/lib64/httpd/modules", "/usr/lib/httpd/modules",
    "/usr/lib64/apache2/modules", "/usr/libexec/apache2",
)
MIME_TYPES_FILES: tuple[str, ...] = (
    "/etc/mime.types", "/etc/httpd/conf/mime.types", "/etc/apache2/mime.types",
    "/opt/homebrew/etc/httpd/mime.types", "/usr/local/etc/httpd/mime.types",
)
DEFAULT_OS_RELEASE = Path("/etc/os-release")
FALLBACK_OS_RELEASE = Path("/usr/lib/os-release")

#: How long one probe process may take before we give up on it.
PROBE_TIMEOUT_S = 10.0

#: Modules RHEL/Fedora ship outside the ``httpd`` package (``dnf install mod_<name>``).
_RHEL_SEPARATE_MODULES = frozenset({"ssl", "proxy_html", "xml2enc", "http2", "proxy_http2", "md", "session",
                                    "session_cookie", "session_crypto", "auth_form", "request", "ldap",
                                    "authnz_ldap", "security2", "wsgi", "fcgid"})


class DiscoveryError(StackpanelError):
    """Something about this machine stops stackpanel (a server or a module is not installed)."""


class ApacheModuleError(DiscoveryError, RenderError):
    """Apache modules a configuration needs are neither compiled in nor installed."""

    def __init__(self, missing: tuple[str, ...], message: str):
        self.missing = missing
        super().__init__(message)


# --------------------------------------------------------------------------- platform & hints


@dataclass(frozen=True)
class Platform:
    """The operating system as far as install commands are concerned."""

    family: PlatformFamily
    os_id: str  # os-release ID ("debian", "fedora", ...) or "macos"/sys.platform
    name: str  # for people: os-release PRETTY_NAME, or "macOS"
    is_root: bool

    def system_package_command(self, package: str) -> str:
        """The command that installs a system package here (no ``sudo`` when already root)."""
        sudo = "" if self.is_root else "sudo "
        if self.family == "debian":
            return f"{sudo}apt-get install -y {package}"
        if self.family == "rhel":
            return f"{sudo}dnf install -y {package}"
        if self.family == "suse":
            return f"{sudo}zypper install -y {package}"
        if self.family == "arch":
            return f"{sudo}pacman -S --noconfirm {package}"
        if self.family == "alpine":
            return f"{sudo}apk add {package}"
        if self.family == "macos":
            return f"brew install {package}"
        return f"install the '{package}' package with your system's package manager"

    def package_name(self, kind: Literal["nginx", "apache"]) -> str:
        """The distribution's package name for a server."""
        if kind == "nginx":
            return "nginx"
        return {"debian": "apache2", "suse": "apache2", "alpine": "apache2",
                "arch": "apache"}.get(self.family, "httpd")


def _parse_os_release(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            parts = shlex.split(raw)
        except ValueError:
            parts = [raw.strip("\"'")]
        values[key.strip()] = parts[0] if parts else ""
    return values


def _family_from_ids(ids: Iterable[str]) -> PlatformFamily:
    for os_id in ids:
        if os_id in ("debian", "ubuntu", "linuxmint", "raspbian", "pop"):
            return "debian"
        if os_id in ("rhel", "fedora", "centos", "rocky", "almalinux", "ol", "amzn"):
            return "rhel"
        if os_id in ("suse", "opensuse", "sles", "opensuse-leap", "opensuse-tumbleweed"):
            return "suse"
        if os_id in ("arch", "manjaro", "endeavouros"):
            return "arch"
        if os_id == "alpine":
            return "alpine"
    return "other"


@functools.cache
def detect_platform(
    os_release: Path | str | None = None,
    sys_platform: str | None = None,
    is_root: bool | None = None,
) -> Platform:
    """Detect the platform from ``sys.platform`` and os-release (``ID`` first, then ``ID_LIKE``).

    ``os_release`` defaults to /etc/os-release (then /usr/lib/os-release); tests pass their own
    file, ``sys_platform`` and ``is_root`` to describe another machine.
    """
    plat = sys.platform if sys_platform is None else sys_platform
    root = (hasattr(os, "geteuid") and os.geteuid() == 0) if is_root is None else is_root
    if plat == "darwin":
        return Platform(family="macos", os_id="macos", name="macOS", is_root=root)
    if os_release is None:
        candidates = [DEFAULT_OS_RELEASE, FALLBACK_OS_RELEASE]
    else:
        candidates = [Path(os_release)]
    values: dict[str, str] = {}
    for candidate in candidates:
        try:
            values = _parse_os_release(candidate.read_text(encoding="utf-8", errors="replace"))
            break
        except OSError:
            continue
    os_id = values.get("ID", "").lower() or plat
    like = values.get("ID_LIKE", "").lower().split()
    family = _family_from_ids([os_id, *like])
    name = values.get("PRETTY_NAME") or values.get("NAME") or plat
    log.debug("platform: id=%s like=%s family=%s root=%s", os_id, like, family, root)
    return Platform(family=family, os_id=os_id, name=name, is_root=root)


def install_hint(kind: Kind, platform: Platform | None = None, python: str | os.PathLike[str] | None = None) -> str:
    """The exact command that installs ``kind``: a system package for servers, pip for Python ones."""
    if kind in PYTHON_KINDS:
        interpreter = shlex.quote(os.fspath(python) if python is not None else sys.executable)
        return f"{interpreter} -m pip install {shlex.quote(PIP_REQUIREMENTS[kind])}"
    plat = platform or detect_platform()
    if kind == "nginx" or kind == "apache":
        return plat.system_package_command(plat.package_name(kind))
    raise ValueError(f"unknown component kind {kind!r}; expected one of {sorted(ALL_KINDS)}")


# --------------------------------------------------------------------------- processes & paths


def _run(argv: list[str], env: Mapping[str, str] | None = None, cwd: str | None = None) -> tuple[int, str, str]:
    """Run a probe; (returncode, stdout, stderr), or (-1, "", reason) when it could not run."""
    try:
        proc = subprocess.run(
            argv, check=False, capture_output=True, text=True, errors="replace", timeout=PROBE_TIMEOUT_S,
            env=dict(env) if env is not None else None, cwd=cwd, stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not run %s: %s", _describe(argv), exc)
        return -1, "", str(exc)
    log.debug("%s -> %d", _describe(argv), proc.returncode)
    return proc.returncode, proc.stdout, proc.stderr


def _describe(argv: list[str]) -> str:
    """The command line for a log message, with inline scripts elided."""
    return shlex.join(a if "\n" not in a else "<script>" for a in argv)


def _search_dirs(search_path: str | None) -> list[str]:
    if search_path is not None:
        dirs = search_path.split(os.pathsep)
    else:
        dirs = os.environ.get("PATH", os.defpath).split(os.pathsep) + list(EXTRA_BIN_DIRS)
    unique: list[str] = []
    for d in dirs:
        if d and d not in unique:
            unique.append(d)
    return unique


def find_executable(names: Iterable[str], search_path: str | None = None) -> Path | None:
    """First executable called one of ``names``, directory by directory.

    ``search_path`` (``os.pathsep``-joined) replaces the default search: ``$PATH`` followed by
    :data:`EXTRA_BIN_DIRS` (sbin and Homebrew directories).
    """
    wanted = tuple(names)
    for directory in _search_dirs(search_path):
        for name in wanted:
            found = shutil.which(name, path=directory)
            if found:
                return Path(found)
    return None


# --------------------------------------------------------------------------- nginx


@dataclass(frozen=True)
class NginxInfo:
    """An nginx binary and what ``nginx -V`` says about it."""

    path: Path
    version: str  # "1.22.1" ("" when it could not be read)
    conf_path: Path | None  # compiled-in --conf-path
    mime_types: Path | None  # the mime.types next to it, for an absolute ``include``
    modules_path: Path | None  # compiled-in --modules-path (dynamic modules)
    configure_args: tuple[str, ...] = ()

    def has_configure_flag(self, flag: str) -> bool:
        """e.g. ``has_configure_flag("--with-http_stub_status_module")``."""
        return any(arg == flag or arg.startswith(flag + "=") for arg in self.configure_args)


_NGINX_VERSION_RE = re.compile(r"version:\s*\S+?/(\S+)")


def parse_nginx_version_output(path: Path, text: str) -> NginxInfo:
    """Build an :class:`NginxInfo` from ``nginx -V`` output (stderr)."""
    match = _NGINX_VERSION_RE.search(text)
    version = match.group(1) if match else ""
    args: tuple[str, ...] = ()
    for line in text.splitlines():
        if line.startswith("configure arguments:"):
            raw = line.partition(":")[2]
            try:
                args = tuple(shlex.split(raw))
            except ValueError:
                args = tuple(raw.split())
    options = dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)
    prefix = Path(options.get("--prefix", "/usr/local/nginx"))

    def resolve(value: str | None) -> Path | None:
        if not value:
            return None
        p = Path(value)
        return p if p.is_absolute() else prefix / p

    conf_path = resolve(options.get("--conf-path")) or prefix / "conf" / "nginx.conf"
    mime = conf_path.parent / "mime.types"
    return NginxInfo(
        path=path, version=version, conf_path=conf_path,
        mime_types=mime if mime.is_file() else None,
        modules_path=resolve(options.get("--modules-path")), configure_args=args,
    )


@functools.cache
def find_nginx(search_path: str | None = None) -> NginxInfo | None:
    """The nginx binary on this machine and its version, or None when there is none."""
    path = find_executable(NGINX_NAMES, search_path)
    if path is None:
        log.info("nginx not found")
        return None
    rc, out, err = _run([str(path), "-V"])
    info = parse_nginx_version_output(path, err + out)
    if not info.version:
        log.warning("could not read the nginx version from %s -V (exit %d): %s", path, rc, err.strip())
    return info


# --------------------------------------------------------------------------- apache


def normalize_module_name(name: str) -> str:
    """``mod_proxy_http.so`` / ``mod_proxy_http.c`` / ``proxy_http_module`` → ``proxy_http``."""
    n = name.strip()
    for suffix in (".so", ".c"):
        n = n.removesuffix(suffix)
    n = n.removeprefix("mod_")
    return n.removesuffix("_module")


@dataclass(frozen=True)
class ApacheInfo:
    """An Apache httpd binary (``apache2`` on Debian, ``httpd`` elsewhere) and its modules."""

    path: Path
    version: str  # "2.4.57" ("" when it could not be read)
    server_root: Path | None  # compiled-in HTTPD_ROOT
    modules_dir: Path | None
    compiled_in: tuple[str, ...]  # in ``-l`` order: ("core", "so", ..., "log_config", ...)
    available: frozenset[str]  # shared modules in modules_dir: {"proxy", "proxy_http", ...}
    mime_types: Path | None
    apxs: Path | None = None
    platform: Platform | None = field(default=None, compare=False)

    def has_module(self, name: str) -> bool:
        """Compiled in, or a shared object in :attr:`modules_dir`."""
        n = normalize_module_name(name)
        return n in self.compiled_in or n in self.available

    def module_path(self, name: str) -> Path | None:
        """Path of the shared module (``None`` when compiled in or missing)."""
        n = normalize_module_name(name)
        if self.modules_dir is None or n not in self.available:
            return None
        return self.modules_dir / f"mod_{n}.so"

    def missing_modules(self, wanted: Iterable[str]) -> tuple[str, ...]:
        """The wanted modules that are neither compiled in nor installed."""
        return tuple(n for n in _unique(normalize_module_name(w) for w in wanted) if not self.has_module(n))

    def load_module_lines(self, wanted: Iterable[str]) -> list[str]:
        """``LoadModule <name>_module <dir>/mod_<name>.so`` per wanted module, in the given order.

        Compiled-in modules are skipped (loading them again is an error). Raises
        :class:`ApacheModuleError` naming every missing module and how to get it.
        """
        names = _unique(normalize_module_name(w) for w in wanted)
        missing = self.missing_modules(names)
        if missing:
            raise ApacheModuleError(missing, self._missing_message(missing))
        lines: list[str] = []
        for n in names:
            if n in self.compiled_in:
                continue
            so = self.module_path(n)
            assert so is not None  # has_module() and not compiled in
            target = f'"{so}"' if any(c.isspace() for c in str(so)) else str(so)
            lines.append(f"LoadModule {n}_module {target}")
        return lines

    def _missing_message(self, missing: tuple[str, ...]) -> str:
        plat = self.platform or detect_platform()
        where = f"in {self.modules_dir}" if self.modules_dir else "(no modules directory found)"
        lines = [f"Apache ({self.path}) lacks module(s) {', '.join(missing)}: "
                 + f"not compiled in and no mod_<name>.so {where}."]
        known = sorted(self.available | set(self.compiled_in))
        for n in missing:
            close = difflib.get_close_matches(n, known, n=3)
            if close:
                lines.append(f"  {n}: did you mean {', '.join(close)}?")
        if plat.family == "rhel":
            separate = [n for n in missing if n in _RHEL_SEPARATE_MODULES]
            if separate:
                lines.append("  install: " + plat.system_package_command(" ".join(f"mod_{n}" for n in separate)))
            if len(separate) < len(missing):
                lines.append("  the others ship with httpd: " + plat.system_package_command("httpd"))
        elif plat.family == "debian":
            lines.append("  standard modules ship with apache2; reinstall it: "
                         + plat.system_package_command("--reinstall apache2"))
            lines.append("  third-party modules come as libapache2-mod-<name> (apt-cache search libapache2-mod)")
        else:
            lines.append("  install or rebuild Apache with these modules: "
                         + plat.system_package_command(plat.package_name("apache")))
        return "\n".join(lines)


def _unique(items: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for item in items:
        if item and item not in seen:
            seen.append(item)
    return seen


_APACHE_VERSION_RE = re.compile(r"Apache/(\S+)")
_APACHE_DEFINE_RE = re.compile(r'-D\s+(\w+)(?:="([^"]*)")?')


def parse_apache_compiled_in(text: str) -> tuple[str, ...]:
    """``apache2 -l`` output → module names (``mod_log_config.c`` → ``log_config``)."""
    return tuple(normalize_module_name(line) for line in text.splitlines()
                 if line.strip().endswith(".c"))


def parse_apache_defines(text: str) -> dict[str, str]:
    """``apache2 -V`` output → its ``-D NAME="value"`` compile settings."""
    return {m.group(1): m.group(2) or "" for m in _APACHE_DEFINE_RE.finditer(text)}


def _shared_modules(directory: Path) -> frozenset[str]:
    try:
        return frozenset(normalize_module_name(p.name) for p in directory.iterdir()
                         if p.name.startswith("mod_") and p.name.endswith(".so"))
    except OSError:
        return frozenset()


def _apache_module_dir_candidates(binary: Path, apxs: Path | None, server_root: Path | None) -> list[Path]:
    candidates: list[Path] = []
    if apxs is not None:
        rc, out, _ = _run([str(apxs), "-q", "LIBEXECDIR"])
        if rc == 0 and out.strip():
            candidates.append(Path(out.strip()))
    if server_root is not None:
        candidates += [server_root / "modules", server_root / "lib" / "httpd" / "modules",
                       server_root / "libexec"]
    prefix = binary.resolve().parent.parent  # Homebrew: <prefix>/bin/httpd → <prefix>/lib/httpd/modules
    candidates += [prefix / "lib" / "httpd" / "modules", prefix / "lib" / "apache2" / "modules"]
    candidates += [Path(d) for d in APACHE_MODULE_DIRS]
    return candidates


@functools.cache
def find_apache(search_path: str | None = None) -> ApacheInfo | None:
    """Apache httpd on this machine (``apache2``, then ``httpd``) with its modules, or None."""
    path = find_executable(APACHE_NAMES, search_path)
    if path is None:
        log.info("apache not found")
        return None
    _, out, err = _run([str(path), "-v"])
    match = _APACHE_VERSION_RE.search(out + err)
    version = match.group(1) if match else ""
    if not version:
        log.warning("could not read the Apache version from %s -v: %s", path, err.strip())
    _, out_l, _ = _run([str(path), "-l"])
    compiled_in = parse_apache_compiled_in(out_l)
    # -V parses a configuration; /dev/null keeps Debian's envvars-dependent apache2.conf out of it.
    _, out_v, _ = _run([str(path), "-V", "-f", os.devnull])
    defines = parse_apache_defines(out_v)
    server_root = Path(defines["HTTPD_ROOT"]) if defines.get("HTTPD_ROOT") else None
    apxs = find_executable(("apxs", "apxs2"), os.pathsep.join([str(path.parent), *_search_dirs(search_path)]))

    modules_dir: Path | None = None
    available: frozenset[str] = frozenset()
    for candidate in _apache_module_dir_candidates(path, apxs, server_root):
        mods = _shared_modules(candidate)
        if mods:
            modules_dir, available = candidate, mods
            break

    mime_candidates: list[Path] = []
    types_config = defines.get("AP_TYPES_CONFIG_FILE")
    if types_config:
        p = Path(types_config)
        mime_candidates.append(p if p.is_absolute() or server_root is None else server_root / p)
    prefix = path.resolve().parent.parent
    mime_candidates += [prefix / "etc" / "httpd" / "mime.types", *(Path(m) for m in MIME_TYPES_FILES)]
    mime_types = next((m for m in mime_candidates if m.is_file()), None)

    return ApacheInfo(
        path=path, version=version, server_root=server_root, modules_dir=modules_dir,
        compiled_in=compiled_in, available=available, mime_types=mime_types, apxs=apxs,
        platform=detect_platform(),
    )


# --------------------------------------------------------------------------- python app servers


@dataclass(frozen=True)
class PythonEnv:
    """A Python interpreter and the app-server packages installed for it."""

    python: str  # as given (not symlink-resolved: a venv's python is a symlink)
    found: bool
    version: str  # "3.11.7" ("" when not runnable)
    executable: str  # the interpreter's own sys.executable
    packages: tuple[tuple[str, str | None], ...]  # (kind, version or None), in PYTHON_DISTRIBUTIONS order
    error: str = ""  # why the interpreter could not be queried

    def package_version(self, kind: str) -> str | None:
        return dict(self.packages).get(kind)


_PY_INFO_SCRIPT = """\
import json, sys
from importlib import metadata
out = {"version": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable, "packages": {}}
for kind, dist in json.loads(sys.argv[1]).items():
    try:
        out["packages"][kind] = metadata.version(dist)
    except metadata.PackageNotFoundError:
        out["packages"][kind] = None
print(json.dumps(out))
"""


def _version_string() -> str:
    return ".".join(str(part) for part in sys.version_info[:3])


def _is_current_python(python: str) -> bool:
    return os.path.abspath(python) == os.path.abspath(sys.executable)


def _resolve_python(python: str | os.PathLike[str] | None) -> str:
    if python is None:
        return sys.executable
    text = os.fspath(python)
    if os.sep not in text and not os.path.exists(text):
        found = shutil.which(text)  # "python3" → /usr/bin/python3
        if found:
            return found
    # Absolute (probes may run in another cwd) but not symlink-resolved: that would leave the venv.
    return os.path.abspath(text)


@functools.cache
def _python_env_cached(python: str) -> PythonEnv:
    if _is_current_python(python):
        packages: list[tuple[str, str | None]] = []
        for kind, dist in PYTHON_DISTRIBUTIONS.items():
            try:
                packages.append((kind, importlib.metadata.version(dist)))
            except importlib.metadata.PackageNotFoundError:
                packages.append((kind, None))
        return PythonEnv(python=python, found=True, version=_version_string(),
                         executable=sys.executable, packages=tuple(packages))
    missing = tuple((kind, None) for kind in PYTHON_DISTRIBUTIONS)
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        return PythonEnv(python=python, found=False, version="", executable="", packages=missing,
                         error=f"no executable Python interpreter at {python}")
    rc, out, err = _run([python, "-c", _PY_INFO_SCRIPT, json.dumps(dict(PYTHON_DISTRIBUTIONS))])
    try:
        data = json.loads(out.strip().splitlines()[-1]) if rc == 0 else None
    except (ValueError, IndexError):
        data = None
    if not isinstance(data, dict):
        reason = (err.strip().splitlines() or [f"exit status {rc}"])[-1]
        return PythonEnv(python=python, found=False, version="", executable="", packages=missing,
                         error=f"{python} did not answer the package query: {reason}")
    pkgs = data.get("packages", {})
    return PythonEnv(
        python=python, found=True, version=str(data.get("version", "")),
        executable=str(data.get("executable", "")),
        packages=tuple((kind, pkgs.get(kind)) for kind in PYTHON_DISTRIBUTIONS),
    )


def python_env(python: str | os.PathLike[str] | None = None) -> PythonEnv:
    """gunicorn/uvicorn/uvicorn-worker versions for ``python`` (default: this interpreter).

    Another interpreter is asked in a subprocess (importlib.metadata), so a venv reports its own
    packages; this one is answered in-process.
    """
    return _python_env_cached(_resolve_python(python))


def _spec_found(module: str, search_path: list[str]) -> bool:
    """Locate ``a.b.c`` with PathFinder without executing any package ``__init__``."""
    parts = module.split(".")
    locations: list[str] | None = search_path
    for i, part in enumerate(parts):
        if i == 0 and part in sys.builtin_module_names:
            return len(parts) == 1
        spec = importlib.machinery.PathFinder.find_spec(part, locations)
        if spec is None and i == 0:
            spec = _meta_path_spec(part)
        if spec is None:
            return False
        if i < len(parts) - 1:
            if not spec.submodule_search_locations:
                return False
            locations = list(spec.submodule_search_locations)
    return True


def _meta_path_spec(name: str) -> importlib.machinery.ModuleSpec | None:
    """A top-level package found by a meta-path finder other than PathFinder, e.g. the finder an
    editable install (``pip install -e``) registers; looking it up imports nothing."""
    for finder in sys.meta_path:
        if finder is importlib.machinery.PathFinder or not hasattr(finder, "find_spec"):
            continue
        try:
            spec = finder.find_spec(name, None)
        except Exception as exc:
            log.debug("meta-path finder %r failed on %s: %s", finder, name, exc)
            continue
        if spec is not None and spec.origin not in ("built-in", "frozen"):
            return spec
    return None


# Same walk as _spec_found (meta-path fallback included), for another interpreter
# (which must not import stackpanel).
_FIND_SPEC_SCRIPT = """\
import sys
from importlib.machinery import PathFinder
module, wd = sys.argv[1], sys.argv[2]
locations = [wd] + [p for p in sys.path if p]
parts = module.split(".")
for i, part in enumerate(parts):
    if i == 0 and part in sys.builtin_module_names:
        sys.exit(0 if len(parts) == 1 else 1)
    spec = PathFinder.find_spec(part, locations)
    if spec is None and i == 0:  # e.g. the finder of an editable install (pip install -e)
        for finder in sys.meta_path:
            if finder is PathFinder or not hasattr(finder, "find_spec"):
                continue
            try:
                spec = finder.find_spec(part, None)
            except Exception:
                spec = None
            if spec is not None and spec.origin not in ("built-in", "frozen"):
                break
            spec = None
    if spec is None:
        sys.exit(1)
    if i < len(parts) - 1:
        if not spec.submodule_search_locations:
            sys.exit(1)
        locations = list(spec.submodule_search_locations)
sys.exit(0)
"""


def module_importable(python: str | os.PathLike[str] | None, module: str,
                      working_dir: str | os.PathLike[str]) -> bool:
    """Whether ``python`` started in ``working_dir`` could import ``module``, without importing it.

    ``module`` is a dotted name; an ``app:attr`` suffix (uvicorn/gunicorn style) is ignored.
    ``working_dir`` comes first on the path, as it does for ``python -m uvicorn``/gunicorn.
    In-process for this interpreter, a subprocess for any other. Not cached: the app may change.
    """
    name = module.partition(":")[0].strip()
    if not name or any(not p.isidentifier() for p in name.split(".")):
        return False
    wd = os.path.abspath(os.fspath(working_dir))
    py = _resolve_python(python)
    if _is_current_python(py):
        here = os.getcwd()
        path = [wd] + [p for p in sys.path if p and os.path.abspath(p) != here]
        return _spec_found(name, path)
    if not os.path.isdir(wd):
        return False
    rc, _, err = _run([py, "-c", _FIND_SPEC_SCRIPT, name, wd], cwd=wd)
    if rc not in (0, 1):
        log.warning("module check for %s under %s failed (exit %d): %s", name, py, rc, err.strip())
    return rc == 0


# --------------------------------------------------------------------------- doctor


@dataclass(frozen=True)
class ComponentStatus:
    """One line of ``stackpanel doctor``."""

    component: Component
    found: bool
    needed: bool
    path: str | None = None
    version: str | None = None
    details: tuple[tuple[str, str], ...] = ()  # (label, text) pairs, in display order
    problem: str = ""  # found but unusable (e.g. Apache modules missing); "" when fine
    install_hint: str = ""  # the command that fixes a missing component or a problem

    @property
    def usable(self) -> bool:
        return self.found and not self.problem


@dataclass(frozen=True)
class DoctorReport:
    """Everything ``stackpanel doctor`` found, one :class:`ComponentStatus` per component."""

    components: tuple[ComponentStatus, ...]
    platform: Platform
    python: str

    @property
    def ok(self) -> bool:
        """False when a needed component is missing or unusable."""
        return all(c.usable for c in self.components if c.needed)

    @property
    def problems(self) -> tuple[ComponentStatus, ...]:
        """The needed components that are missing or unusable."""
        return tuple(c for c in self.components if c.needed and not c.usable)

    def get(self, component: Component) -> ComponentStatus:
        for c in self.components:
            if c.component == component:
                return c
        raise KeyError(component)


def _nginx_status(needed: bool, platform: Platform, search_path: str | None) -> ComponentStatus:
    info = find_nginx(search_path)
    if info is None:
        return ComponentStatus("nginx", found=False, needed=needed,
                               install_hint=install_hint("nginx", platform))
    details: list[tuple[str, str]] = []
    if info.mime_types:
        details.append(("mime.types", str(info.mime_types)))
    return ComponentStatus("nginx", found=True, needed=needed, path=str(info.path),
                           version=info.version or None, details=tuple(details),
                           problem="" if info.version else "could not read the version (nginx -V)")


def _apache_status(needed: bool, platform: Platform, search_path: str | None) -> ComponentStatus:
    info = find_apache(search_path)
    if info is None:
        return ComponentStatus("apache", found=False, needed=needed,
                               install_hint=install_hint("apache", platform))
    details = [
        ("modules dir", str(info.modules_dir) if info.modules_dir else "not found"),
        ("compiled in", ", ".join(info.compiled_in) or "-"),
        ("shared modules", str(len(info.available))),
        ("mime.types", str(info.mime_types) if info.mime_types else "not found"),
    ]
    problem, hint = "", ""
    missing = info.missing_modules(STACKPANEL_APACHE_MODULES)
    if missing:
        problem = f"missing module(s): {', '.join(missing)}"
        hint = info._missing_message(missing).split("\n", 1)[-1].strip()
    elif not info.version:
        problem = "could not read the version (-v)"
    elif info.mime_types is None:
        problem = "no mime.types file found"
        hint = platform.system_package_command("media-types" if platform.family == "debian" else "mailcap")
    return ComponentStatus("apache", found=True, needed=needed, path=str(info.path),
                           version=info.version or None, details=tuple(details),
                           problem=problem, install_hint=hint)


def _python_statuses(env: PythonEnv, needs: frozenset[Kind]) -> list[ComponentStatus]:
    py_needed = bool(needs & PYTHON_KINDS)
    statuses = [ComponentStatus(
        "python", found=env.found, needed=py_needed, path=env.python,
        version=env.version or None,
        details=(("executable", env.executable),) if env.executable and env.executable != env.python else (),
        problem="" if env.found else env.error,
        install_hint="" if env.found else "create a venv: python3 -m venv .venv && "
                                          ".venv/bin/pip install gunicorn uvicorn-worker 'uvicorn[standard]'",
    )]
    for kind in ("gunicorn", "uvicorn", "uvicorn_worker"):
        version = env.package_version(kind)
        statuses.append(ComponentStatus(
            kind, found=version is not None, needed=kind in needs, path=env.python if version else None,
            version=version, install_hint="" if version else install_hint(kind, python=env.python),
        ))
    return statuses


def run_doctor(
    needs: Iterable[Kind] | None = None,
    python: str | os.PathLike[str] | None = None,
    *,
    search_path: str | None = None,
    os_release: Path | str | None = None,
) -> DoctorReport:
    """Check every component; those in ``needs`` (default: all kinds) decide :attr:`DoctorReport.ok`.

    ``python`` is the interpreter the app servers run under (default: this one);
    ``search_path`` replaces the executable search path and ``os_release`` the os-release file
    (both for tests).
    """
    wanted: frozenset[Kind] = ALL_KINDS if needs is None else frozenset(needs)
    unknown = set(wanted) - set(ALL_KINDS)
    if unknown:
        raise ValueError(f"unknown component kind(s) {sorted(unknown)}; expected some of {sorted(ALL_KINDS)}")
    platform = detect_platform(os_release)
    env = python_env(python)
    components = [
        _nginx_status("nginx" in wanted, platform, search_path),
        _apache_status("apache" in wanted, platform, search_path),
        *_python_statuses(env, wanted),
    ]
    report = DoctorReport(components=tuple(components), platform=platform, python=env.python)
    log.info("doctor: ok=%s problems=%s", report.ok, [c.component for c in report.problems])
    return report


def _status_word(c: ComponentStatus) -> str:
    if c.usable:
        return "ok"
    if c.found:
        return "PROBLEM" if c.needed else "problem"
    return "MISSING" if c.needed else "missing (not needed)"


def format_report(report: DoctorReport) -> str:
    """The doctor report as an aligned text table; missing items show their install command."""
    who = "root" if report.platform.is_root else "a normal user"
    lines = [f"platform: {report.platform.name} ({report.platform.family}), running as {who}", ""]
    rows = [("component", "status", "version", "path")]
    for c in report.components:
        rows.append((c.component, _status_word(c), c.version or "-", c.path or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    extra: dict[int, list[str]] = {}
    for i, c in enumerate(report.components, start=1):
        notes = [f"{label}: {text}" for label, text in c.details]
        if c.problem:
            notes.append(f"problem: {c.problem}")
        if c.install_hint:
            notes.append(f"install: {c.install_hint}")
        extra[i] = notes
    for i, row in enumerate(rows):
        text = "  ".join(cell.ljust(widths[j]) for j, cell in enumerate(row[:3])) + "  " + row[3]
        lines.append(text.rstrip())
        for note in extra.get(i, []):
            lines.append("    " + note)
    lines.append("")
    if report.ok:
        lines.append("all needed components are ready")
    else:
        names = ", ".join(c.component for c in report.problems)
        lines.append(f"not ready: {names} (run the install commands above)")
    return "\n".join(lines)


def clear_cache() -> None:
    """Forget everything discovered (the next call probes the machine again)."""
    for fn in (detect_platform, find_nginx, find_apache, _python_env_cached):
        fn.cache_clear()


__all__ = [
    "ALL_KINDS",
    "STACKPANEL_APACHE_MODULES",
    "ApacheInfo",
    "ApacheModuleError",
    "Component",
    "ComponentStatus",
    "DiscoveryError",
    "DoctorReport",
    "Kind",
    "NginxInfo",
    "Platform",
    "PythonEnv",
    "clear_cache",
    "detect_platform",
    "find_apache",
    "find_executable",
    "find_nginx",
    "format_report",
    "install_hint",
    "module_importable",
    "normalize_module_name",
    "python_env",
    "run_doctor",
]
