"""Where profiles live: the built-in ones shipped in the package, a workshop's baked into it, and the user's own."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import platformdirs

from stackpanel.core.errors import ProfileError, ProfileProblem
from stackpanel.core.fsutil import is_file

DEFAULT_PROFILE = "nginx-uvicorn"


def builtin_dir() -> Path:
    return Path(__file__).resolve().parent.parent.parent / "profiles"


def workshop_dir() -> Path:
    """Profiles an instructor baked into the package (`packaging/build-deb --workshop DIR`): the
    environment's share/stackpanel/workshop (in the .deb: /opt/stackpanel/venv/share/...), or
    $STACKPANEL_WORKSHOP_DIR when set."""
    override = os.environ.get("STACKPANEL_WORKSHOP_DIR")
    return Path(override) if override else Path(sys.prefix) / "share" / "stackpanel" / "workshop"


def user_dir() -> Path:
    """The platform's config dir (e.g. ~/.config/stackpanel/profiles on Linux)."""
    return Path(platformdirs.user_config_dir("stackpanel")) / "profiles"


ProfileGroup = Literal["built-in", "workshop", "user"]


@dataclass(frozen=True)
class ProfileEntry:
    name: str  # file stem, used on the command line
    path: Path
    builtin: bool  # shipped read-only (built-in or workshop), not the user's own
    group: ProfileGroup = "built-in"


#: A profile file ends in one of these (`.yaml` wins when both exist).
PROFILE_SUFFIXES = (".yaml", ".yml")


def _profile_files(directory: Path) -> list[Path]:
    files = {p.stem: p for p in sorted(directory.glob("*.yml"))}
    files.update({p.stem: p for p in sorted(directory.glob("*.yaml"))})
    return [files[stem] for stem in sorted(files)]


def list_profiles() -> list[ProfileEntry]:
    """Built-in, then workshop, then the user's own profiles, each group sorted by name."""
    entries = [ProfileEntry(p.stem, p, True, "built-in") for p in sorted(builtin_dir().glob("*.yaml"))]
    wdir = workshop_dir()
    if wdir.is_dir():
        entries += [ProfileEntry(p.stem, p, True, "workshop") for p in _profile_files(wdir)]
    udir = user_dir()
    if udir.is_dir():
        entries += [ProfileEntry(p.stem, p, False, "user") for p in _profile_files(udir)]
    return entries


def profile_label(name_or_path: str) -> str:
    """The short name a profile goes by on the command line: its file stem, or the name as given.
    With :func:`resolve_profile`, the one place a profile name is read (CLI, bench and panel)."""
    path = Path(name_or_path)
    return path.stem if path.suffix in (".yaml", ".yml") else path.name


def resolve_profile(name_or_path: str) -> Path:
    """A path to an existing file, or the name of a user, workshop or built-in profile (in that order)."""
    path = Path(name_or_path).expanduser()
    if is_file(path):
        return path
    stem = profile_label(str(path))
    for directory in (user_dir(), workshop_dir(), builtin_dir()):
        for suffix in PROFILE_SUFFIXES:
            candidate = directory / f"{stem}{suffix}"
            if is_file(candidate):
                return candidate
    names = ", ".join(e.name for e in list_profiles())
    raise ProfileError([ProfileProblem(path, 0, 0, "no such profile file or profile name",
                                       f"give a path to a .yaml file or one of: {names}")])
