"""`stackpanel export compose|systemd|process-compose PROFILE DIR|FILE`: hand a profile to a deployment engine.

At this boundary ExportError (and every StackpanelError) becomes a message and exit code 1.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from stackpanel.core.errors import StackpanelError

if TYPE_CHECKING:
    from stackpanel.core.profiles.schema import Profile

EXIT_OK, EXIT_FAIL = 0, 1


def add_export_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("export", help="write a profile as docker compose, systemd units or process-compose")
    kinds = p.add_subparsers(dest="export_kind", metavar="KIND", required=True)
    c = kinds.add_parser("compose", help="compose.yaml, configs, Dockerfiles and a README in DIR")
    c.add_argument("profile", metavar="PROFILE", help="profile file or built-in name")
    c.add_argument("out", metavar="DIR", type=Path, help="directory to write (created)")
    c.add_argument("--publish", default="127.0.0.1", metavar="ADDRESS",
                   help="host address the entry's ports are published on (default 127.0.0.1)")
    c.add_argument("--local-certs", action="store_true",
                   help="put leaf certificates from your local CA into tls/<node>/ (for a try on this machine)")
    s = kinds.add_parser("systemd", help="one unit per node, a .target, /etc files and a README in DIR")
    s.add_argument("profile", metavar="PROFILE", help="profile file or built-in name")
    s.add_argument("out", metavar="DIR", type=Path, help="directory to write (created)")
    pc = kinds.add_parser("process-compose", help="a process-compose.yaml (configs rendered next to it)")
    pc.add_argument("profile", metavar="PROFILE", help="profile file or built-in name")
    pc.add_argument("out", metavar="FILE", type=Path, help="the process-compose.yaml to write")
    pc.add_argument("--run-dir", type=Path, default=None, metavar="DIR",
                    help="where the configs go (default: stackpanel-run next to FILE)")
    for q in (c, s, pc):
        q.add_argument("--name", default=None, help="project name (default: the profile's file name)")


def cmd_export(args: argparse.Namespace) -> int:
    from stackpanel.core.export import export
    from stackpanel.core.profiles.library import resolve_profile
    from stackpanel.core.profiles.loader import load_profile

    try:
        path = resolve_profile(args.profile)
        profile = load_profile(path)
        name = args.name or path.stem
        said = export(profile, args.export_kind, args.out, name, publish_address=getattr(args, "publish", "127.0.0.1"),
                      run_dir=getattr(args, "run_dir", None))
        if args.export_kind == "compose" and args.local_certs:
            _issue_local_certs(profile, args.out)
    except StackpanelError as exc:
        print(f"stackpanel: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except OSError as exc:
        print(f"stackpanel: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAIL
    print(said)
    return EXIT_OK


def _issue_local_certs(profile: Profile, out: Path) -> None:
    from stackpanel.core.profiles.schema import ProxyNode
    from stackpanel.core.tls import issue_leaf

    for name, node in profile.nodes.items():
        if isinstance(node, ProxyNode) and node.tls is not None:
            issue_leaf(node.certificate_names(profile.accepted_host_names(name)), out / "tls" / name)
