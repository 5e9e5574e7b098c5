"""PHP behind Apache, rendered: php: true on an apache node's static route, php-fpm as the node's
companion, the profile errors for misuse, and what doctor says about php-fpm."""
from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from stackpanel.core import discovery
from stackpanel.core.discovery import parse_php_fpm_version, run_doctor
from stackpanel.core.errors import ProfileError, RenderError
from stackpanel.core.profiles.library import builtin_dir
from stackpanel.core.profiles.loader import load_profile, load_profile_text
from stackpanel.core.render import render_stack
from tests.unit.test_render import APACHE, NGINX, PHP


def render(profile, tmp_path: Path, as_root: bool = False):
    return render_stack(profile, tmp_path / "run", as_root=as_root, nginx=NGINX, apache=APACHE, php=PHP)


def builtin_php(tmp_path: Path, as_root: bool = False):
    return render(load_profile(builtin_dir() / "nginx-php-uvicorn.yaml"), tmp_path, as_root)


def text(node) -> str:
    return next(iter(node.files.values()))


def test_builtin_runs_php_in_the_static_directory_through_fpm_on_a_socket_in_the_run_dir(tmp_path: Path) -> None:
    stack = builtin_php(tmp_path)
    run = stack.paths.root
    site = stack.nodes["site"]
    conf = text(site)
    php_dir = builtin_dir().parent / "apps" / "php"
    assert (php_dir / "index.php").is_file()
    assert "LoadModule proxy_fcgi_module /usr/lib/apache2/modules/mod_proxy_fcgi.so" in conf
    assert "DirectoryIndex index.html index.php" in conf
    # the handler sits inside the static directory's own <Directory>: nothing outside it runs
    block = re.search(rf'<Directory "{re.escape(str(php_dir))}">\n(.*?)\n</Directory>', conf, re.S)
    assert block is not None
    assert (f'<FilesMatch "[.]php$">\n        SetHandler "proxy:unix:{run}/run/site.fpm|fcgi://localhost"\n'
            "    </FilesMatch>") in block.group(1)
    assert conf.count("SetHandler") == 1
    assert "Options None" in block.group(1)  # no symbolic link out of the directory, for .php too
    fpm = site.companion
    assert fpm is not None and fpm.kind == "php-fpm"
    assert site.processes == (fpm, site)
    fpm_conf = text(fpm)
    assert fpm.argv == ("/usr/sbin/php-fpm8.2", "--fpm-config", str(run / "conf" / "php-fpm-site.conf"),
                        "--prefix", str(run), "--nodaemonize", "--force-stderr")
    assert fpm.config_test_argv == fpm.argv[:5] + ("-t",)
    assert fpm.stop_signal == signal.SIGQUIT and fpm.reload_signal == signal.SIGUSR2
    assert fpm.ready_socket == run / "run" / "site.fpm"
    assert f'listen = "{run}/run/site.fpm"' in fpm_conf
    assert "daemonize = no" in fpm_conf
    assert f'pid = "{run}/run/site.php.pid"' in fpm_conf and f'error_log = "{run}/logs/site.php.error.log"' in fpm_conf
    assert "pm = static\npm.max_children = 2\n" in fpm_conf  # php_workers: 2 in the profile
    assert "security.limit_extensions = .php" in fpm_conf
    assert f'php_admin_value[open_basedir] = "{php_dir}:{run}/tmp/site.php"' in fpm_conf
    assert "user = " not in fpm_conf  # not root: nobody to switch to
    # every path fpm writes is inside the run directory
    for path in re.findall(r'"(/[^"]*)"', fpm_conf):
        assert path.startswith(str(run)) or path.startswith(str(php_dir)), path


def test_as_root_fpm_workers_and_socket_belong_to_apaches_user(tmp_path: Path) -> None:
    stack = builtin_php(tmp_path, as_root=True)
    fpm_conf = text(stack.nodes["site"].companion)
    assert re.search(r"^user = nobody\ngroup = \w+\nlisten.owner = nobody\nlisten.group = \w+$", fpm_conf, re.M)
    assert "listen.mode = 0600" in fpm_conf
    assert stack.nodes["site"].companion.writable_dirs == (stack.paths.root / "tmp" / "site.php",)


def test_write_creates_the_companions_files_and_dirs(tmp_path: Path) -> None:
    stack = builtin_php(tmp_path)
    stack.write()
    assert (stack.paths.conf_dir / "php-fpm-site.conf").is_file()
    assert (stack.paths.tmp_dir / "site.php").is_dir()


def test_only_the_php_route_gets_the_handler(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "files").mkdir()
    profile = load_profile_text(PROFILE.format(extra="      - path: /files\n        static: files\n"),
                                tmp_path / "p.yaml")
    conf = text(render(profile, tmp_path).nodes["web"])
    files = re.search(rf'<Directory "{tmp_path}/files">\n(.*?)\n</Directory>', conf, re.S)
    assert files is not None and "SetHandler" not in files.group(1)
    assert conf.count("SetHandler") == 1


def test_a_profile_without_php_renders_no_companion(tmp_path: Path) -> None:
    stack = render(load_profile(builtin_dir() / "nginx-split.yaml"), tmp_path)
    assert stack.nodes["site"].companion is None and "proxy_fcgi" not in text(stack.nodes["site"])
    assert "php" not in load_profile(builtin_dir() / "nginx-split.yaml").kinds()
    assert "php" in load_profile(builtin_dir() / "nginx-php-uvicorn.yaml").kinds()


PROFILE = """\
version: 1
name: php
nodes:
  web:
    kind: apache
    port: 8081
    routes:
      - path: /
        static: site
        php: true
{extra}"""


def problems(text: str, tmp_path: Path) -> list[str]:
    (tmp_path / "site").mkdir(exist_ok=True)
    with pytest.raises(ProfileError) as info:
        load_profile_text(text, tmp_path / "p.yaml")
    return [str(p) for p in info.value.problems]


def test_php_on_nginx_is_a_located_error(tmp_path: Path) -> None:
    found = problems(PROFILE.format(extra="").replace("kind: apache", "kind: nginx"), tmp_path)
    assert len(found) == 1
    assert re.match(r".*p\.yaml:10:9: nginx does not run PHP", found[0]), found
    assert "apache node" in found[0]


def test_php_without_static_is_a_located_error(tmp_path: Path) -> None:
    text = PROFILE.format(extra="").replace("static: site", "to: app") + "  app:\n    kind: uvicorn\n    port: 8000\n" \
        "    app: {module: stackpanel.apps.fastapi_demo:app}\n"
    found = problems(text, tmp_path)
    assert len(found) == 1 and "php apply to static routes only" in found[0], found
    assert re.match(r".*p\.yaml:8:\d+: ", found[0]), found  # the route


def test_missing_php_fpm_names_the_install_command_before_anything_runs(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discovery, "find_php_fpm", lambda *a, **k: None)
    with pytest.raises(RenderError) as info:
        render_stack(load_profile(builtin_dir() / "nginx-php-uvicorn.yaml"), tmp_path / "run", nginx=NGINX,
                     apache=APACHE)
    assert "php-fpm is not installed" in str(info.value)
    assert "install -y php-fpm" in str(info.value)
    assert not (tmp_path / "run").exists()  # nothing written, nothing launched


def test_a_socket_path_too_long_for_unix_sockets_is_refused(tmp_path: Path) -> None:
    profile = load_profile(builtin_dir() / "nginx-php-uvicorn.yaml")
    with pytest.raises(RenderError, match="longer than a Unix socket path"):
        render_stack(profile, tmp_path / ("d" * 100), nginx=NGINX, apache=APACHE, php=PHP)


# ----------------------------------------------------------------- doctor


def test_php_fpm_version_is_read_from_its_banner() -> None:
    banner = "PHP 8.2.36 (fpm-fcgi) (built: Nov 18 2026 20:02:04)\nCopyright (c) The PHP Group\n"
    assert parse_php_fpm_version(Path("/x"), banner).version == "8.2.36"
    assert parse_php_fpm_version(Path("/x"), "PHP 8.3.1-1+b1 (fpm-fcgi)").version == "8.3.1"
    assert parse_php_fpm_version(Path("/x"), "garbage").version == ""


def test_doctor_reports_php_fpm_found_with_its_version(tmp_path: Path) -> None:
    fake = tmp_path / "php-fpm8.2"  # Debian's name: there is no plain php-fpm
    fake.write_text("#!/bin/sh\necho 'PHP 8.2.36 (fpm-fcgi) (built: Nov 18 2026)'\n")
    fake.chmod(0o755)
    discovery.clear_cache()
    try:
        php = run_doctor({"php"}, search_path=str(tmp_path)).get("php")
    finally:
        discovery.clear_cache()
    assert php.found and php.usable and php.needed
    assert php.version == "8.2.36" and php.path == str(fake)


def test_doctor_names_the_install_command_for_missing_php_fpm(tmp_path: Path) -> None:
    os_release = tmp_path / "os-release"
    os_release.write_text('ID=debian\nPRETTY_NAME="Debian GNU/Linux 12"\n')
    empty = tmp_path / "bin"
    empty.mkdir()
    discovery.clear_cache()
    try:
        report = run_doctor({"php", "uvicorn"}, search_path=str(empty), os_release=os_release)
        not_needed = run_doctor({"uvicorn"}, search_path=str(empty), os_release=os_release)
    finally:
        discovery.clear_cache()
    php = report.get("php")
    assert not report.ok and not php.found
    sudo = "" if os.geteuid() == 0 else "sudo "
    assert php.install_hint == f"{sudo}apt-get install -y php-fpm"
    assert f"install: {sudo}apt-get install -y php-fpm" in discovery.format_report(report)
    assert not_needed.get("php").found is False and not_needed.get("php").needed is False


@pytest.mark.parametrize("kind", ["compose", "systemd"])
def test_exports_refuse_a_php_profile_instead_of_dropping_php_fpm(kind: str, tmp_path: Path) -> None:
    from stackpanel.core.export import ExportError, export

    with pytest.raises(ExportError, match=r"does not carry php-fpm yet.*export process-compose"):
        export(load_profile(builtin_dir() / "nginx-php-uvicorn.yaml"), kind, tmp_path / "out", "php")  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_process_compose_runs_php_fpm_before_apache(tmp_path: Path) -> None:
    import shlex
    import socket
    import subprocess

    from stackpanel.core.export.process_compose import process_compose_document

    doc = process_compose_document(load_profile(builtin_dir() / "nginx-php-uvicorn.yaml"), tmp_path / "run")
    procs = doc["processes"]
    fpm = procs["site-php-fpm"]
    assert procs["site"]["depends_on"]["site-php-fpm"] == {"condition": "process_healthy"}
    argv = shlex.split(fpm["command"])
    assert "--nodaemonize" in argv and (tmp_path / "run" / "conf" / "php-fpm-site.conf").is_file()
    assert fpm["shutdown"]["signal"] == int(signal.SIGQUIT)
    # the readiness command connects to the pool's socket: refused before php-fpm listens, 0 once it does
    probe = fpm["readiness_probe"]["exec"]["command"]
    path = shlex.split(probe)[-1]
    assert subprocess.run(["bash", "-c", probe], capture_output=True).returncode != 0
    with socket.socket(socket.AF_UNIX) as pool:
        pool.bind(path)
        pool.listen()
        assert subprocess.run(["bash", "-c", probe], capture_output=True).returncode == 0
