"""At the command line, a hostile or broken file is a located message and exit 1, never a
traceback; exposure is warned about; the schema and trust commands answer."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from stackpanel.cli import main

CASES = {
    "nul.yaml": b"version: 1\nname: a\x00b\n",
    "latin1.yaml": "version: 1\nname: caf\xe9\n".encode("latin-1"),
    "tag.yaml": b"version: 1\nname: !secret x\n",
    "deep.yaml": b"version: 1\nname: " + b"[" * 20000 + b"]" * 20000 + b"\n",
    "bigint.yaml": b"version: 1\nname: x\nnodes: {a: {kind: uvicorn, port: " + b"9" * 5000 + b"}}\n",
    "bomb.yaml": ("a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{n}: &{n} [{','.join(['*' + p] * 9)}]\n" for p, n in zip("abcde", "bcdef", strict=True))).encode(),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_validate_locates_every_broken_file(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / name
    path.write_bytes(CASES[name])
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:" in err and "Traceback" not in err and "fix:" in err


def test_validate_a_name_too_long_and_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / ("x" * 300)), str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "2 of 2 profile(s) have problems" in err


def test_validate_warns_about_exposed_nodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "exposed.yaml"
    path.write_text("version: 1\nname: x\nnodes:\n  app:\n    kind: uvicorn\n    port: 18000\n    host: 0.0.0.0\n"
                    "    expose: true\n    app: {module: stackpanel.apps.fastapi_demo:app}\n")
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr()
    assert "ok  " in out.out and "warning: node 'app' listens on every network interface" in out.err


def test_schema_prints_draft_07(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["$schema"] == "http://json-schema.org/draft-07/schema#"


def test_validate_reports_every_problem_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A schema problem in one node does not hide a port clash with another (the editor's check)."""
    path = tmp_path / "two.yaml"
    path.write_text("version: 1\nname: two problems\nnodes:\n"
                    "  web: {kind: nginx, port: 8080, routes: [{path: /, to: app}]}\n"
                    "  app: {kind: uvicorn, port: 8080, wokers: 2, app: {module: stackpanel.apps.fastapi_demo:app}}\n")
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:5:" in err and "unknown key 'wokers'" in err
    assert "port 8080 is already used by node 'web'" in err


def test_bench_targets_load_the_app_route_unless_told(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A profile's probe path can be one the proxy answers itself (nginx-uvicorn's is its static
    index page, 20,000 req/s): the targets measure /api/hello through every tier."""
    from stackpanel.core.bench import targets

    seen: list[str] = []

    def fake(**kwargs):
        seen.append(kwargs["path"])
        raise SystemExit(0)

    monkeypatch.setattr(targets, "run_targets", fake)
    for argv in (["bench", "--wrk"], ["bench", "--wrk", "--path", "/api/pid"]):
        with pytest.raises(SystemExit):
            main(argv)
    assert seen == ["/api/hello", "/api/pid"]
