"""Where profiles live: the built-in ones shipped in the package, a workshop's baked into it, and the user's own."""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import platformdirs

from stackpanel.core.errors import ProfileError, ProfileProblem, StackpanelError
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


# ---------------------------------------------------------------- the user's library: new, copy, rename, delete

#: A profile's name is its file stem: letters, digits, and . _ - (no path separators, no hidden files).
PROFILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class LibraryError(StackpanelError):
    """A library operation that cannot be done; the message says what to do instead."""


class ProfileExists(LibraryError):
    """The name is taken; retry with ``overwrite=True`` once the user agreed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"a profile named {path.stem!r} already exists ({path}); pick another name or replace it")


def check_profile_name(name: str) -> str:
    """The name as it will be stored (a trailing .yaml dropped), or LibraryError saying why not."""
    stem = name.strip().removesuffix(".yaml").removesuffix(".yml")
    if not PROFILE_NAME_RE.fullmatch(stem):
        raise LibraryError(f"{name!r} cannot name a profile: use letters, digits and . _ - (at most 64, "
                           "starting with a letter or digit; no / or spaces)")
    return stem


def user_profile_path(name: str) -> Path:
    return user_dir() / f"{check_profile_name(name)}.yaml"


def blank_profile_text(name: str) -> str:
    """A new profile that runs as it is: one uvicorn node with the demo app."""
    from stackpanel.core.profiles.jsonschema import SCHEMA_FILE

    return (f"# yaml-language-server: $schema={SCHEMA_FILE.as_uri()}\n"
            "version: 1\n"
            f"name: {name}\n"
            "description: A new stack; add nodes from the form or write them here.\n"
            "nodes:\n"
            "  app:\n"
            "    kind: uvicorn\n"
            "    port: 8000\n"
            "    workers: 1\n"
            "    app:\n"
            "      module: stackpanel.apps.fastapi_demo:app\n")


def copy_name(name: str) -> str:
    """A free user-profile name for a copy of `name`: name-copy, name-copy-2, ..."""
    base = f"{name}-copy"[:64]
    candidate, n = base, 2
    while any(is_file(user_dir() / f"{candidate}{s}") for s in PROFILE_SUFFIXES):
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def _write_new(path: Path, text: str, overwrite: bool) -> None:
    """Write atomically; without `overwrite`, refuse (ProfileExists) a name that is taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    taken = [path.with_suffix(s) for s in PROFILE_SUFFIXES if is_file(path.with_suffix(s))]
    if taken and not overwrite:
        raise ProfileExists(taken[0])
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    for other in taken:
        if other != path:
            other.unlink()  # the .yml twin would shadow nothing, but would confuse the user


def in_user_dir(entry: ProfileEntry) -> bool:
    """One of the user's library (a file opened by its path lives elsewhere: it is saved in place,
    but the panel neither renames nor deletes it)."""
    return not entry.builtin and entry.path.parent.resolve() == user_dir().resolve()


def _own(entry: ProfileEntry, doing: str, in_place: bool = False) -> None:
    if entry.builtin:
        raise LibraryError(f"{entry.name} is a {entry.group} profile and cannot be {doing}; "
                           "duplicate it into your profiles and change the copy")
    if not in_place and not in_user_dir(entry):
        raise LibraryError(f"{entry.path} is not in your profiles ({user_dir()}), so it is not {doing} here; "
                           "duplicate it into your profiles, or use your file manager")


def entry_for_path(name: str, path: Path) -> ProfileEntry:
    """The library entry of a loaded profile; a file outside the library (a path given on the
    command line) is the user's own, writable in place."""
    resolved = path.resolve()
    for entry in list_profiles():
        if entry.path.resolve() == resolved:
            return entry
    return ProfileEntry(name, path, False, "user")


def create_profile(name: str, text: str, overwrite: bool = False) -> ProfileEntry:
    """A user profile `name` holding `text` (New, Duplicate and Save as)."""
    path = user_profile_path(name)
    _write_new(path, text, overwrite)
    return ProfileEntry(path.stem, path, False, "user")


def save_profile(entry: ProfileEntry, text: str) -> None:
    """Write a user profile's new text (a built-in is read-only: save a copy with create_profile)."""
    _own(entry, "changed", in_place=True)
    _write_new(entry.path, text, overwrite=True)


def rename_profile(entry: ProfileEntry, new_name: str, overwrite: bool = False) -> ProfileEntry:
    _own(entry, "renamed")
    new = user_profile_path(new_name)
    if new == entry.path:
        return entry
    _write_new(new, entry.path.read_text(encoding="utf-8"), overwrite)
    entry.path.unlink()
    return ProfileEntry(new.stem, new, False, "user")


def delete_profile(entry: ProfileEntry) -> None:
    _own(entry, "deleted")
    entry.path.unlink(missing_ok=True)
