"""`stackpanel trust [--remove] [--yes] [--status]`: make browsers and the system trust the local CA.

The command says exactly what it will change (each store, each file, each command), asks, then
does it; `--remove` undoes the same steps. At this boundary TrustError becomes a message and
exit code 1 (with the sudo commands when root is needed).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from stackpanel.core.tls import TrustError, apply_trust, trust_plan, trust_status

EXIT_OK, EXIT_FAIL = 0, 1


def add_trust_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("trust", help="make browsers and the system trust stackpanel's local CA (HTTPS)")
    p.add_argument("--remove", action="store_true", help="undo it: remove the CA from every store it was added to")
    p.add_argument("--status", action="store_true", help="only say where the CA is trusted")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")


def cmd_trust(args: argparse.Namespace, ask: Callable[[str], str] = input) -> int:
    status = trust_status()
    if args.status:
        print(status.message)
        for store in status.stores:
            print(f"  {store.store}: {store.state}")
        return EXIT_OK if status.trusted else EXIT_FAIL
    plan = trust_plan(remove=args.remove)
    if not plan:
        print("nothing to do: " + ("the CA is in no store" if args.remove else "every store already trusts the CA"))
        return EXIT_OK
    verb = "remove stackpanel's local CA from" if args.remove else "add stackpanel's local CA to"
    print(f"This will {verb}:")
    for step in plan:
        print(f"  - {step}")
    if not args.yes:
        if not sys.stdin.isatty() and ask is input:
            print("not asked (no terminal): rerun with --yes to go ahead", file=sys.stderr)
            return EXIT_FAIL
        if ask("Go ahead? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing changed")
            return EXIT_FAIL
    try:
        done = apply_trust(plan)
    except TrustError as exc:
        print(f"stackpanel: {exc}", file=sys.stderr)
        return EXIT_FAIL
    for line in done:
        print(f"done: {line}")
    if not args.remove:
        print("Restart the browser (Chromium and Firefox read their certificate stores at start).")
    return EXIT_OK
