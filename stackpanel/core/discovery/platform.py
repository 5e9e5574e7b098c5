"""The operating system and the exact command that installs a missing piece (``install_hint``)."""
from __future__ import annotations

import functools
import logging
import os
import shlex
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger("stackpanel.discovery")

#: What a profile can need; ``run_doctor(needs=...)`` takes a set of these.
Kind = Literal["nginx", "apache", "php", "gunicorn", "uvicorn", "uvicorn_worker"]
#: Components in a report: the kinds plus the Python interpreter the app servers run under.
Component = Literal["nginx", "apache", "php", "python", "gunicorn", "uvicorn", "uvicorn_worker"]
ALL_KINDS: frozenset[Kind] = frozenset({"nginx", "apache", "php", "gunicorn", "uvicorn", "uvicorn_worker"})
PYTHON_KINDS: frozenset[Kind] = frozenset({"gunicorn", "uvicorn", "uvicorn_worker"})
COMPONENT_ORDER: tuple[Component, ...] = ("nginx", "apache", "php", "python", "gunicorn", "uvicorn", "uvicorn_worker")

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

DEFAULT_OS_RELEASE = Path("/etc/os-release")
FALLBACK_OS_RELEASE = Path("/usr/lib/os-release")


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

    def package_name(self, kind: Literal["nginx", "apache", "php"]) -> str:
        """The distribution's package name for a server (php: its FastCGI process manager)."""
        if kind == "nginx":
            return "nginx"
        if kind == "php":
            return {"macos": "php", "alpine": "php82-fpm"}.get(self.family, "php-fpm")
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
    if kind == "nginx" or kind == "apache" or kind == "php":
        return plat.system_package_command(plat.package_name(kind))
    raise ValueError(f"unknown component kind {kind!r}; expected one of {sorted(ALL_KINDS)}")
