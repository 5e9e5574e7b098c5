"""No file, however broken or hostile, produces anything but a located ProfileError.

Each case below crashed `stackpanel validate` with a traceback (or ran for minutes) before the
reader put limits on what a profile can be.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stackpanel.core.errors import ProfileError
from stackpanel.core.profiles.library import resolve_profile
from stackpanel.core.profiles.loader import load_profile, load_profile_text
from stackpanel.core.profiles.yamlsource import MAX_DEPTH, MAX_PROFILE_BYTES

GOOD = """\
version: 1
name: test
nodes:
  web:
    kind: nginx
    port: 18080
    routes:
      - {path: /api, to: app}
  app:
    kind: uvicorn
    port: 18000
    app: {module: stackpanel.apps.fastapi_demo:app}
"""


def located(text: str | bytes, tmp_path: Path) -> list[tuple[int, int, str, str]]:
    path = tmp_path / "p.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError) as info:
        load_profile(path, check_files=False)
    return [(p.line, p.column, p.message, p.hint) for p in info.value.problems]


def test_unknown_tag_is_located(tmp_path: Path) -> None:
    [(line, col, message, hint)] = located(GOOD.replace("name: test", "name: !secret test"), tmp_path)
    assert (line, col) == (2, 7)
    assert "!secret" in message and "without a `!tag`" in hint


def test_python_object_tag_is_refused_not_constructed(tmp_path: Path) -> None:
    [(line, _col, message, _)] = located(GOOD.replace("name: test", "name: !!python/object/apply:os.system [id]"),
                                         tmp_path)
    assert line == 2 and "python/object" in message


def test_merge_keys_work_like_yaml_says(tmp_path: Path) -> None:
    text = textwrap.dedent("""\
        version: 1
        name: merged
        nodes:
          web:
            kind: nginx
            port: 18080
            routes: [{path: /api, to: app}, {path: /v2, to: app2}]
          app: &appserver
            kind: uvicorn
            port: 18000
            workers: 3
            app: {module: stackpanel.apps.fastapi_demo:app}
          app2:
            workers: 2
            <<: *appserver
            port: 18001
        """)
    nodes = load_profile_text(text, tmp_path / "p.yaml", check_files=False).nodes
    assert (nodes["app2"].kind, nodes["app2"].port, nodes["app2"].app.module) == (
        "uvicorn", 18001, "stackpanel.apps.fastapi_demo:app")
    assert nodes["app2"].workers == 2  # an explicit key wins over the merged one, wherever it stands
    problems = located(text.replace("    port: 18001", "    port: 18001\n    wokers: 1"), tmp_path)
    assert [(p[0], p[2]) for p in problems] == [(17, "unknown key 'wokers' in nodes.app2")]


def test_merge_of_a_list_first_wins(tmp_path: Path) -> None:
    text = GOOD.replace("    app: {module: stackpanel.apps.fastapi_demo:app}",
                        "    app: {module: stackpanel.apps.fastapi_demo:app}\n    <<: [{workers: 4}, {workers: 7}]")
    assert load_profile_text(text, tmp_path / "p.yaml", check_files=False).nodes["app"].workers == 4


def test_merge_of_a_scalar_is_located(tmp_path: Path) -> None:
    text = GOOD.replace("    port: 18000", "    port: 18000\n    <<: 5")
    [(line, _c, message, _h)] = located(text, tmp_path)
    assert line == 12 and "`<<:` merges a mapping" in message


def test_nul_byte_is_located(tmp_path: Path) -> None:
    [(line, col, message, _)] = located(GOOD.replace("name: test", "name: te\x00st"), tmp_path)
    assert (line, col) == (2, 9) and "control character 0x0000" in message


def test_non_utf8_is_located(tmp_path: Path) -> None:
    data = GOOD.replace("name: test", "name: caf\xe9").encode("latin-1")
    [(line, col, message, hint)] = located(data, tmp_path)
    assert (line, col) == (2, 10) and "not UTF-8" in message and "UTF-8" in hint


def test_deep_nesting_is_located(tmp_path: Path) -> None:
    [(line, col, message, _)] = located("version: 1\nname: " + "[" * 50_000 + "]" * 50_000 + "\n", tmp_path)
    assert line == 2 and col == 7 + MAX_DEPTH - 1 and "nested more than" in message


def test_huge_integer_is_located(tmp_path: Path) -> None:
    [(line, col, message, _)] = located(GOOD.replace("port: 18080", "port: " + "9" * 5000), tmp_path)
    assert (line, col) == (6, 11) and "usable number" in message


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    [(line, _c, message, _)] = located("\n".join(lines) + "\n", tmp_path)
    assert "expands to more than" in message and line >= 1


def test_large_file_is_refused_before_parsing(tmp_path: Path) -> None:
    big = GOOD + "#" + "x" * (MAX_PROFILE_BYTES + 10) + "\n"
    [(line, _c, message, hint)] = located(big, tmp_path)
    assert line == 1 and "larger than 256 KiB" in message and "right file" in hint


def test_long_scalar_is_located(tmp_path: Path) -> None:
    [(line, _c, message, _)] = located(GOOD.replace("name: test", "name: " + "x" * 20_000), tmp_path)
    assert line == 2 and "20,000 characters" in message


def test_two_documents_are_located(tmp_path: Path) -> None:
    [(line, _c, message, hint)] = located(GOOD + "---\nversion: 1\n", tmp_path)
    assert line == 13 and "more than one YAML document" in message and "one profile per file" in hint


def test_a_directory_and_a_long_name_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="this is a directory"):
        load_profile(tmp_path)
    long_name = tmp_path / ("p" * 300 + ".yaml")
    with pytest.raises(ProfileError, match="cannot read the profile: File name too long"):
        load_profile(long_name)
    with pytest.raises(ProfileError, match="no such profile file or profile name"):
        resolve_profile(str(long_name))


def test_non_mapping_nodes_and_keys_are_located(tmp_path: Path) -> None:
    for text, expect in [
        ("version: 1\nname: x\nnodes: [1, 2]\n", "nodes"),
        ("version: 1\nname: x\nnodes: {web: [1]}\n", "nodes.web"),
        ("version: 1\nname: x\n? [a, b]\n: 1\nnodes: {}\n", "plain word"),
        ("version: 1\nname: x\nnodes: {web: {kind: [nginx]}}\n", "kind"),
    ]:
        problems = located(text, tmp_path)
        assert problems and all(p[0] >= 1 for p in problems), text
        assert any(expect in p[2] for p in problems), (text, problems)


# ------------------------------------------------------------------ fuzz over whole documents

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
                     st.sampled_from(["nginx", "apache", "uvicorn", "gunicorn", "/api", "app", "127.0.0.1", "::1",
                                      "0.0.0.0", "fe80::1%eth0;", "~nouser/x", "a" * 300, "/", "..", "yes"]))
_keys = st.sampled_from(["version", "name", "nodes", "web", "app", "kind", "port", "host", "routes", "path", "to",
                         "static", "module", "env", "workers", "readiness_probe", "http_get", "expose",
                         "server_names", "python", "working_dir", "threads", "follow_symlinks", "x"])
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(_keys, inner, max_size=5)),
                       max_leaves=25)
_documents = st.dictionaries(_keys, _values, max_size=5).map(
    lambda d: {"version": 1, "name": "fuzz", **d})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_documents)
def test_any_yaml_document_loads_or_is_a_located_error(tmp_path: Path, doc: dict) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True)
    try:
        load_profile_text(text, tmp_path / "fuzz.yaml")
    except ProfileError as exc:
        assert exc.problems and all(p.line >= 1 and p.column >= 1 for p in exc.problems), exc


_yamlish = st.lists(st.sampled_from(["version: 1\n", "name: x\n", "nodes:\n", "  web:\n", "    kind: nginx\n",
                                     "    port: 1\n", "- ", "  ", "&a ", "*a ", "<<: ", "!t ", "!!str ", "[", "]",
                                     "{", "}", ",", ": ", "? ", "'", '"', "\t", "\x00", "\ufeff", "%YAML 1.1\n",
                                     "---\n", "...\n", "#c\n", "|\n", ">-\n", "\\", "\x85", "\u2028", "0x1F",
                                     "1e999", "9" * 30, ".inf", "~", "null", "2001-12-14", "\n"]),
                    max_size=40).map("".join)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(_yamlish, st.text(max_size=200)))
def test_any_text_loads_or_is_a_profile_error(tmp_path: Path, text: str) -> None:
    try:
        load_profile_text(text, tmp_path / "fuzz.yaml")
    except ProfileError as exc:
        assert exc.problems, text
