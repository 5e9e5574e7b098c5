"""The system's nginx: where it is and what ``nginx -V`` says (it writes to stderr, not stdout)."""
from __future__ import annotations

import functools
import logging
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from stackpanel.core.discovery.executables import _run, find_executable

log = logging.getLogger("stackpanel.discovery")

NGINX_NAMES: tuple[str, ...] = ("nginx",)


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
