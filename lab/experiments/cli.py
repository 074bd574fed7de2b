"""The experiment runner's command line (scripts/experiment).

    experiment list [--json]
    experiment run [NAME...] [--quick] [--repeat N] [--out DIR] [--json] [--keep-images]
                   [--config C]... [--no-calibration]
    experiment plot DIR

``run`` measures the calibration (transport floor, kernel null RPC: a few seconds),
then runs every configuration of each named experiment (all of them without a name;
names or aliases such as E1), one after the other, each on a fresh real cluster in
OUT/EXPERIMENT/CONFIG, bounded in time; with ``--repeat N`` each configuration N times
in alternating order (ABC CBA ABC ...), each run in OUT/EXPERIMENT/CONFIG/rK, the
medians reported.  Then it prints one table per experiment (``--json``: one JSON
object instead) and writes OUT/summary.json, OUT/report.md, OUT/index.html and the
PNGs (OUT/EXPERIMENT.png, -latency.png, -bars.png).  OUT defaults to a new directory
under the system temp dir ($TMPDIR, else /tmp), short enough for the kernels' Unix
sockets, and is printed.  Progress goes to stderr: live bars on a terminal, plain
lines otherwise.  Exit status: 0 when every configuration that could run ran ok
(those "not available" in this tree are skipped), 1 otherwise, 2 for a usage error.
``plot DIR`` draws the PNGs of an earlier run from its recorded samples.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from lab.experiments import calibration, report
from lab.experiments.base import experiments, find
from lab.experiments.plot import PlotUnavailable, plot_experiment, plot_summary
from lab.experiments.progress import reporter
from lab.experiments.runner import OK, UNAVAILABLE, run_experiments
from protocol import logs


def say(text: str):
    print(text, file=sys.stderr, flush=True)


def default_out() -> Path:
    """A new directory under the system temp dir."""
    return Path(tempfile.mkdtemp(prefix=time.strftime("mxexp-%m%d-%H%M%S-"),
                                 dir=tempfile.gettempdir()))


def cmd_list(args) -> int:
    exps = [cls() for cls in experiments().values()]
    if args.json:
        print(json.dumps([e.describe() for e in exps], indent=1))
        return 0
    for e in exps:
        d = e.describe()
        print(f"{e.name} ({', '.join(e.aliases)}): {e.title}")
        print(f"  claim: {e.claim.text}")
        print(f"  source: {e.claim.source}; published: {e.claim.figure}")
        print(f"  workload: {e.workload}")
        print(f"  samples: {e.samples}")
        print(f"  time series: {', '.join(label for _, label, _ in d['timeseries'])}")
        print(f"  figures: {', '.join(label for _, label in d['bars'])}")
        print(f"  bound per configuration: {e.timeout(True):.0f} s with --quick, "
              f"{e.timeout(False):.0f} s without")
        print("  configurations:")
        for c in e.configurations:
            print(f"  - {c.name}: {c.description}")
    return 0


def draw(exp, results: list[dict], out: Path) -> dict[str, str]:
    """The experiment's PNGs (kind -> path), none without matplotlib (why said)."""
    try:
        return plot_experiment(exp.describe(), results, out)
    except PlotUnavailable as e:
        say(f"experiment: {exp.name}: {e}")
        return {}


def invoke(exps: list, out: Path, *, quick: bool = False, repeat: int = 1, only=(),
           keep_images: bool = False, calibrate: bool = True, progress=None,
           log=None) -> tuple[dict, dict[str, list[dict]]]:
    """One invocation: the calibration, every run, the plots and the report files in
    ``out``; returns (the summary object (summary.json's), the results by
    experiment)."""
    progress = progress or reporter()
    started = time.time()
    try:
        cal = (calibration.measure(out / "calibration", say=progress.say)
               if calibrate else None)
        if cal and cal.get("error"):
            progress.say(f"experiment: calibration failed: {cal['error']}")
        by_exp, _ = run_experiments(exps, out, quick, repeat=repeat, only=only,
                                    keep_big=keep_images, progress=progress, log=log)
    finally:
        progress.close()
    plots = {exp.name: draw(exp, by_exp.get(exp.name, []), out) for exp in exps}
    obj = report.summary_object(out, quick, exps, by_exp, plots, started, time.time(),
                                repeat=repeat, calibration=cal)
    report.write_report(out, obj, exps, by_exp)
    return obj, by_exp


def cmd_run(args) -> int:
    names = args.names or list(experiments())
    exps = []
    for n in names:
        cls = find(n)
        if cls is None:
            say(f"experiment: no experiment {n!r} (scripts/experiment list)")
            return 2
        if cls.name not in (e.name for e in exps):
            exps.append(cls())
    only = set(args.config or ())
    known = {c.name for e in exps for c in e.configurations}
    if only - known:
        say(f"experiment: no configuration {', '.join(sorted(only - known))} in "
            f"{', '.join(e.name for e in exps)} (scripts/experiment list)")
        return 2
    out = Path(args.out).resolve() if args.out else default_out()
    out.mkdir(parents=True, exist_ok=True)
    log = logs.setup("experiment", out / "experiment.log")
    say(f"experiment: results in {out}")
    obj, by_exp = invoke(exps, out, quick=args.quick, repeat=args.repeat, only=only,
                         keep_images=args.keep_images, calibrate=not args.no_calibration,
                         log=log)
    if args.json:
        print(json.dumps(obj, default=str))
    else:
        report.print_tables(exps, by_exp)
        print(f"\nreport: {out / 'report.md'}  page: {out / 'index.html'}  "
              f"summary: {out / 'summary.json'}")
    bad = [r for rs in by_exp.values() for r in rs if r["status"] not in (OK, UNAVAILABLE)]
    return 1 if bad else 0


def cmd_plot(args) -> int:
    out = Path(args.dir).resolve()
    try:
        made = plot_summary(out)
    except (OSError, ValueError, PlotUnavailable) as e:
        say(f"experiment: no plots from {out}: {e}")
        return 1
    for p in made:
        print(p)
    return 0 if made else 1


def positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="experiment", description="The seed's claims as "
                                 "experiments: each configuration on a real cluster, "
                                 "one table per experiment.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list", help="the experiments, their claims and configurations")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(fn=cmd_list)
    p = sub.add_parser("run", help="run experiments (all without a name)")
    p.add_argument("names", nargs="*", metavar="NAME", help="experiment name or alias (E1)")
    p.add_argument("--quick", action="store_true",
                   help="reduced sizes that still show the effect (CI; minutes)")
    p.add_argument("--out", metavar="DIR",
                   help="results directory (default: a new one under the system temp dir)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--keep-images", action="store_true",
                   help="keep each run's ext2 image and swap file")
    p.add_argument("--config", action="append", metavar="NAME",
                   help="run only this configuration (repeatable; default: all)")
    p.add_argument("--repeat", type=positive, default=1, metavar="N",
                   help="run every configuration N times, in alternating order "
                        "(ABC CBA ...), and report the medians (default 1)")
    p.add_argument("--no-calibration", action="store_true",
                   help="skip measuring the transport floor and the kernel's null RPC")
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("plot", help="draw the PNGs of an earlier run from its samples")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(fn=cmd_plot)
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        say("experiment: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
