"""Server discovery on this machine (Debian 12 with nginx 1.22 and apache2 2.4) and install hints."""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackpanel.core import discovery
from stackpanel.core.discovery import (
    ApacheModuleError,
    Platform,
    detect_platform,
    find_apache,
    find_nginx,
    format_report,
    install_hint,
    module_importable,
    python_env,
    run_doctor,
)
from stackpanel.core.errors import RenderError, StackpanelError

REPO = Path(__file__).resolve().parents[2]
# The venv's python under another name: same environment, but queried in a subprocess.
OTHER_SPELLING = Path(sys.executable).parent / ("python3" if Path(sys.executable).name != "python3" else "python")


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    discovery.clear_cache()
    yield
    discovery.clear_cache()


@pytest.fixture
def empty_path(tmp_path: Path) -> str:
    d = tmp_path / "empty-bin"
    d.mkdir()
    return str(d)


def write_os_release(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "os-release"
    p.write_text(text)
    return p


# --------------------------------------------------------------------------- real machine


def test_finds_real_nginx_with_version() -> None:
    nginx = find_nginx()
    assert nginx is not None
    assert nginx.path.is_file()
    assert nginx.version.startswith("1.22."), nginx.version
    assert nginx.mime_types is not None and nginx.mime_types.is_file()
    assert nginx.has_configure_flag("--with-http_stub_status_module")


def test_finds_real_apache_with_modules() -> None:
    apache = find_apache()
    assert apache is not None
    assert apache.path.name in ("apache2", "httpd")
    assert apache.version.startswith("2.4."), apache.version
    assert apache.modules_dir is not None and apache.modules_dir.is_dir()
    assert "log_config" in apache.compiled_in
    assert "core" in apache.compiled_in
    assert "proxy_http" in apache.available
    assert apache.has_module("mod_proxy_http.so") and apache.has_module("proxy_http_module")
    assert apache.module_path("log_config") is None  # compiled in: nothing to load
    assert apache.mime_types is not None and apache.mime_types.is_file()


def test_discovery_is_cached_until_cleared() -> None:
    first = find_apache()
    assert find_apache() is first
    discovery.clear_cache()
    second = find_apache()
    assert second is not first and second == first


def test_load_module_lines_for_known_modules() -> None:
    apache = find_apache()
    assert apache is not None
    wanted = ["mpm_event", "unixd", "authz_core", "log_config", "mime", "dir", "alias", "env",
              "setenvif", "headers", "unique_id", "proxy", "proxy_http", "proxy"]
    lines = apache.load_module_lines(wanted)
    modules_dir = apache.modules_dir
    assert modules_dir is not None
    assert f"LoadModule proxy_http_module {modules_dir}/mod_proxy_http.so" in lines
    assert f"LoadModule mpm_event_module {modules_dir}/mod_mpm_event.so" in lines
    # compiled-in modules are skipped, duplicates written once, order kept
    assert not any("log_config" in line for line in lines)
    for compiled in apache.compiled_in:
        assert not any(line.startswith(f"LoadModule {compiled}_module ") for line in lines)
    assert sum("proxy_module " in line for line in lines) == 1
    names = [line.split()[1] for line in lines]
    assert names.index("proxy_module") < names.index("proxy_http_module")
    for line in lines:
        assert Path(line.split()[2]).is_file()


def test_load_module_lines_error_for_unknown_module() -> None:
    apache = find_apache()
    assert apache is not None
    with pytest.raises(ApacheModuleError) as err:
        apache.load_module_lines(["proxy", "proxy_htp", "no_such_thing"])
    assert err.value.missing == ("proxy_htp", "no_such_thing")
    text = str(err.value)
    assert "proxy_htp" in text and "no_such_thing" in text
    assert "did you mean proxy_http" in text
    assert "apt-get install -y --reinstall apache2" in text  # this machine is Debian
    assert isinstance(err.value, RenderError) and isinstance(err.value, StackpanelError)


def test_doctor_names_missing_optional_apache_modules_without_failing(monkeypatch: pytest.MonkeyPatch) -> None:
    """An Apache without the balancer's and TLS modules (RHEL ships mod_ssl apart) stays usable, and
    the doctor says which profile keys would need what."""
    from stackpanel.core.discovery import doctor

    info = find_apache()
    assert info is not None
    lacking = dataclasses.replace(info, available=info.available - {"proxy_balancer", "ssl"})
    monkeypatch.setattr(doctor, "find_apache", lambda search_path=None: lacking)
    report = run_doctor({"apache"})
    status = report.get("apache")
    assert status.usable and report.ok, format_report(report)
    optional = dict(status.details)["optional modules"]
    assert optional == "missing: proxy_balancer (for balanced routes (to: [a, b])), ssl (for tls)"


def test_missing_module_hint_on_rhel() -> None:
    apache = find_apache()
    assert apache is not None
    rhel = Platform(family="rhel", os_id="fedora", name="Fedora", is_root=False)
    with pytest.raises(ApacheModuleError) as err:
        dataclasses.replace(apache, platform=rhel, available=frozenset()).load_module_lines(["ssl", "proxy"])
    assert "sudo dnf install -y mod_ssl" in str(err.value)
    assert "sudo dnf install -y httpd" in str(err.value)


def test_real_doctor_report_is_ok() -> None:
    report = run_doctor()
    assert report.ok, format_report(report)
    assert (report.get("nginx").version or "").startswith("1.22.")
    assert report.get("apache").usable
    assert dict(report.get("apache").details)["modules dir"] == str(find_apache().modules_dir)  # type: ignore[union-attr]
    # Debian's apache2 has every module a profile may ask for (balancers, gzip, TLS, mpm: worker)
    assert dict(report.get("apache").details)["optional modules"] == "all present"
    assert report.get("gunicorn").found and report.get("uvicorn").found and report.get("uvicorn_worker").found
    text = format_report(report)
    assert "all needed components are ready" in text
    assert "log_config" in text  # compiled-in modules are listed
    # aligned: every status column starts at the same offset
    rows = [line for line in text.splitlines() if line.split(" ")[0] in discovery.COMPONENT_ORDER]
    assert len(rows) == len(discovery.COMPONENT_ORDER)
    offsets = {line.index(" ok ") for line in rows}
    assert len(offsets) == 1


# --------------------------------------------------------------------------- missing things


def test_missing_binaries_give_install_hints_and_not_ok(empty_path: str, tmp_path: Path) -> None:
    os_release = write_os_release(tmp_path, 'ID=ubuntu\nID_LIKE=debian\nPRETTY_NAME="Ubuntu 24.04"\n')
    assert find_nginx(empty_path) is None
    assert find_apache(empty_path) is None
    report = run_doctor({"nginx", "uvicorn"}, search_path=empty_path, os_release=os_release)
    assert not report.ok
    assert [c.component for c in report.problems] == ["nginx"]
    nginx = report.get("nginx")
    assert not nginx.found and nginx.needed
    expected = "apt-get install -y nginx" if os.geteuid() == 0 else "sudo apt-get install -y nginx"
    assert nginx.install_hint == expected
    apache = report.get("apache")
    assert not apache.found and not apache.needed  # missing but not needed: still ok for it
    text = format_report(report)
    assert "MISSING" in text and f"install: {expected}" in text
    assert "not ready: nginx" in text


def test_only_needed_components_decide_ok(empty_path: str) -> None:
    assert run_doctor({"gunicorn", "uvicorn"}, search_path=empty_path).ok
    assert not run_doctor({"apache"}, search_path=empty_path).ok


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown component"):
        run_doctor({"lighttpd"})  # type: ignore[arg-type]


def test_python_without_packages_gets_pip_hint(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    # An "interpreter" that answers the query like a Python with nothing installed.
    answer = json.dumps({"version": "3.12.1", "executable": str(fake), "packages": {}})
    fake.write_text(f"#!/bin/sh\necho '{answer}'\n")
    fake.chmod(0o755)
    report = run_doctor({"gunicorn"}, python=fake)
    assert report.get("python").found and report.get("python").version == "3.12.1"
    gunicorn = report.get("gunicorn")
    assert not gunicorn.found and not report.ok
    assert gunicorn.install_hint == f"{fake} -m pip install gunicorn"
    assert report.get("uvicorn").install_hint == f"{fake} -m pip install 'uvicorn[standard]'"


def test_nonexistent_python_is_reported(tmp_path: Path) -> None:
    report = run_doctor({"uvicorn"}, python=tmp_path / "nope" / "python")
    assert not report.ok
    assert not report.get("python").found
    assert "no executable Python interpreter" in report.get("python").problem


def test_other_interpreter_is_queried_in_a_subprocess() -> None:
    here = python_env()
    other = python_env(OTHER_SPELLING)
    assert other.python == str(OTHER_SPELLING)
    assert other.found and other.version == here.version
    assert other.packages == here.packages
    assert here.package_version("gunicorn") is not None


# --------------------------------------------------------------------------- install hints


@pytest.mark.parametrize(
    ("text", "family", "nginx", "apache"),
    [
        ('ID=debian\nVERSION_ID="12"\n', "debian", "apt-get install -y nginx", "apt-get install -y apache2"),
        ('ID=ubuntu\nID_LIKE=debian\n', "debian", "apt-get install -y nginx", "apt-get install -y apache2"),
        ('ID=linuxmint\nID_LIKE="ubuntu debian"\n', "debian", "apt-get install -y nginx",
         "apt-get install -y apache2"),
        ('ID="rhel"\nID_LIKE="fedora"\n', "rhel", "dnf install -y nginx", "dnf install -y httpd"),
        ("ID=fedora\n", "rhel", "dnf install -y nginx", "dnf install -y httpd"),
        ('ID="rocky"\nID_LIKE="rhel centos fedora"\n', "rhel", "dnf install -y nginx", "dnf install -y httpd"),
        ('ID="almalinux"\nID_LIKE="rhel centos fedora"\n', "rhel", "dnf install -y nginx",
         "dnf install -y httpd"),
        ("ID=arch\n", "arch", "pacman -S --noconfirm nginx", "pacman -S --noconfirm apache"),
        ("ID=alpine\n", "alpine", "apk add nginx", "apk add apache2"),
    ],
)
@pytest.mark.parametrize("root", [True, False])
def test_install_hints_per_os_release(tmp_path: Path, text: str, family: str, nginx: str, apache: str,
                                      root: bool) -> None:
    plat = detect_platform(write_os_release(tmp_path, text), sys_platform="linux", is_root=root)
    assert plat.family == family
    sudo = "" if root else "sudo "
    assert install_hint("nginx", plat) == sudo + nginx
    assert install_hint("apache", plat) == sudo + apache


def test_install_hints_on_macos(tmp_path: Path) -> None:
    plat = detect_platform(tmp_path / "absent", sys_platform="darwin", is_root=False)
    assert plat.family == "macos"
    assert install_hint("nginx", plat) == "brew install nginx"
    assert install_hint("apache", plat) == "brew install httpd"


def test_unknown_os_gets_a_generic_hint(tmp_path: Path) -> None:
    plat = detect_platform(write_os_release(tmp_path, "ID=plan9\n"), sys_platform="linux", is_root=True)
    assert plat.family == "other"
    assert "package manager" in install_hint("nginx", plat)
    missing_file = detect_platform(tmp_path / "absent", sys_platform="linux", is_root=True)
    assert missing_file.family == "other"


def test_python_install_hints_quote_the_interpreter() -> None:
    hint = install_hint("gunicorn", python="/opt/my venv/bin/python")
    assert hint == "'/opt/my venv/bin/python' -m pip install gunicorn"
    assert install_hint("uvicorn_worker", python="/v/bin/python") == "/v/bin/python -m pip install uvicorn-worker"
    assert install_hint("gunicorn").startswith(sys.executable)


def test_this_machine_is_debian() -> None:
    assert detect_platform().family == "debian"


# --------------------------------------------------------------------------- parsing and modules


def test_module_names_are_normalized() -> None:
    n = discovery.normalize_module_name
    assert n("mod_log_config.c") == "log_config"
    assert n("mod_proxy_http.so") == "proxy_http"
    assert n("proxy_http_module") == "proxy_http"
    assert n("core.c") == "core"
    assert discovery.parse_apache_compiled_in("Compiled in modules:\n  core.c\n  mod_so.c\n") == ("core", "so")


def test_parse_nginx_version_from_openresty() -> None:
    info = discovery.parse_nginx_version_output(Path("/x/openresty"), "nginx version: openresty/1.25.3.1\n")
    assert info.version == "1.25.3.1"


def test_module_importable_in_process(tmp_path: Path) -> None:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("raise SystemExit('must not be imported')\n")
    (tmp_path / "myapp" / "web.py").write_text("raise SystemExit('must not be imported')\n")
    assert module_importable(None, "myapp.web", tmp_path)
    assert module_importable(sys.executable, "myapp.web:app", tmp_path)
    assert not module_importable(None, "myapp.nope", tmp_path)
    assert not module_importable(None, "myapp.web", tmp_path / "elsewhere")
    assert module_importable(None, "stackpanel.apps.fastapi_demo", REPO)
    assert module_importable(None, "json", tmp_path)
    assert not module_importable(None, "not a module", tmp_path)


def test_module_importable_in_another_interpreter(tmp_path: Path) -> None:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("raise SystemExit('must not be imported')\n")
    (tmp_path / "myapp" / "web.py").write_text("")
    assert module_importable(OTHER_SPELLING, "myapp.web", tmp_path)
    assert not module_importable(OTHER_SPELLING, "myapp.other", tmp_path)
    assert module_importable(OTHER_SPELLING, "flask", tmp_path)  # installed in that venv
    assert not module_importable(tmp_path / "no-python", "json", tmp_path)


def test_editable_install_is_found_from_any_working_dir(tmp_path: Path) -> None:
    # stackpanel is installed editable: only the editable finder on sys.meta_path knows where it is.
    assert module_importable(None, "stackpanel.apps.flask_demo", tmp_path)
    assert module_importable(OTHER_SPELLING, "stackpanel.apps.flask_demo", tmp_path)
    assert not module_importable(OTHER_SPELLING, "stackpanel.apps.no_such_app", tmp_path)
