"""``stackpanel doctor``: one :class:`DoctorReport` with an entry per component, and its text form."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stackpanel.core.discovery.apache import APACHE_OPTIONAL_MODULES, STACKPANEL_APACHE_MODULES, find_apache
from stackpanel.core.discovery.nginx import find_nginx
from stackpanel.core.discovery.php import find_php_fpm
from stackpanel.core.discovery.platform import (
    ALL_KINDS,
    PYTHON_KINDS,
    Component,
    Kind,
    Platform,
    detect_platform,
    install_hint,
)
from stackpanel.core.discovery.python_env import PythonEnv, python_env

log = logging.getLogger("stackpanel.discovery")


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
    optional = info.missing_modules(tuple(APACHE_OPTIONAL_MODULES))
    details.append(("optional modules", "all present" if not optional else "missing: " + ", ".join(
        f"{m} (for {APACHE_OPTIONAL_MODULES[m]})" for m in optional)))
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


def _php_status(needed: bool, platform: Platform, search_path: str | None) -> ComponentStatus:
    """php-fpm, which an apache node runs for its `php: true` routes."""
    info = find_php_fpm(search_path)
    if info is None:
        return ComponentStatus("php", found=False, needed=needed, install_hint=install_hint("php", platform))
    return ComponentStatus("php", found=True, needed=needed, path=str(info.path), version=info.version or None,
                           problem="" if info.version else "could not read the version (php-fpm -v)")


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
        _php_status("php" in wanted, platform, search_path),
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
