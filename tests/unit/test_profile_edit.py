"""Form edits of a profile's text keep everything the user wrote that the edit is not about; the
editor's check reports every problem at once; the user's library (new, copy, rename, delete)."""
from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from stackpanel.core.errors import ProfileError
from stackpanel.core.profiles.edit import EditError, ProfileDocument
from stackpanel.core.profiles.library import (
    LibraryError,
    ProfileExists,
    blank_profile_text,
    check_profile_name,
    copy_name,
    create_profile,
    delete_profile,
    entry_for_path,
    list_profiles,
    rename_profile,
    save_profile,
    user_dir,
)
from stackpanel.core.profiles.loader import collect_problems, load_profile_text

BUILTINS = [e for e in list_profiles() if e.group == "built-in"]

#: Comments everywhere, a blank line, quotes of both kinds, flow style, 4-space indentation with
#: dashes flush with their key, a long line, a hex number: what ruamel alone would not all keep.
HANDWRITTEN = """\
# my stack   (a comment with    spacing)
version: 1
name: 'quoted name'
description: "a description long enough that a YAML dumper with its default width of eighty would wrap it"

nodes:
    edge:   # the entry
        kind: nginx
        port: 0x4E20   # 20000 in hex
        routes:
        -   path: /api
            to: app
        -   path: /
            to: app

    # the app server
    app:
        kind: uvicorn
        port: 20001
        args: [ "--h11-max-incomplete-event-size",   "65536" ]
        app: {module: "stackpanel.apps.fastapi_demo:app"}
"""


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    """(removed, added) lines between two texts."""
    removed, added = [], []
    for line in difflib.ndiff(before.splitlines(), after.splitlines()):
        if line.startswith("- "):
            removed.append(line[2:])
        elif line.startswith("+ "):
            added.append(line[2:])
    return removed, added


@pytest.mark.parametrize("entry", BUILTINS, ids=lambda e: e.name)
def test_setting_workers_of_each_builtin_changes_that_line_only(entry) -> None:
    text = entry.path.read_text()
    doc = ProfileDocument(text)
    for node in doc.node_kinds():
        doc = ProfileDocument(text)
        doc.set_workers(node, 9)
        removed, added = changed_lines(text, doc.text)
        assert added == ["    workers: 9"], (node, added)
        assert len(removed) <= 1 and all(r.strip().startswith("workers:") for r in removed)


def test_edits_keep_comments_quotes_flow_style_blank_lines_and_indentation() -> None:
    doc = ProfileDocument(HANDWRITTEN)
    doc.set_workers("app", 3)
    doc.set_port("edge", 20080)
    doc.set_interpreter("app", "/usr/bin/python3")
    removed, added = changed_lines(HANDWRITTEN, doc.text)
    assert removed == ["        port: 0x4E20   # 20000 in hex",
                       '        app: {module: "stackpanel.apps.fastapi_demo:app"}']
    # the comment after the old value stays with the key; the app's flow mapping takes the key
    assert added == ["        port: 20080    # 20000 in hex", "        workers: 3",
                     '        app: {module: "stackpanel.apps.fastapi_demo:app", python: /usr/bin/python3}']
    doc.set_interpreter("app", None)
    doc.set_app_module("app", "stackpanel.apps.fastapi_demo:app")
    removed, added = changed_lines(HANDWRITTEN, doc.text)
    assert removed == ["        port: 0x4E20   # 20000 in hex"]
    assert added == ["        port: 20080    # 20000 in hex", "        workers: 3"]
    profile = load_profile_text(doc.text, Path("/tmp/p.yaml"), check_files=False)
    assert profile.nodes["app"].workers == 3 and profile.nodes["edge"].port == 20080
    assert profile.name == "quoted name"


def test_route_edits_change_a_target_in_place_and_add_new_routes_before_the_catch_all() -> None:
    doc = ProfileDocument(HANDWRITTEN)
    doc.set_route("edge", "/", static="site")
    doc.set_route("edge", "/docs", to="app")
    removed, added = changed_lines(HANDWRITTEN, doc.text)
    assert removed == ["            to: app"]
    assert added == ["        -   path: /docs", "            to: app", "            static: site"]
    lines = doc.text.splitlines()
    assert lines.index("        -   path: /docs") < lines.index("        -   path: /")
    with pytest.raises(EditError, match="only nginx and apache"):
        doc.set_route("app", "/x", to="edge")
    with pytest.raises(EditError, match="either to a node"):
        doc.set_route("edge", "/x", to="app", static="site")


def test_add_node_picks_names_and_free_ports_and_wires_the_graph() -> None:
    doc = ProfileDocument(HANDWRITTEN)
    taken_on_machine = {8000}
    name = doc.add_node("gunicorn", behind="edge", port_free=lambda p: p not in taken_on_machine)
    assert name == "app2"
    doc.add_node("nginx")  # a proxy goes in front of the current entry
    profile = load_profile_text(doc.text, Path("/tmp/p.yaml"), check_files=False)
    assert profile.nodes["app2"].port == 8001 and profile.nodes["app2"].app.interface == "wsgi"
    assert profile.entry == "edge2" and profile.nodes["edge2"].routes[0].to == "edge"
    assert [r.path for r in profile.nodes["edge"].routes] == ["/api", "/app2", "/"]
    removed, _added = changed_lines(HANDWRITTEN, doc.text)
    assert removed == []  # nothing the user wrote changed
    with pytest.raises(EditError, match="already a node"):
        doc.add_node("uvicorn", name="edge")
    with pytest.raises(EditError, match="cannot name a node"):
        doc.add_node("uvicorn", name="static")


def test_edits_refuse_what_they_cannot_do() -> None:
    with pytest.raises(EditError, match="no node 'nope'"):
        ProfileDocument(HANDWRITTEN).set_workers("nope", 2)
    with pytest.raises(EditError, match="whole number"):
        ProfileDocument(HANDWRITTEN).set_workers("app", "2")  # type: ignore[arg-type]
    with pytest.raises(EditError, match="does not parse"):
        ProfileDocument("nodes: [unclosed\n").set_workers("app", 2)
    with pytest.raises(EditError, match="only gunicorn and uvicorn"):
        ProfileDocument(HANDWRITTEN).set_app_module("edge", "a:b")


# ---------------------------------------------------------------- every problem at once

MANY_PROBLEMS = """\
version: 1
name: many
nodes:
  edge:
    kind: nginx
    port: 8080
    routes:
      - path: /
        to: app
  app:
    kind: uvicorn
    port: 8080
    workers: lots
    app:
      module: stackpanel.apps.fastapi_demo:app
  other:
    kind: gunicorn
    port: 8081
    host: 0.0.0.0
    app:
      module: no_such_module_here:app
"""


def test_collect_problems_reports_schema_and_cross_node_problems_together(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    check = collect_problems(MANY_PROBLEMS, file)
    found = [(p.line, p.column, p.message) for p in check.problems]
    assert check.profile is None and not check.ok
    assert found == [
        (12, 11, "port 8080 is already used by node 'edge'"),  # the app's bad `workers` hides not its port
        (13, 14, "nodes.app.workers: Input should be a valid integer, unable to parse string as an integer "
                 "(got 'lots')"),
        (16, 3, "node 'other' is not reached by any route (the entry node is 'edge')"),  # every node read: the graph
        (19, 11, "host 0.0.0.0 listens on every network interface: other machines could reach this node"),
        (21, 15, f"module 'no_such_module_here' cannot be found by {check.problems[4].message.split(' by ')[1]}"),
    ]
    assert all(p.hint and p.file == file for p in check.problems)
    # the loader's API for every other caller is unchanged: it stops at the schema's batch
    with pytest.raises(ProfileError) as exc:
        load_profile_text(MANY_PROBLEMS, file)
    assert [p.line for p in exc.value.problems] == [13]


def test_collect_problems_runs_every_cross_node_rule_once_the_schema_accepts(tmp_path: Path) -> None:
    text = MANY_PROBLEMS.replace("workers: lots", "workers: 2").replace("to: app", "to: nowhere")
    check = collect_problems(text, tmp_path / "p.yaml")
    assert check.profile is not None  # drawable, though not startable
    messages = [p.message for p in check.problems]
    assert messages[0] == "route '/' goes to unknown node 'nowhere'"
    assert "port 8080 is already used by node 'edge'" in messages
    assert any(m.startswith("module 'no_such_module_here'") for m in messages)  # files checked too
    with pytest.raises(ProfileError) as exc:  # the loader stops before the file checks
        load_profile_text(text, tmp_path / "p.yaml")
    assert not any(p.message.startswith("module") for p in exc.value.problems)


def test_a_bad_route_option_hides_not_the_nodes_port_and_makes_no_false_route_problems() -> None:
    entry = next(e for e in BUILTINS if e.name == "nginx-split")
    text = entry.path.read_text().replace("- path: /api", "- path: api").replace("port: 8081", "port: 8080")
    check = collect_problems(text, entry.path)
    assert [(p.line, p.message.split(":")[0]) for p in check.problems] == [
        (11, "nodes.edge.routes.0.path"), (17, "port 8080 is already used by node 'edge'")]
    # the route left out to read the node is not "app is not reached by any route"


def test_collect_problems_checks_the_graph_when_only_top_level_keys_are_wrong(tmp_path: Path) -> None:
    text = MANY_PROBLEMS.replace("name: many\n", "").replace("workers: lots", "workers: 2").replace(
        "to: app", "to: nowhere")
    check = collect_problems(text, tmp_path / "p.yaml", check_files=False)
    messages = [p.message for p in check.problems]
    assert messages[0] == "missing required key 'name' in the profile"
    assert "route '/' goes to unknown node 'nowhere'" in messages
    assert "port 8080 is already used by node 'edge'" in messages
    assert not any(m.startswith("module") for m in messages)  # check_files=False is honoured


def test_collect_problems_stops_at_a_yaml_syntax_error_with_its_place(tmp_path: Path) -> None:
    check = collect_problems("version: 1\nnodes:\n  app: [unclosed\n", tmp_path / "p.yaml")
    assert len(check.problems) == 1 and check.problems[0].line == 4
    assert check.problems[0].message.startswith("not valid YAML")


@pytest.mark.parametrize("entry", BUILTINS, ids=lambda e: e.name)
def test_collect_problems_accepts_every_builtin(entry) -> None:
    check = collect_problems(entry.path.read_text(), entry.path)
    assert check.ok, check.problems


# ---------------------------------------------------------------- the user's library


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return user_dir()


@pytest.mark.parametrize("bad", ["", "../up", "a/b", "a\\b", ".hidden", "with space", "x" * 65])
def test_profile_names_carry_no_paths(bad: str) -> None:
    with pytest.raises(LibraryError, match="cannot name a profile"):
        check_profile_name(bad)
    assert check_profile_name("my-stack.v2.yaml") == "my-stack.v2"


def test_new_duplicate_rename_delete_in_the_user_dir(library: Path) -> None:
    blank = create_profile("mine", blank_profile_text("mine"))
    assert blank.path == library / "mine.yaml" and not blank.builtin
    assert collect_problems(blank.path.read_text(), blank.path).ok  # a new profile runs as it is
    with pytest.raises(ProfileExists):
        create_profile("mine", "version: 1\n")
    assert blank.path.read_text() == blank_profile_text("mine")  # not overwritten without asking
    builtin = next(e for e in BUILTINS if e.name == "nginx-uvicorn")
    assert copy_name(builtin.name) == "nginx-uvicorn-copy"
    copy = create_profile(copy_name(builtin.name), builtin.path.read_text())
    assert copy_name(builtin.name) == "nginx-uvicorn-copy-2"
    with pytest.raises(ProfileExists):
        rename_profile(copy, "mine")
    renamed = rename_profile(copy, "renamed")
    assert not copy.path.exists() and renamed.path.read_text() == builtin.path.read_text()
    save_profile(renamed, "version: 1\n")
    assert renamed.path.read_text() == "version: 1\n"
    replaced = rename_profile(renamed, "mine", overwrite=True)
    assert replaced.path.read_text() == "version: 1\n"
    delete_profile(replaced)
    assert sorted(p.name for p in library.iterdir()) == []
    assert entry_for_path("x", builtin.path) == builtin


def test_a_file_outside_the_library_is_saved_in_place_but_not_renamed_or_deleted(library: Path,
                                                                                 tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "mine.yaml"
    outside.parent.mkdir()
    outside.write_text("version: 1\n")
    entry = entry_for_path("mine", outside)
    assert not entry.builtin
    save_profile(entry, "version: 1\nname: x\n")
    assert outside.read_text() == "version: 1\nname: x\n"
    for op in (lambda: rename_profile(entry, "other"), lambda: delete_profile(entry)):
        with pytest.raises(LibraryError, match="not in your profiles"):
            op()
    assert outside.is_file() and not (library / "other.yaml").exists()


def test_builtins_are_read_only(library: Path) -> None:
    builtin = BUILTINS[0]
    before = builtin.path.read_text()
    for op in (lambda: save_profile(builtin, "x"), lambda: rename_profile(builtin, "x"),
               lambda: delete_profile(builtin)):
        with pytest.raises(LibraryError, match="duplicate it"):
            op()
    assert builtin.path.read_text() == before


def test_rebase_paths_makes_a_copys_relative_paths_mean_what_they_meant(tmp_path: Path) -> None:
    entry = next(e for e in BUILTINS if e.name == "nginx-split")
    text = entry.path.read_text()
    doc = ProfileDocument(text)
    assert doc.relative_paths() == ["../apps/site", "../resources/profile.schema.json"]
    copy = tmp_path / "copy.yaml"
    assert not collect_problems(text, copy).ok  # ../apps/site from tmp_path is nowhere
    doc.rebase_paths(entry.path.parent)
    assert doc.relative_paths() == []
    removed, added = changed_lines(text, doc.text)
    assert removed == ["# yaml-language-server: $schema=../resources/profile.schema.json",
                       "        static: ../apps/site"]
    site = (entry.path.parent / "../apps/site").resolve()
    assert added == [f"# yaml-language-server: $schema={(entry.path.parent.parent / 'resources').as_uri()}"
                     "/profile.schema.json", f"        static: {site}"]
    assert collect_problems(doc.text, copy).ok


@pytest.mark.parametrize("text", [HANDWRITTEN, next(e for e in BUILTINS if e.name == "nginx-uvicorn").path.read_text()],
                         ids=["handwritten", "builtin"])
def test_a_document_kept_between_edits_writes_what_fresh_documents_write(text: str) -> None:
    """The parse and dump kept for the editor's next edit (prepared on the read queue) change nothing."""
    kept = ProfileDocument(text)
    kept.prepare()
    steps = [lambda d: d.add_node("nginx", name="front"), lambda d: d.set_workers("front", 2),
             lambda d: d.set_route("front", "/x", to="app"), lambda d: d.set_port("app", 20002)]
    expected = text
    for step in steps:
        step(kept)
        fresh = ProfileDocument(expected)
        step(fresh)
        expected = fresh.text
        assert kept.text == expected
    kept.text = kept.text.replace("port: 20002", "port: 20003")  # typed by the user in between
    kept.set_workers("app", 5)
    profile = load_profile_text(kept.text, Path("/tmp/p.yaml"), check_files=False)
    assert profile.nodes["app"].port == 20003 and profile.nodes["app"].workers == 5
    assert profile.nodes["front"].workers == 2 and profile.entry == "front"


def test_edits_keep_anchors_aliases_and_merge_keys() -> None:
    text = """\
version: 1
name: merged
nodes:
  a: &app   # the template
    kind: uvicorn
    port: 8000
    workers: 2
    app: &demo {module: "stackpanel.apps.fastapi_demo:app"}
  b:
    <<: *app
    port: 8001
  c:
    kind: gunicorn
    port: 8002
    app: *demo
"""
    doc = ProfileDocument(text)
    doc.set_workers("b", 5)  # b's workers came from the merge: b gets its own
    doc.set_port("a", 8100)
    removed, added = changed_lines(text, doc.text)
    assert removed == ["    port: 8000"]
    assert added == ["    port: 8100", "    workers: 5"]
    profile = collect_problems(doc.text, Path("/tmp/p.yaml"), check_files=False).profile  # 3 entries: drawable
    assert profile is not None and [profile.nodes[n].workers for n in "abc"] == [2, 5, 1]
    assert profile.nodes["b"].port == 8001 and profile.nodes["c"].app.module.endswith("fastapi_demo:app")
