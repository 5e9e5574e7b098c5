"""Read a profile file into plain data with the position of every value, refusing hostile input.

A profile is small (a few KB). Everything beyond what a profile can reasonably be is refused with
a located problem before it costs time or memory: the file size, the nesting depth, the number of
values after aliases are expanded (a "billion laughs" document is a few hundred bytes), the length
of one scalar. PyYAML's own failures (bad bytes, unknown tags, numbers too long for ``int()``)
become located problems too; nothing here raises anything but ``ProfileError``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from stackpanel.core.errors import ProfileError, ProfileProblem
from stackpanel.core.profiles.sourcemap import Loc, SourceMap

#: The largest profile file read; built-in profiles are 1-2 KB. Pure-Python PyYAML composes
#: about 1 MB/s here, so the cap also bounds the time spent on any file to ~0.2 s.
MAX_PROFILE_BYTES = 256 * 1024
#: Mappings and lists inside each other; a profile needs 6.
MAX_DEPTH = 32
#: Values after alias expansion; a 20-node profile has ~500.
MAX_VALUES = 50_000
#: Characters in one scalar (a path or an environment value).
MAX_SCALAR_CHARS = 8_192

_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_PLAIN_HINT = "start with `version: 1`, `name:` and `nodes:`"


class _TooMuch(Exception):
    """A limit was passed at the node with this mark."""

    def __init__(self, mark: yaml.Mark | None, message: str, hint: str):
        super().__init__(message)
        self.mark, self.message, self.hint = mark, message, hint


def _line_col(mark: yaml.Mark | None) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _position(text: str | bytes, index: int) -> tuple[int, int]:
    """1-based line and column of character (or byte) ``index``."""
    newline = b"\n" if isinstance(text, bytes) else "\n"
    head = text[:index]
    line = head.count(newline) + 1  # type: ignore[arg-type]
    return line, index - (head.rfind(newline) + 1) + 1  # type: ignore[arg-type]


def read_profile_text(file: Path) -> str:
    """The file's text, or a ProfileError that says why it cannot be a profile."""
    try:
        with open(file, "rb") as fh:
            data = fh.read(MAX_PROFILE_BYTES + 1)
    except FileNotFoundError:
        raise ProfileError([ProfileProblem(file, 0, 0, "no such profile file",
                                           "check the path, or run `stackpanel profiles` for the names")]) from None
    except IsADirectoryError:
        raise ProfileError([ProfileProblem(file, 0, 0, "this is a directory, not a profile file",
                                           "give the path of a .yaml file inside it")]) from None
    except OSError as exc:
        raise ProfileError([ProfileProblem(file, 0, 0, f"cannot read the profile: {exc.strerror or exc}",
                                           "check the path and its permissions")]) from None
    if len(data) > MAX_PROFILE_BYTES:
        raise ProfileError([ProfileProblem(
            file, 1, 1, f"the file is larger than {MAX_PROFILE_BYTES // 1024} KiB, far more than any profile",
            "is this the right file? a profile describes a few nodes in a few KB")])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, col = _position(data, exc.start)
        what = f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x})"
        raise ProfileError([ProfileProblem(file, line, col, what, "save the profile as UTF-8")]) from None


class _DepthLimitedLoader(yaml.SafeLoader):
    """PyYAML's composer recurses once per nesting level: a deep ``[[[[...`` would exhaust the stack."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooMuch(self.peek_event().start_mark, f"values nested more than {MAX_DEPTH} levels deep",
                               "a profile needs a few levels: nodes → node → key → value")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _compose(text: str, file: Path) -> yaml.Node | None:
    loader: _DepthLimitedLoader | None = None
    try:
        loader = _DepthLimitedLoader(text)  # the reader checks every character here
        return loader.get_single_node()
    except _TooMuch as exc:
        line, col = _line_col(exc.mark)
        raise ProfileError([ProfileProblem(file, line, col, exc.message, exc.hint)]) from None
    except yaml.reader.ReaderError as exc:
        line, col = _position(text, exc.position)
        what = f"the file contains the control character {exc.character:#06x}, which YAML forbids"
        raise ProfileError([ProfileProblem(file, line, col, what, "remove it (a profile is plain text)")]) from None
    except yaml.MarkedYAMLError as exc:
        line, col = _line_col(exc.problem_mark or exc.context_mark)
        what = exc.problem or exc.context or "syntax error"
        if isinstance(exc, ComposerError) and "expected a single document" in str(exc):
            what, hint = "more than one YAML document (a second `---`)", "keep one profile per file"
        else:
            hint = "check indentation and quoting around this spot"
        raise ProfileError([ProfileProblem(file, line, col, f"not valid YAML: {what}", hint)]) from None
    except yaml.YAMLError as exc:
        raise ProfileError([ProfileProblem(file, 1, 1, f"not valid YAML: {exc}", _PLAIN_HINT)]) from None
    finally:
        if loader is not None:
            loader.dispose()


class _Builder:
    """Turns a composed YAML node tree into plain data while recording every position.

    Aliases are expanded here (the composed graph shares nodes), so this is where their
    expansion is counted; merge keys (``<<: *defaults``) are honoured as YAML 1.1 defines them.
    """

    def __init__(self, smap: SourceMap):
        self.smap = smap
        self.problems: list[ProfileProblem] = []
        self._scalars = yaml.SafeLoader("")
        self._count = 0

    def _problem(self, node: yaml.Node, message: str, hint: str) -> None:
        line, col = _line_col(node.start_mark)
        self.problems.append(ProfileProblem(self.smap.file, line, col, message, hint))

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self._count += 1
        if self._count > MAX_VALUES:
            raise _TooMuch(node.start_mark, f"the profile expands to more than {MAX_VALUES:,} values "
                           "(an alias repeated inside aliases?)", "write the values out; use aliases sparingly")
        self.smap.values[loc] = _line_col(node.start_mark)
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP_TAG:
                self._unknown_tag(node)
            return self._mapping(node, loc)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                self._unknown_tag(node)
            return [self.build(item, loc + (i,)) for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _unknown_tag(self, node: yaml.Node) -> None:
        self._problem(node, f"unknown YAML tag {node.tag!r}",
                      "profiles use plain YAML: write the value itself, without a `!tag`")

    def _scalar(self, node: yaml.Node) -> Any:
        if len(node.value) > MAX_SCALAR_CHARS:
            self._problem(node, f"a value of {len(node.value):,} characters (at most {MAX_SCALAR_CHARS:,})",
                          "shorten it; no profile setting needs that much text")
            return None
        try:
            return self._scalars.construct_object(node, deep=True)
        except ConstructorError as exc:
            tag = node.tag if node.tag.startswith("!") or "yaml.org" not in node.tag else node.tag.rsplit(":", 1)[-1]
            self._problem(node, f"cannot read this value ({exc.problem or tag})",
                          "profiles use plain YAML: write the value itself, without a `!tag`")
        except ValueError:  # int() refuses more than 4,300 digits; a bad !!timestamp
            self._problem(node, "this value is not a usable number or date", "write a short whole number or text")
        return None

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        explicit: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self._merge(value_node, loc, out)
            else:
                explicit.append((key_node, value_node))
        seen: set[Any] = set()
        for key_node, value_node in explicit:  # explicit keys win over merged ones, wherever they stand
            if not isinstance(key_node, yaml.ScalarNode):
                self._problem(key_node, "a mapping key must be a plain word", "write `name: value`")
                continue
            key = self.build(key_node, loc + ("<key>",))
            if key is None or not isinstance(key, str | int | float | bool):
                self._problem(key_node, "a mapping key must be a plain word", "write `name: value`")
                continue
            if key in seen:
                self._problem(key_node, f"duplicate key {key!r}",
                              "each key may appear once in a mapping; remove or merge one of them")
            seen.add(key)
            self.smap.keys[loc + (key,)] = _line_col(key_node.start_mark)
            out[key] = self.build(value_node, loc + (key,))
        return out

    def _merge(self, value: yaml.Node, loc: Loc, out: dict[Any, Any]) -> None:
        sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
        # Earlier mappings in a merge list win over later ones (YAML 1.1 merge key spec).
        for source in reversed(sources):
            if not isinstance(source, yaml.MappingNode):
                self._problem(source, "`<<:` merges a mapping (or a list of mappings) into this one",
                              "write `<<: *name` where `&name` marks a mapping")
                continue
            merged = self._mapping(source, loc)
            out.update(merged)


def parse_yaml(text: str, file: Path) -> tuple[Any, SourceMap]:
    """Plain data and its source map; raises ProfileError with every problem found."""
    smap = SourceMap(file)
    root = _compose(text, file)
    if root is None:
        raise ProfileError([ProfileProblem(file, 1, 1, "the file is empty", _PLAIN_HINT)])
    builder = _Builder(smap)
    try:
        data = builder.build(root, ())
    except _TooMuch as exc:
        line, col = _line_col(exc.mark)
        raise ProfileError([ProfileProblem(file, line, col, exc.message, exc.hint)]) from None
    if builder.problems:
        raise ProfileError(builder.problems)
    return data, smap
