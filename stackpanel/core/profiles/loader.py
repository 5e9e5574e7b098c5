"""Load a profile: YAML with line numbers → schema → cross-node validators.

Every problem is reported as file:line:column, what is wrong and what to write instead; nothing
is launched by anyone until a profile loads cleanly.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from stackpanel.core.errors import ProfileError, ProfileProblem
from stackpanel.core.profiles.schema import NODE_MODELS, Profile

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


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    """Turns a composed YAML node tree into plain data while recording every position."""

    def __init__(self, smap: SourceMap):
        self.smap = smap
        self.problems: list[ProfileProblem] = []
        self._scalars = yaml.SafeLoader("")

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.smap.values[loc] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.build(key_node, loc + ("<key>",))
                if not isinstance(key, (str, int, float, bool)) or key is None:
                    self.problems.append(self.smap.problem(loc, "a mapping key must be a plain word"))
                    continue
                if key in out:
                    line, col = _mark(key_node)
                    self.problems.append(
                        ProfileProblem(self.smap.file, line, col, f"duplicate key {key!r}",
                                       "each key may appear once in a mapping; remove or merge one of them")
                    )
                self.smap.keys[loc + (key,)] = _mark(key_node)
                out[key] = self.build(value_node, loc + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, loc + (i,)) for i, item in enumerate(node.value)]
        return self._scalars.construct_object(node, deep=True)


def parse_yaml(text: str, file: Path) -> tuple[Any, SourceMap]:
    smap = SourceMap(file)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or str(exc)
        raise ProfileError([ProfileProblem(file, line, col, f"not valid YAML: {what}",
                                           "check indentation and quoting around this spot")]) from None
    if root is None:
        raise ProfileError([ProfileProblem(file, 1, 1, "the file is empty",
                                           "start with `version: 1`, `name:` and `nodes:`")])
    builder = _Builder(smap)
    data = builder.build(root, ())
    if builder.problems:
        raise ProfileError(builder.problems)
    return data, smap


# ---------------------------------------------------------------- pydantic errors → problems


def _model_at(loc: Loc, data: Any) -> type[BaseModel] | None:
    """The model class that validates the mapping at `loc` (for 'allowed keys' hints)."""
    model: Any = Profile
    value = data
    i = 0
    while i < len(loc):
        part = loc[i]
        if model is None:
            return None
        if model is Profile and part == "nodes":
            if i + 1 >= len(loc):
                return None
            name = loc[i + 1]
            value = (value or {}).get("nodes", {}).get(name, {})
            model = NODE_MODELS.get(str(value.get("kind"))) if isinstance(value, dict) else None
            i += 2
            continue
        fld = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if fld is None:
            return None
        value = value.get(part) if isinstance(value, dict) else None
        ann = fld.annotation
        candidates = [a for a in (get_args(ann) or (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        for a in get_args(ann):  # list[Route] and similar
            candidates += [b for b in get_args(a) if isinstance(b, type) and issubclass(b, BaseModel)]
        if not candidates:
            return None
        model = candidates[0]
        if i + 1 < len(loc) and isinstance(loc[i + 1], int):
            value = value[loc[i + 1]] if isinstance(value, list) and loc[i + 1] < len(value) else None
            i += 1
        i += 1
    return model if isinstance(model, type) else None


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def _strip_union_tags(loc: Loc, data: Any) -> Loc:
    """pydantic puts the discriminator value into loc (nodes.edge.nginx.port); drop it."""
    out: list[Any] = []
    for i, part in enumerate(loc):
        if i >= 2 and out[:1] == ["nodes"] and len(out) == 2 and part in NODE_MODELS:
            continue
        if isinstance(part, str) and ("function-after" in part or "[" in part):
            continue
        out.append(part)
    return tuple(out)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def problems_from_validation(exc: ValidationError, data: Any, smap: SourceMap) -> list[ProfileProblem]:
    problems: list[ProfileProblem] = []
    for err in exc.errors(include_url=False):
        loc = _strip_union_tags(tuple(err["loc"]), data)
        typ = err["type"]
        where = ".".join(str(p) for p in loc) or "the top level"
        if typ == "extra_forbidden":
            key = loc[-1]
            model = _model_at(loc[:-1], data)
            allowed = sorted(model.model_fields) if model else []
            if model is not None and issubclass(model, Profile):
                allowed = sorted(Profile.model_fields)
            hint = _suggest(str(key), allowed) + (f"allowed keys here: {', '.join(allowed)}" if allowed else
                                                  "remove it")
            problems.append(smap.problem(loc, f"unknown key {key!r} in {'.'.join(map(str, loc[:-1])) or 'profile'}",
                                         hint, prefer_key=True))
        elif typ == "missing":
            key = loc[-1]
            problems.append(smap.problem(loc[:-1], f"missing required key {key!r} in "
                                         f"{'.'.join(map(str, loc[:-1])) or 'the profile'}",
                                         f"add `{key}: ...`"))
        elif typ in ("union_tag_invalid", "union_tag_not_found"):
            kind = (err.get("ctx") or {}).get("tag", "")
            kinds = ", ".join(NODE_MODELS)
            if typ == "union_tag_not_found":
                problems.append(smap.problem(loc, f"node {loc[-1]!r} has no `kind`",
                                             f"add `kind:` with one of {kinds}"))
            else:
                problems.append(smap.problem(loc + ("kind",), f"unknown node kind {kind!r}",
                                             _suggest(kind, NODE_MODELS) + f"expected one of {kinds}"))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = "" if typ.startswith("value_error") else f" (got {_describe(err.get('input'))})"
            problems.append(smap.problem(loc, f"{where}: {msg}{got}", _hint_for(typ, err)))
    return problems


def _hint_for(typ: str, err: Any) -> str:
    ctx = err.get("ctx") or {}
    if typ == "literal_error":
        return f"write one of {ctx.get('expected', '')}"
    if typ in ("int_parsing", "int_type", "int_from_float"):
        return "write a whole number"
    if typ in ("float_parsing", "float_type"):
        return "write a number"
    if typ in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return "pick a value in the allowed range"
    if typ in ("dict_type", "model_type", "model_attributes_type"):
        return "write a mapping (key: value lines, indented below this key)"
    if typ == "list_type":
        return "write a list (lines starting with '- ')"
    if typ in ("string_type",):
        return "write text (quote it if it looks like a number or yes/no)"
    if typ == "bool_type":
        return "write true or false"
    return ""


# ---------------------------------------------------------------- public API


def load_profile_text(text: str, file: Path, port_offset: int = 0, check_files: bool = True) -> Profile:
    """Parse and validate a profile; raise ProfileError listing every problem found."""
    from stackpanel.core.profiles.validators import validate_profile

    data, smap = parse_yaml(text, file)
    if not isinstance(data, dict):
        raise ProfileError([smap.problem((), "a profile must be a mapping",
                                         "start with `version: 1`, `name:` and `nodes:`")])
    try:
        profile = Profile.model_validate(data, context={"base_dir": file.parent.resolve()})
    except ValidationError as exc:
        raise ProfileError(problems_from_validation(exc, data, smap)) from None
    problems = validate_profile(profile, smap, port_offset=port_offset, check_files=check_files)
    if problems:
        raise ProfileError(problems)
    return profile.with_port_offset(port_offset)


def load_profile(path: str | Path, port_offset: int = 0, check_files: bool = True) -> Profile:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError([ProfileProblem(file, 0, 0, "no such profile file",
                                           "check the path, or run `stackpanel validate profiles/*.yaml`")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError([ProfileProblem(file, 0, 0, f"cannot read the profile: {exc}")]) from None
    return load_profile_text(text, file, port_offset=port_offset, check_files=check_files)
