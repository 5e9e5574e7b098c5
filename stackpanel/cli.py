"""Command line: `stackpanel` opens the panel; subcommands run headless.

Errors from the core are StackpanelError values; here, at the boundary, they become a message on
stderr and an exit code (1: the request cannot be met, 2: bad usage).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from stackpanel import __version__
from stackpanel.core.errors import ProfileError, StackpanelError
from stackpanel.export_command import add_export_parser, cmd_export
from stackpanel.trust_command import add_trust_parser, cmd_trust

if TYPE_CHECKING:
    from stackpanel.core.profiles.schema import Profile

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _add_profile_args(p: argparse.ArgumentParser, many: bool = False, optional: bool = False) -> None:
    help_text = "profile file or built-in name (see `stackpanel profiles`)"
    if many:
        p.add_argument("profiles", nargs="*" if optional else "+", metavar="PROFILE", help=help_text)
    else:
        p.add_argument("profile", metavar="PROFILE", help=help_text)


def _add_offset(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port-offset", type=int, default=0, metavar="N",
                   help="add N to every port of the profile (run stacks side by side)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stackpanel",
        description="Run and watch nginx/apache → gunicorn/uvicorn → app stacks. Without a command: the panel.",
    )
    parser.add_argument("--version", action="version", version=f"stackpanel {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the core does")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("gui", help="open the control panel (the default)")
    p.add_argument("profile", nargs="?", metavar="PROFILE", help="profile to open")

    p = sub.add_parser("validate", help="check profiles; exit 1 with file:line messages if any is broken")
    _add_profile_args(p, many=True)

    p = sub.add_parser("render", help="write the configs of a profile and print the command lines")
    _add_profile_args(p)
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="run directory to write into")
    _add_offset(p)

    p = sub.add_parser("doctor", help="which servers are installed, and how to install what is missing")
    p.add_argument("profile", nargs="?", metavar="PROFILE", help="only require what this profile needs")

    sub.add_parser("profiles", help="list built-in and user profiles")

    p = sub.add_parser("up", help="start a profile's stack headless; Ctrl-C stops it")
    _add_profile_args(p)
    _add_offset(p)
    p.add_argument("--run-dir", type=Path, metavar="DIR", help="run directory (default: per-user state dir)")
    p.add_argument("--metrics", action="store_true", help="print a live per-worker table once a second")
    p.add_argument("--metrics-json", type=Path, metavar="FILE",
                   help="append one JSON object per second with per-worker figures")
    p.add_argument("--keep-going", action="store_true",
                   help="when a node fails for good, keep serving what still works (default: stop, exit 1)")
    p.add_argument("--traces", type=Path, metavar="FILE",
                   help="append one JSON object per completed trace (each request kept: sampled, slowest, failed)")

    p = sub.add_parser("reload", help="apply an edited profile to its running `stackpanel up` without failing a "
                       "request", description="Validate the profile (a broken one is refused with its file:line "
                       "and the running stack is left alone), then have the `stackpanel up` running it re-read it "
                       "and reload each node gracefully; prints what each node did. Exit 1 if it was refused.")
    p.add_argument("profile", nargs="?", metavar="PROFILE", help="profile file or built-in name (default: the one "
                   "stack running)")
    p.add_argument("--port-offset", type=int, metavar="N", help="the run started with this offset (when the "
                   "profile runs more than once)")
    p.add_argument("--run-dir", type=Path, metavar="DIR", help="the run directory of the `up` to reload")

    p = sub.add_parser("bench", help="run the same load against each profile in turn and compare them",
                       description="Bring each profile up in turn (ports shifted out of the way), warm it up, "
                                   "apply the same load, record throughput, latency and per-worker CPU, stop "
                                   "it, and print a table with each profile's throughput as a ratio of the "
                                   "first. Exit 1 if a profile did not run. With --wrk and no PROFILE: the "
                                   "proxy-path targets, each proxied built-in against direct uvicorn (2 app "
                                   "workers) in --pairs A/B pairs of 4 s, median ratios next to the targets.")
    _add_profile_args(p, many=True, optional=True)
    p.add_argument("--connections", "-c", type=int, default=64, metavar="N", help="concurrent connections (64)")
    p.add_argument("--duration", "-d", type=float, metavar="S", help="seconds of load per profile (10; targets: 4)")
    p.add_argument("--warmup", type=float, metavar="S", help="seconds of warm-up load first (2; targets: 1)")
    p.add_argument("--pairs", type=int, default=5, metavar="N", help="targets: A/B pairs per target (5)")
    p.add_argument("--requests", "-n", type=int, metavar="N",
                   help="send N requests instead (the duration is then a cap; built-in generator only)")
    p.add_argument("--path", metavar="P",
                   help="path requested on each entry URL (default: the entry's readiness probe path; "
                        "/api/hello answers on every built-in profile)")
    p.add_argument("--port-offset", type=int, metavar="N",
                   help="shift every profile's ports by N (default: a free offset for each)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="run every app server (gunicorn/uvicorn) with N workers, to compare at equal workers")
    p.add_argument("--wrk", action="store_true", help="load with wrk instead of the built-in generator")
    p.add_argument("--json", type=Path, metavar="FILE", help="write every figure as JSON")
    p.add_argument("--csv", type=Path, metavar="FILE", help="write one CSV row per profile")
    p.add_argument("--png", type=Path, metavar="FILE", help="write a bar chart (req/s, ratio, p99) as PNG")
    add_trust_parser(sub)
    add_export_parser(sub)
    sub.add_parser("schema", help="print the profile JSON Schema (draft-07, for editors' YAML support)")
    p = sub.add_parser("trace", help="one request through every tier, as a waterfall (from the access logs)",
                       description="Find REQUEST_ID (the X-Request-ID every tier logs and the edge returns to "
                                   "the client) in the newest run's access logs and print each tier's start, "
                                   "duration and own time. With --otlp FILE, write it (or, without an id, the "
                                   "run's newest requests) in the OpenTelemetry JSON encoding for Jaeger or any "
                                   "OTLP-file reader.")
    p.add_argument("request_id", nargs="?", metavar="REQUEST_ID")
    p.add_argument("--run-dir", type=Path, metavar="DIR", help="the run to look in (default: the newest)")
    p.add_argument("--otlp", type=Path, metavar="FILE", help="write OTLP/JSON (resourceSpans) to FILE")
    p.add_argument("--limit", type=int, default=1000, metavar="N",
                   help="with --otlp and no id: the newest N requests (1000)")
    # --- selftest (issue #16, kept in one block) ---
    p = sub.add_parser("selftest", help="doctor, then up → request → stop for each profile; PASS/FAIL lines",
                       description="Check this machine before a workshop: doctor, then for each profile bring "
                                   "the stack up, send one request through its entry, stop it and check that "
                                   "nothing is left running. Default profiles: the workshop group if the "
                                   "package has one, else every built-in profile. Exit 1 if any check failed.")
    p.add_argument("profiles", nargs="*", metavar="PROFILE", help="profile file or name (default: see above)")
    _add_offset(p)
    return parser


def cmd_selftest(args: argparse.Namespace) -> int:
    from stackpanel.selftest import run_selftest

    return run_selftest(args.profiles, port_offset=args.port_offset, say=lambda line: print(line, flush=True))


def _load(name_or_path: str, port_offset: int = 0) -> Profile:
    from stackpanel.core.profiles.library import resolve_profile
    from stackpanel.core.profiles.loader import load_profile

    return load_profile(resolve_profile(name_or_path), port_offset=port_offset)


def cmd_validate(args: argparse.Namespace) -> int:
    from stackpanel.core.profiles.exposure import exposure_warnings
    from stackpanel.core.profiles.library import resolve_profile
    from stackpanel.core.profiles.loader import collect_problems
    from stackpanel.core.profiles.yamlsource import read_profile_text

    failed = 0
    for item in args.profiles:
        try:
            path = resolve_profile(item)
            check = collect_problems(read_profile_text(path), path)  # every problem, not the first batch
            if check.profile is None or check.problems:
                raise ProfileError(check.problems)
            profile = check.profile
        except ProfileError as exc:
            failed += 1
            print(exc, file=sys.stderr)
            continue
        nodes = " → ".join(f"{n}({profile.nodes[n].kind})" for n in reversed(profile.start_order()))
        print(f"ok  {path}: {profile.name}: {nodes}")
        for warning in exposure_warnings(profile):
            print(f"    warning: {warning}", file=sys.stderr)
    if failed:
        print(f"{failed} of {len(args.profiles)} profile(s) have problems", file=sys.stderr)
    return EXIT_FAIL if failed else EXIT_OK


def cmd_render(args: argparse.Namespace) -> int:
    from stackpanel.core.render import render_stack

    profile = _load(args.profile, args.port_offset)
    stack = render_stack(profile, args.out)
    stack.write()
    print(f"# {profile.name}: rendered into {stack.paths.root}")
    print("# start these in order (backends first); the entry is", profile.entry_url)
    for node in (p for n in stack.nodes.values() for p in n.processes):
        for path in node.files:
            print(f"# {node.name}: wrote {path}")
        if node.config_test_argv:
            print(f"# {node.name}: test the config with: {' '.join(node.config_test_argv)}")
        print(node.command_line)
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from stackpanel.core import discovery

    needs: set[discovery.Kind] | None = None
    python = None
    if args.profile:
        profile = _load(args.profile)
        needs = {kind for kind in discovery.ALL_KINDS if kind in profile.kinds()}
        if any(getattr(n, "effective_worker_class", None) == "uvicorn" for n in profile.nodes.values()):
            needs |= {"uvicorn", "uvicorn_worker"}  # gunicorn runs uvicorn_worker.UvicornWorker
        interpreters = {n.app.interpreter for n in profile.nodes.values() if hasattr(n, "app")}
        python = next(iter(interpreters), None)
    report = discovery.run_doctor(needs=needs, python=python)
    print(discovery.format_report(report))
    from stackpanel.core.session import runs_root
    from stackpanel.core.supervise.rundirs import KEEP_PER_PROFILE, run_dirs_usage

    count, size = run_dirs_usage(runs_root())
    print(f"\nrun directories: {count} ({size / 2**20:.1f} MiB) in {runs_root()}; the newest {KEEP_PER_PROFILE} "
          "per profile are kept, older ones are removed when a stack starts")
    return EXIT_OK if report.ok else EXIT_FAIL


def _bench_targets(args: argparse.Namespace) -> int:
    """`bench --wrk` without profiles: the proxy-path targets (core/bench/targets.py)."""
    from stackpanel.core.bench.targets import TARGETS_PATH, run_targets

    problem = ""
    if not args.wrk:
        problem = "name the profiles to compare, or give --wrk alone for the proxy-path targets"
    elif args.csv or args.png or args.requests is not None or args.pairs < 1:
        problem = ("the proxy-path targets take --pairs N (>= 1), -d, --warmup, -c, --workers, --path and --json; "
                   "--csv, --png and -n are for named profiles")
    if problem:
        print(f"stackpanel: {problem}", file=sys.stderr)
        return EXIT_USAGE
    report = run_targets(pairs=args.pairs, duration_s=4.0 if args.duration is None else args.duration,
                         warmup_s=1.0 if args.warmup is None else args.warmup, connections=args.connections,
                         workers=args.workers or 2, path=args.path or TARGETS_PATH,
                         progress=lambda e: print(e, flush=True))
    print()
    print(report.format_table())
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(report.to_json() + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"stackpanel: cannot write {args.json}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAIL
        print(f"\nwrote {args.json}")
    failed = [r.target.profile for r in report.results if any(p.problem for p in r.pairs)]
    if failed:
        print(f"stackpanel: pairs did not run for {', '.join(failed)}", file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def cmd_profiles(args: argparse.Namespace) -> int:
    from stackpanel.core.profiles.library import list_profiles
    from stackpanel.core.profiles.loader import load_profile

    for entry in list_profiles():
        try:
            title = load_profile(entry.path, check_files=False).name
        except ProfileError:
            title = "(invalid: run `stackpanel validate` on it)"
        where = entry.group
        print(f"{entry.name:<26} {where:<9} {title}")
    return EXIT_OK


def has_display() -> bool:
    if os.environ.get("QT_QPA_PLATFORM", "") in ("offscreen", "minimal"):
        return False  # a window nobody can see: run headless instead
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def cmd_gui(args: argparse.Namespace) -> int:
    if not has_display():
        from stackpanel.core.profiles.library import DEFAULT_PROFILE

        name = getattr(args, "profile", None) or DEFAULT_PROFILE
        print(f"No display found: running profile {name!r} headless instead (Ctrl-C stops it).", file=sys.stderr)
        up_args = argparse.Namespace(profile=name, port_offset=0, run_dir=None, metrics=False, metrics_json=None,
                                     traces=None)
        return cmd_up(up_args)
    from stackpanel.qt.app import run_gui

    return run_gui(getattr(args, "profile", None))


def cmd_up(args: argparse.Namespace) -> int:
    from stackpanel.core.headless import run_headless
    from stackpanel.core.profiles.library import resolve_profile

    profile = _load(args.profile, args.port_offset)
    return run_headless(profile, run_dir=args.run_dir, metrics_table=args.metrics, metrics_json=args.metrics_json,
                        traces_json=getattr(args, "traces", None),
                        reload_profile=lambda: _load(args.profile, args.port_offset),
                        keep_going=getattr(args, "keep_going", False),
                        profile_file=resolve_profile(args.profile).resolve())


def cmd_reload(args: argparse.Namespace) -> int:
    from stackpanel.core.profiles.library import resolve_profile
    from stackpanel.core.profiles.loader import load_profile
    from stackpanel.core.session import runs_root
    from stackpanel.core.supervise import runcontrol

    if args.run_dir is not None:
        one = runcontrol.controlled_run(args.run_dir)
        runs = [one] if one is not None else []
    else:
        runs = runcontrol.controlled_runs(runs_root())
    if args.profile is not None:
        wanted = resolve_profile(args.profile).resolve()
        runs = [r for r in runs if r.profile.resolve() == wanted]
    if args.port_offset is not None:
        runs = [r for r in runs if r.port_offset == args.port_offset]
    if len(runs) != 1:
        what = f"of {args.profile} " if args.profile else ""
        if not runs:
            print(f"stackpanel: no running `stackpanel up` {what}found (a stack the panel runs reloads with its "
                  "Reload button)", file=sys.stderr)
        else:
            print(f"stackpanel: {len(runs)} running stacks {what}match; name one (PROFILE, --port-offset or "
                  "--run-dir):\n" + "\n".join(f"  {r.describe()}" for r in runs), file=sys.stderr)
        return EXIT_FAIL
    run = runs[0]
    load_profile(run.profile, port_offset=run.port_offset)  # a broken profile stops here, with file:line
    outcome = runcontrol.request_reload(run)
    print(outcome.text, file=sys.stdout if outcome.ok else sys.stderr)
    return EXIT_OK if outcome.ok else EXIT_FAIL


def cmd_bench(args: argparse.Namespace) -> int:
    from stackpanel.core.bench import compare_profiles

    if not args.profiles:
        return _bench_targets(args)
    comparison = compare_profiles(
        args.profiles, connections=args.connections, duration_s=10.0 if args.duration is None else args.duration,
        warmup_s=2.0 if args.warmup is None else args.warmup,
        path=args.path, generator="wrk" if args.wrk else "builtin", requests=args.requests,
        workers=args.workers, port_offset=args.port_offset, progress=lambda event: print(event, flush=True),
    )
    print()
    print(comparison.format_table())
    written = []
    for path, render in ((args.json, lambda: comparison.to_json() + "\n"), (args.csv, comparison.to_csv)):
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(render(), encoding="utf-8")
            except OSError as exc:
                print(f"stackpanel: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
                return EXIT_FAIL
            written.append(str(path))
    if args.png is not None:
        from stackpanel.qt.chart import save_chart

        written.append(str(save_chart(comparison, args.png)))
    if written:
        print(f"\nwrote {', '.join(written)}")
    if not comparison.all_ran:
        names = ", ".join(r.name for r in comparison.failed)
        print(f"stackpanel: {len(comparison.failed)} of {len(comparison.runs)} profile(s) did not run: {names}",
              file=sys.stderr)
        return EXIT_FAIL
    return EXIT_OK


def cmd_trace(args: argparse.Namespace) -> int:
    from stackpanel.core.metrics.otlp import write_otlp
    from stackpanel.core.session import runs_root
    from stackpanel.core.traces import find_trace, recent_logs_dirs, traces_from_logs

    dirs = [args.run_dir / "logs"] if args.run_dir else recent_logs_dirs(runs_root())
    where = args.run_dir or runs_root()
    if args.request_id is None:
        if args.otlp is None:
            print("stackpanel: trace needs a REQUEST_ID, or --otlp FILE to export the run's requests", file=sys.stderr)
            return EXIT_USAGE
        traces = traces_from_logs(dirs[0], args.limit) if dirs else ()
        if not traces:
            print(f"stackpanel: no request found in the access logs of {dirs[0] if dirs else where}; start the "
                  "stack and send a request first", file=sys.stderr)
            return EXIT_FAIL
    else:
        trace = find_trace(args.request_id, dirs)
        if not trace.spans:
            print(f"stackpanel: no tier logged request id {args.request_id!r} in {where}; copy it from the "
                  "X-Request-ID response header (curl -i)", file=sys.stderr)
            return EXIT_FAIL
        print(trace.format())
        traces = (trace,)
    if args.otlp is not None:
        try:
            n = write_otlp(traces, args.otlp)
        except OSError as exc:
            print(f"stackpanel: cannot write {args.otlp}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAIL
        print(f"wrote {n} trace(s) as OTLP/JSON to {args.otlp}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from stackpanel.core.profiles.jsonschema import schema_text

    sys.stdout.write(schema_text())
    return EXIT_OK


COMMANDS = {
    "validate": cmd_validate,
    "render": cmd_render,
    "doctor": cmd_doctor,
    "profiles": cmd_profiles,
    "gui": cmd_gui,
    "up": cmd_up,
    "bench": cmd_bench,
    "reload": cmd_reload,
    "selftest": cmd_selftest,
    "trust": cmd_trust,
    "schema": cmd_schema,
    "export": cmd_export,
    "trace": cmd_trace,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    command = args.command or "gui"
    try:
        return COMMANDS[command](args)
    except StackpanelError as exc:
        print(f"stackpanel: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
