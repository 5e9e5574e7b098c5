"""The system's Apache httpd (``apache2`` on Debian, ``httpd`` elsewhere) and its modules.

Also the one home of the module list a rendered httpd.conf loads (the renderer and the doctor
both read it from here).

Quirks (Debian 12, Apache 2.4): ``apache2 -v`` and ``-l`` work without Debian's
``/etc/apache2/envvars``; ``apache2 -V`` parses the configuration, so without the envvars it warns
about ``${APACHE_RUN_DIR}`` and exits 1, though it still prints the compile settings. We run it
as ``-V -f /dev/null`` (exit 1, "No MPM loaded", output intact) and ignore the exit status.
"""
from __future__ import annotations

import difflib
import functools
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from stackpanel.core.discovery.errors import ApacheModuleError
from stackpanel.core.discovery.executables import _run, _search_dirs, find_executable
from stackpanel.core.discovery.platform import Platform, detect_platform

log = logging.getLogger("stackpanel.discovery")

#: Apache modules every rendered httpd.conf loads (compiled-in ones are skipped by ApacheInfo).
APACHE_BASE_MODULES: tuple[str, ...] = (
    "mpm_event", "authz_core", "unixd", "log_config", "mime", "dir", "alias", "setenvif", "reqtimeout", "headers",
)
#: ... and those it loads when a route proxies to another node.
APACHE_PROXY_MODULES: tuple[str, ...] = ("proxy", "proxy_http", "unique_id")
#: ... when a route balances over several backends (plus the lbmethod_* module of its method).
APACHE_BALANCER_MODULES: tuple[str, ...] = ("slotmem_shm", "proxy_balancer")
#: ... when a route runs PHP (php-fpm on a Unix socket, through FastCGI) ...
APACHE_PHP_MODULES: tuple[str, ...] = ("proxy", "proxy_fcgi")
#: ... when a route compresses (limits.gzip) ...
APACHE_GZIP_MODULES: tuple[str, ...] = ("filter", "deflate")
#: ... and when the node listens with TLS (http2 only with tls.http2).
APACHE_TLS_MODULES: tuple[str, ...] = ("ssl", "socache_shmcb")
APACHE_HTTP2_MODULES: tuple[str, ...] = ("http2",)
#: Every module a rendered httpd.conf loads for any profile: what the doctor requires.
STACKPANEL_APACHE_MODULES: tuple[str, ...] = APACHE_BASE_MODULES + APACHE_PROXY_MODULES + ("proxy_fcgi",)
#: The modules only some profiles need, with the profile key that needs them: the doctor names the
#: missing ones without calling Apache unusable (RHEL's httpd ships mod_ssl and mod_http2 apart).
APACHE_OPTIONAL_MODULES: dict[str, str] = {
    **{m: "balanced routes (to: [a, b])" for m in APACHE_BALANCER_MODULES},
    "lbmethod_byrequests": "balance: round_robin or sticky", "lbmethod_bybusyness": "balance: least_conn",
    **{m: "limits.gzip" for m in APACHE_GZIP_MODULES},
    **{m: "tls" for m in APACHE_TLS_MODULES}, **{m: "tls.http2" for m in APACHE_HTTP2_MODULES},
    "mpm_worker": "mpm: worker",
}

APACHE_NAMES: tuple[str, ...] = ("apache2", "httpd")
APACHE_MODULE_DIRS: tuple[str, ...] = (
    "/usr/lib/apache2/modules", "/usr/lib64/httpd/modules", "/usr/lib/httpd/modules",
    "/usr/lib64/apache2/modules", "/usr/libexec/apache2",
)
MIME_TYPES_FILES: tuple[str, ...] = (
    "/etc/mime.types", "/etc/httpd/conf/mime.types", "/etc/apache2/mime.types",
    "/opt/homebrew/etc/httpd/mime.types", "/usr/local/etc/httpd/mime.types",
)

#: Modules RHEL/Fedora ship outside the ``httpd`` package (``dnf install mod_<name>``).
_RHEL_SEPARATE_MODULES = frozenset({"ssl", "proxy_html", "xml2enc", "http2", "proxy_http2", "md", "session",
                                    "session_cookie", "session_crypto", "auth_form", "request", "ldap",
                                    "authnz_ldap", "security2", "wsgi", "fcgid"})


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
