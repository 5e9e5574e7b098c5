"""Fixtures that build the real .deb and bundle once per session (minutes; `-m packaging`)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
WORKSHOP = PACKAGING / "example-workshop"


def run_script(name: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run packaging/NAME with this interpreter (its PySide6 draws the PNG icons and the screenshot)."""
    return subprocess.run([sys.executable, str(PACKAGING / name), *args], capture_output=True, text=True,
                          timeout=timeout)


def _check(r: subprocess.CompletedProcess[str], what: str) -> str:
    assert r.returncode == 0, f"{what} failed (exit {r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-6000:]}"
    return r.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dist")


@pytest.fixture(scope="session")
def deb(dist: Path) -> Path:
    """The package, with the example workshop baked in, built as a user would build it."""
    # gzip -6 instead of the release default xz -6: same contents, minutes less of compressing here.
    out = _check(run_script("build-deb", "--workshop", str(WORKSHOP), "--out", str(dist), "--compression", "gzip",
                            "--level", "6"), "build-deb")
    path = Path(out)
    assert path.is_file() and path.suffix == ".deb"
    return path


@pytest.fixture(scope="session")
def bundle(deb: Path, dist: Path) -> Path:
    path = Path(_check(run_script("build-bundle", "--deb", str(deb), "--out", str(dist)), "build-bundle"))
    assert path.is_file() and path.name.endswith(".tar")
    return path
