"""The .deb, built for real with Debian's tools, checked with Debian's tools (`-m packaging`)."""
from __future__ import annotations

import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.packaging.conftest import run_script

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(1200)]

OWN_PATHS = re.compile(r"^\./(opt/stackpanel(/.*)?|usr/bin/stackpanel|usr/share/applications/stackpanel\.desktop"
                       r"|usr/share/icons/hicolor/[^/]+/apps/stackpanel\.(png|svg)|usr/share/doc/stackpanel(/.*)?"
                       r"|usr/share/man/man1/stackpanel\.1\.gz|usr/share/lintian/overrides/stackpanel)$")


def contents(deb: Path) -> list[tuple[str, str]]:
    """(path, link target or "") of every entry of the data archive."""
    out = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        name = line.split(None, 5)[5]
        target = ""
        if " -> " in name:
            name, target = name.split(" -> ", 1)
        rows.append((name.rstrip("/"), target))
    return rows


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.parametrize("script", ["build-deb", "build-bundle", "test-install"])
def test_each_entry_point_explains_itself(script: str) -> None:
    r = run_script(script, "--help", timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"usage: packaging/{script}" in r.stdout


def test_control_depends_on_the_servers_python_and_qt_libraries(deb: Path) -> None:
    depends = {d.strip().split()[0] for d in field(deb, "Depends").split(",")}
    assert {"python3", "python3.11", "nginx", "apache2", "libxcb-cursor0", "libxkbcommon-x11-0", "libegl1",
            "libfontconfig1", "fonts-dejavu-core"} <= depends
    assert field(deb, "Package") == "stackpanel"
    assert field(deb, "Architecture") == subprocess.run(["dpkg", "--print-architecture"], capture_output=True,
                                                        text=True).stdout.strip()
    assert "workshop-hello" in field(deb, "Description")


def test_files_only_under_its_own_paths_and_no_bytecode(deb: Path) -> None:
    rows = contents(deb)
    shared_dirs = {"./usr", "./usr/bin", "./usr/share", "./usr/share/applications", "./usr/share/icons",
                   "./usr/share/icons/hicolor", "./usr/share/doc", "./usr/share/man", "./usr/share/man/man1",
                   "./usr/share/lintian", "./usr/share/lintian/overrides", "./opt", "."}
    icon_dirs = re.compile(r"^\./usr/share/icons/hicolor/[^/]+(/apps)?$")
    own = [p for p, _ in rows if p not in shared_dirs and not icon_dirs.match(p)]
    outside = [p for p in own if not OWN_PATHS.match(p)]
    assert not outside, outside[:10]
    assert not [p for p, _ in rows if "__pycache__" in p or p.endswith(".pyc")], "postinst compiles, not the package"
    links = dict(rows)
    assert links["./usr/bin/stackpanel"] == "/opt/stackpanel/venv/bin/stackpanel"
    assert {"./usr/share/icons/hicolor/scalable/apps/stackpanel.svg",
            "./usr/share/icons/hicolor/48x48/apps/stackpanel.png"} <= set(links)


def test_venv_is_made_by_the_targets_python(deb: Path, tmp_path: Path) -> None:
    """Debian 12's /usr/bin/python3.11, not whatever python runs the build on this machine."""
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    venv = tmp_path / "opt/stackpanel/venv"
    cfg = (venv / "pyvenv.cfg").read_text()
    assert re.search(r"^home = /usr/bin$", cfg, re.M), cfg
    assert re.search(r"^version = 3\.11\.\d+$", cfg, re.M), cfg
    assert str((venv / "bin/python").readlink()) in ("python3.11", "/usr/bin/python3.11", "python3")
    lock = (tmp_path / "opt/stackpanel/requirements.lock").read_text()
    assert "PySide6_Essentials==6.11.3" in lock.replace("-", "_") or "PySide6-Essentials==6.11.3" in lock
    site = venv / "lib/python3.11/site-packages"
    assert (site / "humanize").is_dir(), "the workshop's requirements are baked in"
    assert not (site / "PySide6/Qt/qml").exists(), "packaging/prune.txt applied"
    workshop = venv / "share/stackpanel/workshop"
    assert (workshop / "workshop-hello.yaml").is_file() and (workshop / "hello_app.py").is_file()


def test_lintian_clean_with_justified_overrides(deb: Path) -> None:
    r = subprocess.run(["nice", "lintian", "--tag-display-limit", "0", "--fail-on", "none", str(deb)],
                       capture_output=True, text=True, timeout=1100)
    problems = [line for line in r.stdout.splitlines() if re.match(r"^[EW]: ", line)]
    assert not problems, "\n".join(problems[:40])
    overrides = (Path(__file__).resolve().parents[2] / "packaging/debian/lintian-overrides").read_text()
    blocks = [b for b in overrides.split("\n\n") if re.search(r"^stackpanel: ", b, re.M)]
    assert all(re.search(r"^# ", b, re.M) for b in blocks), "every override says why"


def test_desktop_entry_valid_and_names_the_window_class(deb: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    desktop = tmp_path / "usr/share/applications/stackpanel.desktop"
    r = subprocess.run(["desktop-file-validate", str(desktop)], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr
    text = desktop.read_text()
    assert "StartupWMClass=stackpanel" in text and "Icon=stackpanel" in text and "Exec=stackpanel" in text


def test_bundle_holds_install_sh_checksums_and_the_deb(bundle: Path, deb: Path) -> None:
    with tarfile.open(bundle) as tf:
        names = tf.getnames()
        top = names[0].split("/")[0]
        assert {f"{top}/install.sh", f"{top}/SHA256SUMS", f"{top}/debs/{deb.name}"} <= set(names)
        assert tf.getmember(f"{top}/install.sh").mode & 0o111
        debs = [n for n in names if n.endswith(".deb")]
    assert any("/nginx_" in n for n in debs) and any("/apache2_" in n for n in debs)
    assert len(debs) > 50  # a minbase root lacks Qt's X libraries, the servers, python3
