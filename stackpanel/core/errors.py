"""Errors are values with a message a person can act on: what, where, and what to do.

One base class per area; they become dialogs or exit codes only at the boundary (CLI, GUI).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class StackpanelError(Exception):
    """Base of every error stackpanel reports to a person."""


@dataclass(frozen=True)
class ProfileProblem:
    """One thing wrong with a profile, located at file:line:column."""

    file: Path
    line: int  # 1-based; 0 when the problem has no single place (e.g. a cycle)
    column: int  # 1-based
    message: str  # what is wrong
    hint: str = ""  # what to write instead

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else f"{self.file}"
        text = f"{where}: {self.message}"
        if self.hint:
            text += f"\n    fix: {self.hint}"
        return text


class ProfileError(StackpanelError):
    """A profile that cannot be used; carries every problem found, in file order."""

    def __init__(self, problems: list[ProfileProblem]):
        self.problems = sorted(problems, key=lambda p: (str(p.file), p.line, p.column))
        super().__init__("\n".join(str(p) for p in self.problems))


class RenderError(StackpanelError):
    """The profile is valid but cannot be rendered on this machine (e.g. an Apache module is missing)."""
