"""Where each value of a profile's YAML sits, so that every problem can name file:line:column."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackpanel.core.errors import ProfileProblem

Loc = tuple[Any, ...]


@dataclass
class SourceMap:
    """Where each value (and each mapping key) of a YAML document sits: loc → (line, column)."""

    file: Path
    values: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Loc, tuple[int, int]] = field(default_factory=dict)

    def where(self, loc: Loc, prefer_key: bool = False) -> tuple[int, int]:
        loc = tuple(loc)
        while True:
            table = (self.keys, self.values) if prefer_key else (self.values, self.keys)
            for t in table:
                if loc in t:
                    return t[loc]
            if not loc:
                return (1, 1)
            loc = loc[:-1]
            prefer_key = False

    def problem(self, loc: Loc, message: str, hint: str = "", prefer_key: bool = False) -> ProfileProblem:
        line, col = self.where(loc, prefer_key)
        return ProfileProblem(self.file, line, col, message, hint)
