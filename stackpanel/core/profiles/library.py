"""Where profiles live: the built-in ones shipped in the package, and the user's own."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import platformdirs

from stackpanel.core.errors import ProfileError, ProfileProblem

DEFAULT_PROFILE = "nginx-uvicorn"


def builtin_dir() -> Path:
    return Path(__file__).resolve().parent.parent.parent / "profiles"


def user_dir() -> Path:
    """The platform's config dir (e.g. ~/.config/stackpanel/profiles on Linux)."""
    return Path(platformdirs.user_config_dir("stackpanel")) / "profiles"


@dataclass(frozen=True)
class ProfileEntry:
    name: str  # file stem, used on the command line
    path: Path
    builtin: bool


def list_profiles() -> list[ProfileEntry]:
    entries = [ProfileEntry(p.stem, p, True) for p in sorted(builtin_dir().glob("*.yaml"))]
    udir = user_dir()
    if udir.is_dir():
        entries += [ProfileEntry(p.stem, p, False) for p in sorted(udir.glob("*.yaml"))]
    return entries


def profile_label(name_or_path: str) -> str:
    """The short name a profile goes by on the command line: its file stem, or the name as given.
    With :func:`resolve_profile`, the one place a profile name is read (CLI, bench and panel)."""
    path = Path(name_or_path)
    return path.stem if path.suffix in (".yaml", ".yml") else path.name


def resolve_profile(name_or_path: str) -> Path:
    """A path to an existing file, or the name of a user or built-in profile (user ones win)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    stem = profile_label(str(path))
    for directory in (user_dir(), builtin_dir()):
        candidate = directory / f"{stem}.yaml"
        if candidate.is_file():
            return candidate
    names = ", ".join(e.name for e in list_profiles())
    raise ProfileError([ProfileProblem(path, 0, 0, "no such profile file or profile name",
                                       f"give a path to a .yaml file or one of: {names}")])
