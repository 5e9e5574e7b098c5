"""Typed edits of a profile's YAML text that keep the user's comments and layout.

A :class:`ProfileDocument` holds the text. Each edit changes ruamel.yaml's round-trip tree of it
(comments, key order, quoting and flow style survive a load and a dump) and dumps the tree.
The dump's indentation is the document's own (guessed from the tree's positions) and lines are
never re-wrapped, so the built-in profiles dump byte for byte as written. Where a document still
comes back different (odd indentation, exotic scalars), only the lines the edit changed are carried
over into the original text (:func:`_carry_over`): nothing else the user wrote moves.

The edits check their arguments' shape (a node that exists, a whole number); whether the result is
a usable profile is the loader's business (:func:`~stackpanel.core.profiles.loader.collect_problems`).
"""
from __future__ import annotations

import copy
import difflib
import io
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from stackpanel.core.errors import StackpanelError
from stackpanel.core.profiles.jsonschema import SCHEMA_FILE
from stackpanel.core.profiles.schema import (
    APP_SERVER_KINDS,
    NODE_MODELS,
    NODE_NAME_RE,
    PROXY_KINDS,
    RESERVED_NODE_NAMES,
)

T = TypeVar("T")

#: Where a new node's port search starts, by role (the built-ins use 8080+ for proxies, 8000+ for apps).
FIRST_PORT = {"nginx": 8080, "apache": 8080, "uvicorn": 8000, "gunicorn": 8000}
#: The app a new app server runs: the demo apps shipped with stackpanel, so it starts as it is.
DEMO_APPS = {"uvicorn": ("stackpanel.apps.fastapi_demo:app", "asgi"),
             "gunicorn": ("stackpanel.apps.flask_demo:app", "wsgi")}


class EditError(StackpanelError):
    """An edit that cannot be made on this text (YAML that does not parse, a node that is not there)."""


def _walk_layout(node: Any, out: dict[str, int]) -> None:
    """The document's indentation: of a nested mapping, of a block list's dash and of its items,
    each measured from the column of the key that holds them (keys as written: merged ones and
    those an edit added have no place of their own)."""
    if isinstance(node, CommentedMap):
        for key, (_line, key_col, *_rest) in node.lc.data.items():
            value = node.get(key)
            first = _first_key_col(value)
            if isinstance(value, CommentedMap) and not value.fa.flow_style() and first is not None:
                out.setdefault("mapping", first - key_col)
            if isinstance(value, CommentedSeq) and not value.fa.flow_style() and value:
                if isinstance(value.lc.col, int):
                    out.setdefault("offset", value.lc.col - key_col)
                item_col = _first_key_col(value[0])
                if item_col is not None:
                    out.setdefault("sequence", item_col - key_col)
            _walk_layout(value, out)
    elif isinstance(node, CommentedSeq):
        for value in node:
            _walk_layout(value, out)


def _first_key_col(value: Any) -> int | None:
    """Column of a block mapping's first key (its own position is that of an anchor, when it has one)."""
    if isinstance(value, CommentedMap) and value.lc.data:
        return int(next(iter(value.lc.data.values()))[1])
    return None


def _shares_nodes(node: Any) -> bool:
    """Anchors, aliases or merge keys: a deep copy would write them out in full (ruamel ties them by identity)."""
    if isinstance(node, CommentedMap | CommentedSeq):
        if node.anchor.value is not None or (isinstance(node, CommentedMap) and node.merge):
            return True
        return any(_shares_nodes(v) for v in (node.values() if isinstance(node, CommentedMap) else node))
    return False


def _carry_over(original: str, base: str, new: str) -> str:
    """Apply the change base → new to `original`, where base is ruamel's dump of the unchanged
    original: lines the dump normalised but the edit did not touch stay as the user wrote them."""
    if base == original:
        return new
    orig_lines, base_lines, new_lines = (s.splitlines(keepends=True) for s in (original, base, new))
    # base line index → original line index: where the two agree, and line for line where the dump
    # rewrote as many lines as the user wrote (a flow list with other spacing, a hex number)
    to_orig: dict[int, int] = {}
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, base_lines, orig_lines, autojunk=False).get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            to_orig.update(zip(range(i1, i2), range(j1, j2), strict=True))

    def position(i: int) -> int:
        """Where base line i sits in the original (the line after the nearest mapped one before it)."""
        if i in to_orig:
            return to_orig[i]
        before = [to_orig[k] for k in range(i - 1, -1, -1) if k in to_orig][:1]
        return before[0] + 1 if before else 0

    out = list(orig_lines)
    edits = [op for op in difflib.SequenceMatcher(None, base_lines, new_lines, autojunk=False).get_opcodes()
             if op[0] != "equal"]
    for _tag, i1, i2, j1, j2 in reversed(edits):  # from the end, so earlier positions stay valid
        start = position(i1)
        end = position(i2 - 1) + 1 if i2 > i1 else start
        out[start:end] = new_lines[j1:j2]
    return "".join(out)


class ProfileDocument:
    """A profile's YAML text with typed edits; :attr:`text` is always the current text.

    ruamel's round-trip parser is pure Python (~10-20 ms for a built-in, a dump about as much), so
    the parsed tree and its dump are kept for the current text: reading values for a form costs
    nothing after the first parse, and an edit parses nothing when the text came from an edit."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._tree: Any = None  # the parsed text (never changed in place)
        self._base: str | None = None  # its dump
        self._yaml_out: YAML | None = None  # the dumper with the text's indentation

    @property
    def text(self) -> str:
        return self._text

    @text.setter
    def text(self, text: str) -> None:
        if text != self._text:
            self._text, self._tree, self._base, self._yaml_out = text, None, None, None

    # ------------------------------------------------------------------ the round trip

    @staticmethod
    def _yaml(tree: Any) -> YAML:
        yaml = YAML()  # round-trip mode
        yaml.width = 4096  # never re-wrap a long line (ruamel wraps at 80 by default)
        layout: dict[str, int] = {}
        _walk_layout(tree, layout)
        offset = layout.get("offset", 2)
        yaml.indent(mapping=layout.get("mapping", 2), sequence=layout.get("sequence", offset + 2), offset=offset)
        return yaml

    @staticmethod
    def _dump(yaml: YAML, tree: Any) -> str:
        out = io.StringIO()
        yaml.dump(tree, out)
        return out.getvalue()

    def _parse(self) -> Any:
        yaml = YAML()
        yaml.preserve_quotes = True  # a quoted scalar loads as a str subclass that remembers its quotes
        try:
            return yaml.load(self._text)
        except YAMLError as exc:
            raise EditError(f"the YAML does not parse, so it cannot be edited from the form: {exc}") from None

    def _load(self) -> Any:
        """The parsed text, shared: read it, never change it (:meth:`tree` gives a copy)."""
        if self._tree is None:
            self._tree = self._parse()
        return self._tree

    def prepare(self) -> None:
        """Parse and dump now (e.g. on a worker thread), so that the next edit only dumps."""
        try:
            original = self._load()
        except EditError:
            return
        if isinstance(original, CommentedMap) and self._base is None:
            self._yaml_out = self._yaml(original)
            self._base = self._dump(self._yaml_out, original)

    def tree(self) -> Any:
        """The parsed document (a copy: changing it changes nothing)."""
        return self._parse()

    def _edit(self, change: Callable[[CommentedMap], T]) -> T:
        original = self._load()
        if not isinstance(original, CommentedMap):
            raise EditError("the profile is not a mapping; start with `version: 1`, `name:` and `nodes:`")
        yaml = self._yaml_out or self._yaml(original)
        if self._base is None:
            self._base = self._dump(yaml, original)
        tree = self._parse() if _shares_nodes(original) else copy.deepcopy(original)  # ~1 ms; a parse 10-20
        result = change(tree)
        new = self._dump(yaml, tree)
        clean = self._base == self._text
        self.text = _carry_over(self._text, self._base, new)
        if clean:  # the new text is exactly this tree's dump: keep both
            self._tree, self._base, self._yaml_out = tree, new, yaml
        return result

    # ------------------------------------------------------------------ reading

    def node_kinds(self) -> dict[str, str]:
        """Node name → kind, as written (a node without a kind maps to '')."""
        tree = self._load()
        nodes = tree.get("nodes") if isinstance(tree, dict) else None
        if not isinstance(nodes, dict):
            return {}
        return {str(n): str(v.get("kind", "")) if isinstance(v, dict) else "" for n, v in nodes.items()}

    def node_value(self, node: str, *path: str) -> Any:
        """The value at nodes.<node>.<path...>, or None."""
        value: Any = self._load()
        for part in ("nodes", node, *path):
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    # ------------------------------------------------------------------ edits

    @staticmethod
    def _node(tree: CommentedMap, name: str) -> CommentedMap:
        nodes = tree.get("nodes")
        node = nodes.get(name) if isinstance(nodes, dict) else None
        if not isinstance(node, CommentedMap):
            raise EditError(f"there is no node {name!r} to edit")
        return node

    @staticmethod
    def _set(mapping: CommentedMap, key: str, value: Any, after: tuple[str, ...] = ()) -> None:
        """Change a key in place, or add it after the first of `after` present (else at the end)."""
        if key in mapping:
            mapping[key] = value
            return
        keys = list(mapping)
        anchor = next((a for a in after if a in mapping), None)
        mapping.insert(keys.index(anchor) + 1 if anchor else len(keys), key, value)

    def set_workers(self, node: str, workers: int) -> None:
        self._edit(lambda t: self._set(self._node(t, node), "workers", _whole(workers, "workers"), ("port", "kind")))

    def set_port(self, node: str, port: int) -> None:
        self._edit(lambda t: self._set(self._node(t, node), "port", _whole(port, "port"), ("host", "kind")))

    def _app(self, tree: CommentedMap, node: str) -> CommentedMap:
        n = self._node(tree, node)
        app = n.get("app")
        if not isinstance(app, CommentedMap):
            if str(n.get("kind")) not in APP_SERVER_KINDS:
                raise EditError(f"node {node!r} is a {n.get('kind')} node: only gunicorn and uvicorn nodes run an app")
            app = CommentedMap()
            n["app"] = app
        return app

    def set_app_module(self, node: str, module: str) -> None:
        """`app.module` (module:attribute)."""
        self._edit(lambda t: self._set(self._app(t, node), "module", _text(module, "module")))

    def set_interpreter(self, node: str, python: str | None) -> None:
        """`app.python`: an interpreter or a venv directory; None or '' removes it (stackpanel's own)."""

        def change(tree: CommentedMap) -> None:
            app = self._app(tree, node)
            if python:
                self._set(app, "python", _text(python, "python"), ("interface", "module"))
            elif "python" in app:
                del app["python"]

        self._edit(change)

    def set_route(self, node: str, path: str, *, to: str | None = None, static: str | None = None) -> None:
        """Point the route `path` of proxy `node` at a node (`to`) or a directory (`static`); the
        route is added (before a catch-all `/`, which must stay last to be a fallback) when new."""
        if (to is None) == (static is None):
            raise EditError("a route goes either to a node (to:) or to a directory (static:)")

        def change(tree: CommentedMap) -> None:
            n = self._node(tree, node)
            if str(n.get("kind")) not in PROXY_KINDS:
                raise EditError(f"node {node!r} is a {n.get('kind')} node: only nginx and apache nodes have routes")
            routes = n.get("routes")
            if not isinstance(routes, CommentedSeq):
                routes = CommentedSeq()
                self._set(n, "routes", routes)
            target_key, target = ("to", to) if to is not None else ("static", static)
            for route in routes:
                if isinstance(route, CommentedMap) and route.get("path") == path:
                    other = "static" if target_key == "to" else "to"
                    if other in route:
                        _rename_key(route, other, target_key, target)
                    else:
                        route[target_key] = target
                    return
            new = CommentedMap([("path", _text(path, "path")), (target_key, target)])
            last_is_root = bool(routes) and isinstance(routes[-1], dict) and routes[-1].get("path") == "/"
            routes.insert(len(routes) - 1 if last_is_root and path != "/" else len(routes), new)

        self._edit(change)

    def relative_paths(self) -> list[str]:
        """The relative paths the text holds (static dirs, app.python, app.working_dir, the schema
        modeline): they mean something else once the profile lives in another directory."""
        found = [value for _mapping, _key, value in _path_values(self._load()) if not _absolute(value)]
        modeline = _MODELINE.search(self.text)
        return found + ([modeline.group(1)] if modeline and not _absolute(modeline.group(1)) else [])

    def rebase_paths(self, source_dir: Path) -> None:
        """Make the relative paths absolute as they were meant from `source_dir` (the directory the
        profile was copied from); the modeline points at the schema shipped in the package."""

        def change(tree: CommentedMap) -> None:
            for mapping, key, value in _path_values(tree):
                if not _absolute(value):
                    mapping[key] = os.path.normpath(source_dir / value)  # not resolve(): a venv's python is a link

        if any(not _absolute(v) for _m, _k, v in _path_values(self._load())):
            self._edit(change)
        modeline = _MODELINE.search(self.text)
        if modeline and not _absolute(modeline.group(1)):
            self.text = self._text[:modeline.start(1)] + SCHEMA_FILE.as_uri() + self._text[modeline.end(1):]

    def add_node(self, kind: str, name: str | None = None, *, behind: str | None = None,
                 port_free: Callable[[int], bool] | None = None) -> str:
        """Add a node of `kind` with sensible defaults and a port no other node uses (and, with
        `port_free`, one this machine has free); returns its name.

        A proxy goes in front: its route `/` leads to the current entry node. An app server runs
        the demo app for its kind; with `behind` (a proxy) it gets the route `/<name>` there."""
        if kind not in NODE_MODELS:
            raise EditError(f"unknown node kind {kind!r}; one of {', '.join(NODE_MODELS)}")
        tree_now = self._load()
        nodes_now = tree_now.get("nodes") if isinstance(tree_now, dict) else None
        existing = dict(nodes_now) if isinstance(nodes_now, dict) else {}
        name = name or _free_name(kind, existing)
        if not NODE_NAME_RE.fullmatch(name) or name in RESERVED_NODE_NAMES:
            raise EditError(f"{name!r} cannot name a node: start with a lowercase letter, then a-z 0-9 _ - "
                            f"(not {' or '.join(sorted(RESERVED_NODE_NAMES))})")
        if name in existing:
            raise EditError(f"there is already a node {name!r}; pick another name")
        port = _free_port(FIRST_PORT[kind], _used_ports(existing), port_free)
        entry = _entry(existing)

        def change(tree: CommentedMap) -> str:
            nodes = tree.get("nodes")
            if not isinstance(nodes, CommentedMap):
                nodes = CommentedMap()
                tree["nodes"] = nodes
            node = CommentedMap([("kind", kind), ("port", port)])
            if kind in PROXY_KINDS:
                route = CommentedMap([("path", "/"), ("to", entry)] if entry else [("path", "/"), ("static", ".")])
                node["routes"] = CommentedSeq([route])
            else:
                module, interface = DEMO_APPS[kind]
                node["workers"] = 1
                app = CommentedMap([("module", module)])
                if interface != "asgi":
                    app["interface"] = interface
                node["app"] = app
            nodes[name] = node
            return name

        added = self._edit(change)
        if behind is not None and kind in APP_SERVER_KINDS:
            self.set_route(behind, f"/{name}", to=name)
        return added


_MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)", re.MULTILINE)


def _absolute(value: str) -> bool:
    return value.startswith(("/", "~")) or "://" in value


def _path_values(tree: Any) -> list[tuple[CommentedMap, str, str]]:
    """(mapping, key, value) of every file-system path a profile names."""
    out: list[tuple[CommentedMap, str, str]] = []
    nodes = tree.get("nodes") if isinstance(tree, dict) else None
    for node in nodes.values() if isinstance(nodes, dict) else ():
        if not isinstance(node, dict):
            continue
        for route in node.get("routes") or []:
            if isinstance(route, CommentedMap) and isinstance(route.get("static"), str):
                out.append((route, "static", route["static"]))
        app = node.get("app")
        if isinstance(app, CommentedMap):
            out += [(app, key, app[key]) for key in ("python", "working_dir") if isinstance(app.get(key), str)]
    return out


def _rename_key(mapping: CommentedMap, old: str, new: str, value: Any) -> None:
    """Replace key `old` by `new` at its place; the comments ruamel hangs on the old key (its end
    of line comment, and blank lines and comments below it) stay where they were."""
    at = list(mapping).index(old)
    comment = mapping.ca.items.pop(old, None)
    del mapping[old]
    mapping.insert(at, new, value)
    if comment is not None:
        mapping.ca.items[new] = comment


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EditError(f"{what} must be a whole number, not {value!r}")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        raise EditError(f"{what} must be one line of text")
    return value.strip()


def _free_name(kind: str, existing: dict[Any, Any]) -> str:
    base = {"nginx": "edge", "apache": "web", "uvicorn": "app", "gunicorn": "app"}[kind]
    if base not in existing:
        return base
    n = 2
    while f"{base}{n}" in existing:
        n += 1
    return f"{base}{n}"


def _used_ports(nodes: dict[Any, Any]) -> set[int]:
    used: set[int] = set()
    for node in nodes.values():
        if not isinstance(node, dict):
            continue
        tls = node.get("tls")
        for port in (node.get("port"), tls.get("port") if isinstance(tls, dict) else None):
            if isinstance(port, int):
                used.add(port)
    return used


def _free_port(start: int, used: set[int], port_free: Callable[[int], bool] | None) -> int:
    for port in range(start, 65536):
        if port not in used and (port_free is None or port_free(port)):
            return port
    raise EditError(f"no free port from {start} up")


def _entry(nodes: dict[Any, Any]) -> str | None:
    """The node no route leads to, as Profile.entry, on raw data (the document may not validate)."""
    targets = {r.get("to") for n in nodes.values() if isinstance(n, dict)
               for r in (n.get("routes") or []) if isinstance(r, dict)}
    names = [str(n) for n in nodes]
    return next((n for n in names if n not in targets), names[0] if names else None)
