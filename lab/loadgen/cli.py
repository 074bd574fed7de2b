"""The load generator's command line (scripts/loadgen).

    loadgen [--run-dir DIR] [--json] [--progress] [--connect-timeout S] WORKLOAD
            [--tasks N] [--threads N] [--duration S | --count N] [--start-timeout S]
            [the workload's own options]

The common options may come before or after the workload name.  Exit status: 0; 1 when
verification failed (data mismatch), every operation failed, or a fixed-work workload
could not do all its work; 2 when the cluster (kernel or server) could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from lab.client import ClusterError
from lab.loadgen.driver import EXIT_UNREACHABLE, run, setup_logs
from lab.loadgen.table import table
from lab.loadgen.workload import Workload, positive_float, positive_int, workloads


def _top_options() -> argparse.ArgumentParser:
    """The options every workload has that may also come before its name."""
    top = argparse.ArgumentParser(add_help=False)
    top.add_argument("--run-dir", metavar="DIR",
                     help="the cluster's run directory (default $MACHEMU_RUN_DIR or ./run)")
    top.add_argument("--json", action="store_true",
                     help="print one JSON object (the summary) on stdout")
    top.add_argument("--progress", action=argparse.BooleanOptionalAction,
                     help="progress on stderr (default: only when stderr is a TTY)")
    top.add_argument("--connect-timeout", type=positive_float, metavar="S",
                     help="how long to wait for the kernel to answer (default 10)")
    return top


def _sub_options(top: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """What every workload's subcommand takes: ``top``'s options again (hidden, without
    defaults) and the load options."""
    sub = argparse.ArgumentParser(add_help=False)
    # Options given before the workload name must not be reset by the subcommand's
    # defaults: the subparser copies default to SUPPRESS.
    for a in top._actions:
        kw = {"dest": a.dest, "default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
        if isinstance(a, argparse._StoreTrueAction):
            sub.add_argument(*a.option_strings, action="store_true", **kw)
        elif isinstance(a, argparse.BooleanOptionalAction):
            sub.add_argument(*a.option_strings, action=argparse.BooleanOptionalAction, **kw)
        else:
            sub.add_argument(*a.option_strings, type=a.type, metavar=a.metavar, **kw)
    g = sub.add_argument_group("load")
    g.add_argument("--tasks", type=positive_int, default=1, metavar="N",
                   help="client tasks, each a separate OS process (default 1)")
    g.add_argument("--threads", type=positive_int, default=1, metavar="N",
                   help="threads per task (default 1)")
    m = g.add_mutually_exclusive_group()
    m.add_argument("--duration", type=positive_float, metavar="S",
                   help="run for S seconds (the default mode)")
    m.add_argument("--count", type=int, metavar="N",
                   help="N operations in all, split evenly over tasks and threads")
    g.add_argument("--start-timeout", type=positive_float, default=60.0, metavar="S",
                   help="how long tasks may take to start and connect (default 60)")
    return sub


def build_parser(prog: str = "loadgen") -> argparse.ArgumentParser:
    """The parser: common options, then one subcommand per workload (its instance in
    ``workload_obj``)."""
    top = _top_options()
    p = argparse.ArgumentParser(prog=prog, parents=[top],
                                description="machemu load generator: named workloads "
                                            "run by N client tasks (OS processes).")
    sub = p.add_subparsers(dest="workload", metavar="WORKLOAD", required=True)
    common = _sub_options(top)
    for name, cls in workloads().items():
        wl = cls()
        sp = sub.add_parser(name, parents=[common], help=cls.help, description=cls.help)
        wl.add_arguments(sp)
        sp.set_defaults(workload_obj=wl)
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv``, run the workload against the cluster, print its summary (a table,
    or with --json one JSON object); returns the exit status."""
    parser = build_parser(prog or os.path.basename(sys.argv[0]) or "loadgen")
    args = parser.parse_args(argv)
    wl: Workload = args.workload_obj
    del args.workload_obj  # the instance stays in the parent; tasks make their own
    if args.run_dir is None:
        args.run_dir = os.environ.get("MACHEMU_RUN_DIR") or "run"
    args.run_dir = str(Path(args.run_dir).resolve())
    if args.connect_timeout is None:
        args.connect_timeout = 10.0
    if args.progress is None:
        args.progress = sys.stderr.isatty()
    if args.count is not None and args.count < 0:
        parser.error("--count must be >= 0")
    if wl.fixed_work:
        if args.count is not None:
            parser.error(f"{wl.name} does a fixed amount of work: no --count"
                         " (--duration is a time limit)")
    elif args.count is None and args.duration is None:
        args.duration = wl.default_duration
    wl.check_args(args, parser)
    setup_logs("loadgen", args.run_dir, "loadgen.log")
    try:
        summary, code = run(wl, args)
    except ClusterError as e:
        if args.json:
            print(json.dumps({"workload": wl.name, "run_dir": args.run_dir,
                              "error": str(e), "exit_status": EXIT_UNREACHABLE}))
        print(f"loadgen: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.json:
        print(json.dumps(summary))
    else:
        print(table(wl, summary))
    sys.stdout.flush()
    return code
