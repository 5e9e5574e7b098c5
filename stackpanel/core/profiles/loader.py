"""Load a profile: YAML with line numbers → schema → cross-node validators.

Every problem is reported as file:line:column, what is wrong and what to write instead; nothing
is launched by anyone until a profile loads cleanly.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, TypeAdapter, ValidationError

from stackpanel.core.errors import ProfileError, ProfileProblem
from stackpanel.core.profiles.schema import NODE_MODELS, Node, NodeBase, Profile
from stackpanel.core.profiles.sourcemap import Loc, SourceMap
from stackpanel.core.profiles.validators import NODE_VALIDATORS, validate_profile
from stackpanel.core.profiles.yamlsource import parse_yaml, read_profile_text

__all__ = ["ProfileCheck", "collect_problems", "load_profile", "load_profile_text", "parse_yaml",
           "problems_from_validation"]

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
            nodes = value.get("nodes") if isinstance(value, dict) else None
            value = nodes.get(name) if isinstance(nodes, dict) else None
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


_PYDANTIC_SEGMENT = re.compile(r"^[a-z-]+\[.*\]$")  # e.g. function-after[_host(), str]


def _strip_union_tags(loc: Loc, data: Any) -> Loc:
    """pydantic puts its own segments into loc (the discriminator value in nodes.edge.nginx.port,
    validator names); keep only the parts that walk the data, plus a final missing key."""
    out: list[Any] = []
    value = data
    for part in loc:
        in_dict = isinstance(value, dict) and part in value
        in_list = isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
        if in_dict or in_list:
            value = value[part]
        elif isinstance(part, str) and (part in NODE_MODELS or _PYDANTIC_SEGMENT.match(part)):
            continue
        else:
            value = None
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
        if typ in ("extra_forbidden", "missing") and not loc:
            problems.append(smap.problem(loc, f"{err['msg']}", ""))
        elif typ == "extra_forbidden":
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


@dataclass(frozen=True)
class ProfileCheck:
    """Every problem found in a profile's text, and the profile when the schema accepts it (it may
    still have cross-node problems: a port used twice still draws as a graph)."""

    profile: Profile | None
    problems: list[ProfileProblem]

    @property
    def ok(self) -> bool:
        return self.profile is not None and not self.problems


_NODE_ADAPTER: TypeAdapter[NodeBase] = TypeAdapter(Node)


def collect_problems(text: str, file: Path, port_offset: int = 0, check_files: bool = True) -> ProfileCheck:
    """As :func:`load_profile_text`, but nothing stops at the first batch (for an editor that
    shows all at once): a YAML syntax error ends the check (there is no document to look at); the
    schema's problems come all together; the cross-node rules run as well, on every node the schema
    accepts when others fail (rules that need the whole graph, as routes to a node, wait for it)."""
    try:
        data, smap = parse_yaml(text, file)
    except ProfileError as exc:
        return ProfileCheck(None, exc.problems)
    if not isinstance(data, dict):
        return ProfileCheck(None, [smap.problem((), "a profile must be a mapping",
                                                "start with `version: 1`, `name:` and `nodes:`")])
    context = {"base_dir": file.parent.resolve()}
    try:
        profile = Profile.model_validate(data, context=context)
    except ValidationError as exc:
        problems = problems_from_validation(exc, data, smap)
        raw_nodes = data.get("nodes")
        nodes: dict[str, NodeBase] = {}
        graph_whole = isinstance(raw_nodes, dict) and bool(raw_nodes)
        for name, raw in (raw_nodes.items() if isinstance(raw_nodes, dict) else ()):
            node, pruned = _node_without_bad_values(raw, context)
            if node is not None:
                nodes[str(name)] = node
            graph_whole = graph_whole and node is not None and not pruned & _GRAPH_KEYS
        partial = Profile.model_construct(version=1, name="", description="", nodes=nodes)
        if graph_whole:  # every node and every route read: the whole-graph rules can judge
            problems += validate_profile(partial, smap, port_offset, check_files=check_files, collect_all=True)
        else:
            for validator in NODE_VALIDATORS if check_files else NODE_VALIDATORS[:-1]:
                problems.extend(validator(partial, smap, port_offset))
        return ProfileCheck(None, _in_order(problems))
    problems = validate_profile(profile, smap, port_offset=port_offset, check_files=check_files, collect_all=True)
    return ProfileCheck(profile.with_port_offset(port_offset), _in_order(problems))


#: Keys that make the graph's edges: with one of them pruned, routes and reachability are not judged.
_GRAPH_KEYS = frozenset({"routes", "depends_on"})
#: Values left out of one node before it is given up (each validation of a node: ~0.1 ms).
_MAX_PRUNED = 16


def _node_without_bad_values(raw: Any, context: dict[str, Any]) -> tuple[NodeBase | None, set[str]]:
    """The node as the schema reads it once the values it refuses are left out (defaults take
    their place: a bad `workers:` or a typo in a route's option does not hide the node's port from
    the port check), and the node's keys that lost something. None when what is refused is required
    (a missing port, the kind, the last route): its problems are reported, its rules wait."""
    pruned: set[str] = set()
    for _ in range(_MAX_PRUNED):
        try:
            return _NODE_ADAPTER.validate_python(raw, context=context), pruned
        except ValidationError as exc:
            path = _existing_path(raw, exc.errors()[0]["loc"])
            if not path or path[0] == "kind":
                return None, pruned
            pruned.add(str(path[0]))
            raw = _without(raw, path)
    return None, pruned


def _existing_path(data: Any, loc: Loc) -> list[Any]:
    """The parts of a pydantic loc that walk `data` (its union tags and validator names left out)."""
    path: list[Any] = []
    for part in loc:
        if (isinstance(data, dict) and part in data) or (
                isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)):
            path.append(part)
            data = data[part]
    return path


def _without(data: Any, path: list[Any]) -> Any:
    """A copy of `data` without the value at `path` (only the containers on the path are copied)."""
    head, rest = path[0], path[1:]
    out: Any = dict(data) if isinstance(data, dict) else list(data)
    if rest:
        out[head] = _without(data[head], rest)
    else:
        del out[head]
    return out


def _in_order(problems: list[ProfileProblem]) -> list[ProfileProblem]:
    """File order, each once (as ProfileError lists them)."""
    return ProfileError(list(dict.fromkeys(problems))).problems


def load_profile_text(text: str, file: Path, port_offset: int = 0, check_files: bool = True) -> Profile:
    """Parse and validate a profile; raise ProfileError listing every problem found."""
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
    return profile.with_derived_probes().with_port_offset(port_offset)


def load_profile(path: str | Path, port_offset: int = 0, check_files: bool = True) -> Profile:
    file = Path(path)
    return load_profile_text(read_profile_text(file), file, port_offset=port_offset, check_files=check_files)
