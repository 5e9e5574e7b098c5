"""`stackpanel trust`: shows every change, asks, applies it with the real certutil and
update-ca-certificates (into a private system store and a temporary HOME), and --remove undoes it."""
from __future__ import annotations

import argparse
import functools
from pathlib import Path

import pytest

from stackpanel import trust_command
from stackpanel.core.tls import SystemStore, trust_plan, trust_status

pytestmark = pytest.mark.integration


@pytest.fixture
def private_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    home = tmp_path / "home"
    (home / ".pki" / "nssdb").mkdir(parents=True)
    store = SystemStore.debian(root=tmp_path / "system")
    monkeypatch.setattr(trust_command, "trust_plan", functools.partial(trust_plan, home=home, system=store))
    monkeypatch.setattr(trust_command, "trust_status", functools.partial(trust_status, home=home, system=store))
    return home


def _args(**kw: bool) -> argparse.Namespace:
    return argparse.Namespace(**{"remove": False, "status": False, "yes": False, **kw})


def test_trust_asks_applies_and_removes(private_stores: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert trust_command.cmd_trust(_args(), ask=lambda _q: "n") == 1
    out = capsys.readouterr().out
    assert "This will add stackpanel's local CA to:" in out and "nssdb" in out and "nothing changed" in out
    assert not trust_command.trust_status().trusted

    assert trust_command.cmd_trust(_args(), ask=lambda _q: "y") == 0
    assert trust_command.trust_status().trusted
    assert trust_command.cmd_trust(_args(status=True)) == 0
    capsys.readouterr()
    assert trust_command.cmd_trust(_args()) == 0
    assert "every store already trusts the CA" in capsys.readouterr().out

    assert trust_command.cmd_trust(_args(remove=True, yes=True)) == 0
    assert not trust_command.trust_status().trusted
    capsys.readouterr()
    assert trust_command.cmd_trust(_args(remove=True, yes=True)) == 0
    assert "the CA is in no store" in capsys.readouterr().out
