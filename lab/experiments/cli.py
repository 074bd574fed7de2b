"""The experiment runner's command line (scripts/experiment).

    experiment list [--json]
    experiment run [NAME...] [--quick] [--out DIR] [--json] [--keep-images] [--config C]...
    experiment plot DIR

``run`` runs every configuration of each named experiment (all of them without a name;
names or aliases such as E1), one after the other, each on a fresh real cluster in
OUT/EXPERIMENT/CONFIG, bounded in time; then prints one table per experiment (``--json``:
one JSON object instead) and writes OUT/summary.json, OUT/report.md and
OUT/EXPERIMENT.png.  OUT defaults to a new directory under the system temp dir
($TMPDIR, else /tmp), short enough for the kernels' Unix sockets, and is printed.
Progress goes to stderr.  Exit status: 0 when every configuration that could run ran
ok (those "not available" in this tree are skipped), 1 otherwise, 2 for a usage error.
``plot DIR`` draws the PNGs of an earlier run from its recorded samples.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from lab.experiments import report
from lab.experiments.base import experiments, find
from lab.experiments.plot import PlotUnavailable, plot_runs, plot_summary
from lab.experiments.runner import OK, UNAVAILABLE, ConfigRun
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
        print(f"{e.name} ({', '.join(e.aliases)}): {e.title}")
        print(f"  claim: {e.claim.text}")
        print(f"  source: {e.claim.source}; published: {e.claim.figure}")
        print(f"  workload: {e.workload}")
        print(f"  samples: {e.samples}")
        for c in e.configurations:
            print(f"  - {c.name}: {c.description}")
    return 0


def draw(exp, results: list[dict], out: Path) -> str | None:
    """The experiment's PNG, or None (why said)."""
    try:
        p = plot_runs(exp.title, exp.plots, results, out / f"{exp.name}.png")
    except PlotUnavailable as e:
        say(f"experiment: {exp.name}: {e}")
        return None
    return str(p) if p else None


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
    started = time.time()
    by_exp: dict[str, list[dict]] = {}
    interrupted = False
    for exp in exps:
        results = by_exp.setdefault(exp.name, [])
        for config in exp.configurations:
            if interrupted:
                break
            if only and config.name not in only:
                continue
            say(f"experiment {exp.name}: configuration {config.name}: {config.description}")
            r = ConfigRun(exp, config, out, args.quick, keep_big=args.keep_images,
                          say=say, log=log).run()
            results.append(r)
            say(f"experiment {exp.name}: {config.name}: {r['status']}"
                + (f" ({r['reason']})" if r.get("reason") else "")
                + (f", {r['wall_s']:.0f} s" if r.get("wall_s") is not None else ""))
            interrupted = r["status"] == "interrupted"
    plots = {exp.name: draw(exp, by_exp.get(exp.name, []), out) for exp in exps}
    obj = report.summary_object(out, args.quick, exps, by_exp, plots, started, time.time())
    report.write_summary(out, obj)
    (out / "report.md").write_text(report.markdown(obj, exps, by_exp))
    if args.json:
        print(json.dumps(obj, default=str))
    else:
        report.print_tables(exps, by_exp)
        print(f"\nreport: {out / 'report.md'}  summary: {out / 'summary.json'}")
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
