"""Shared pieces of packaging/build-deb, build-bundle and test-install (stdlib only, run as root).

Debian roots come from mmdebstrap and are cached as directories under the cache dir; every use
mounts an overlay on top, so a cached root is never changed and a run starts clean in well under a
second. Commands run in a root through `unshare --mount [--net]` + chroot: the mounts (/proc, /dev,
binds) vanish with the namespace, and `--net` gives a network namespace with no way out.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

PKG_DIR = Path(__file__).resolve().parent
REPO = PKG_DIR.parent
CACHE = Path(os.environ.get("STACKPANEL_PKG_CACHE", "/var/cache/stackpanel-packaging"))
ROOT_MAX_AGE_S = 7 * 24 * 3600  # cached roots are rebuilt weekly, so package lists stay current
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def die(msg: str, code: int = 1) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(code)


def need_root() -> None:
    if os.geteuid() != 0:
        die("run as root (mmdebstrap, chroot and mounts need it)")


def need_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        die(f"missing tools: {' '.join(missing)} (./bootstrap.sh test installs them, or "
            f"apt-get install mmdebstrap dpkg-dev lintian desktop-file-utils iproute2 xvfb x11-utils)")


def run(argv: Sequence[str], **kw: object) -> subprocess.CompletedProcess[str]:
    log("$ " + " ".join(shlex.quote(str(a)) for a in argv))
    return subprocess.run([str(a) for a in argv], check=True, text=True, **kw)  # type: ignore[call-overload]


def host_sources() -> Path:
    """The apt sources this machine uses: the roots get the same mirrors, so no address is written here."""
    for p in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list.d/ubuntu.sources"),
              Path("/etc/apt/sources.list")):
        if p.is_file() and p.read_text().strip():
            return p
    die("no apt sources found on this machine: pass --sources FILE (a sources.list or deb822 .sources)")
    raise AssertionError


def cached_root(name: str, suite: str, sources: Path, include: Sequence[str] = ()) -> Path:
    """A minbase root of SUITE (+ include), built once by mmdebstrap and kept under CACHE/roots."""
    key = hashlib.sha256(f"{suite}|{','.join(sorted(include))}|{sources.read_text()}".encode()).hexdigest()[:12]
    root = CACHE / "roots" / f"{name}-{suite}-{key}"
    stamp = root.with_name(root.name + ".complete")  # beside the root: nothing of ours inside it
    if stamp.is_file() and time.time() - stamp.stat().st_mtime < ROOT_MAX_AGE_S:
        return root
    for old in (CACHE / "roots").glob(f"{name}-{suite}-*"):  # this one, stale, or an older recipe's
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    archives = CACHE / "apt-archives"
    archives.mkdir(parents=True, exist_ok=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    argv = ["nice", "mmdebstrap", "--variant=minbase", "--format=directory", "--quiet",
            # keep the package lists: the bundle is computed against them without an `apt-get update`
            "--skip=cleanup/apt/lists",
            "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/",
            f"--setup-hook=sync-in {archives} /var/cache/apt/archives/",
            f"--customize-hook=sync-out /var/cache/apt/archives {archives}",
            "--skip=download/empty"]
    if include:
        argv.append("--include=" + ",".join(include))
    argv += [suite, str(tmp), str(sources)]
    t0 = time.monotonic()
    run(argv)
    tmp.rename(root)
    stamp.write_text(f"built {time.strftime('%Y-%m-%d %H:%M:%S')} in {time.monotonic() - t0:.0f} s\n")
    return root


@contextlib.contextmanager
def overlay(lower: Path, keep: Path | None = None) -> Iterator[Path]:
    """A writable copy of LOWER for the duration (an overlay; the cached root stays as it is)."""
    base = CACHE / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="root-", dir=base))
    upper, wd, merged = work / "upper", work / "work", work / "root"
    for d in (upper, wd, merged):
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={wd}", str(merged)], check=True)
    try:
        yield merged
    finally:
        subprocess.run(["umount", "-l", str(merged)], check=False)
        shutil.rmtree(work, ignore_errors=True)


def in_root(root: Path, argv: Sequence[str], *, net: str = "host", binds: Sequence[tuple[Path, str]] = (),
            env: dict[str, str] | None = None, check: bool = True, capture: bool = False,
            timeout: float | None = None, popen: bool = False,
            ) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    """Run ARGV chrooted in ROOT inside fresh mount (and, unless net="host", network) namespaces.

    net: "host" (the machine's network, for downloads), "none" (a new namespace with lo down: no
    network at all), "lo" (a new namespace with only loopback up: servers work, nothing gets out).
    binds: (host path, path in root) pairs.
    """
    r = shlex.quote(str(root))
    script = [f"mount -t proc proc {r}/proc", f"mount --rbind /dev {r}/dev", f"mount --make-rslave {r}/dev"]
    for src, dst in binds:
        target = f"{r}/{dst.lstrip('/')}"
        if Path(src).is_dir():
            script.append(f"mkdir -p {shlex.quote(target)}")
        else:
            script.append(f"mkdir -p {shlex.quote(str(Path(target).parent))}; touch {shlex.quote(target)}")
        script.append(f"mount --bind {shlex.quote(str(src))} {shlex.quote(target)}")
    if net == "host" and Path("/etc/resolv.conf").exists():
        script.append(f"cp -L /etc/resolv.conf {r}/etc/resolv.conf 2>/dev/null || true")
    if net == "lo":
        script.append("ip link set lo up")
    full_env = {"PATH": ROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
                **(env or {})}
    env_args = " ".join(shlex.quote(f"{k}={v}") for k, v in full_env.items())
    script.append(f"exec chroot {r} /usr/bin/env -i {env_args} " + " ".join(shlex.quote(str(a)) for a in argv))
    unshare = ["unshare", "--mount", "--propagation", "private", "--fork", "--pid", "--mount-proc", "--kill-child"]
    if net != "host":
        unshare.insert(1, "--net")
    cmd = [*unshare, "sh", "-ec", "; ".join(script)]
    log(f"[root{'' if net == 'host' else ', net=' + net}] $ " + " ".join(shlex.quote(str(a)) for a in argv))
    if popen:
        return subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE if capture else None,
                                stderr=subprocess.STDOUT if capture else None)
    return subprocess.run(cmd, check=check, text=True, timeout=timeout,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.STDOUT if capture else None)


def kill_namespace(proc: subprocess.Popen[str]) -> None:
    """End a popen=True in_root run: SIGKILL its namespace's first process, which ends every
    process of that PID namespace. (Killing unshare is not enough: --kill-child's parent-death
    signal is cleared when the child changes user, as setpriv does.)"""
    try:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), 9)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def project_version() -> str:
    import tomllib

    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
