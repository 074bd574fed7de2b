"""The PNGs of an experiment (matplotlib, Agg backend: no display needed), a colour
per configuration throughout:

- ``EXP.png``: time series, one panel per series (the experiment's own, then the
  standard ones that have data), one line per configuration and run, time on a
  shared x axis;
- ``EXP-latency.png``: the CDF of each latency the workload summaries carry (the load
  generator's bounded ``cdf``), one line per configuration and run, log x axis;
- ``EXP-bars.png``: a bar per configuration for each summary figure of the table:
  the median, with the min-max spread of its runs as an error bar.

Without matplotlib there is no PNG and the report says so (PlotUnavailable).  This
module needs nothing but the standard library, matplotlib and the pure modules beside
it, and takes what an experiment declares as data (``Experiment.describe()``, which
summary.json keeps), so any Python that has matplotlib draws the plots of a finished
run from its summary.json and samples::

    python3 -m lab.experiments.plot DIR      # (or scripts/experiment plot DIR)
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from lab.experiments.repeat import is_number, runs_of
from lab.experiments.summary import load_samples, series

GRID_COLUMNS = 2   # time-series and latency panels side by side past 3 of them
BAR_COLUMNS = 4    # bar panels per row


class PlotUnavailable(Exception):
    """matplotlib cannot be imported here."""


def pyplot():
    """matplotlib.pyplot on the Agg backend; PlotUnavailable without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise PlotUnavailable(f"matplotlib is not installed ({e}): no plot; draw it later "
                              "with `python3 -m lab.experiments.plot OUT` (or scripts/"
                              "experiment plot OUT) where matplotlib is") from None
    return plt


def colours(results: list[dict]) -> dict[str, str]:
    """A colour per configuration, in the order of ``results``."""
    palette = [f"C{i}" for i in range(10)]
    return {r["config"]: palette[i % len(palette)] for i, r in enumerate(results)}


def grid(plt, n: int, columns: int, height: float, width: float, sharex: bool):
    """A figure of ``n`` panels, ``columns`` wide (fewer if n is small); the unused
    axes hidden.  Returns (figure, the n axes)."""
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, sharex=sharex, squeeze=False,
                             figsize=(width * cols, height * rows))
    flat = [a for row in axes for a in row]
    for a in flat[n:]:
        a.set_visible(False)
    if sharex:  # the panels above a hidden one keep their tick labels
        for i, a in enumerate(flat[:n]):
            if i + cols >= n:
                a.xaxis.set_tick_params(labelbottom=True)
    return fig, flat[:n]


def figure(plt, panels: list[tuple[str, list]], columns: int, height: float,
           width: float):
    """(figure, [(axes, panel)]) for the ``panels`` (label, what to draw) that have
    something to draw; None if none has."""
    panels = [p for p in panels if p[1]]
    if not panels:
        return None
    fig, axes = grid(plt, len(panels), columns, height, width, sharex=False)
    return fig, list(zip(axes, panels))


def repeated(title: str, results: list[dict]) -> str:
    """The title, saying what the thinner lines are when a configuration ran twice or
    more."""
    return title + ("\n(thin lines: the later runs)"
                    if any(len(runs_of(r)) > 1 for r in results) else "")


def save(fig, plt, title: str, path: Path) -> Path:
    fig.suptitle(title, fontsize=10, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- time series

def panel_series(samples: list[dict], paths) -> tuple[str | None, list[tuple[float, float]]]:
    """The first of ``paths`` the samples have, and its series."""
    for p in paths:
        s = series(samples, p)
        if s:
            return p, s
    return None, []


def run_samples(results: list[dict]) -> list[tuple[str, int, list[dict]]]:
    """(config, index of the run, samples) of every run that has samples."""
    out = []
    for r in results:
        for i, run in enumerate(runs_of(r)):
            if run.get("run_dir"):
                s = load_samples(Path(run["run_dir"]) / "samples.jsonl")
                if s:
                    out.append((r["config"], i, s))
    return out


def plot_runs(title: str, panels, results: list[dict], path: Path) -> Path | None:
    """Draw the time-series ``panels`` (each (sample paths, y label[, optional])) for
    the runs of ``results`` (each with ``config`` and ``run_dir`` holding
    samples.jsonl, or ``runs`` that have) into ``path``; an optional panel is left
    out when no run has a non-zero value in it.  None if no run has samples.
    PlotUnavailable without matplotlib."""
    plt = pyplot()
    runs = run_samples(results)
    if not runs or not panels:
        return None
    drawn = []
    for panel in panels:
        paths, label = panel[0], panel[1]
        optional = len(panel) > 2 and panel[2]
        lines = [(c, i, *panel_series(s, paths)) for c, i, s in runs]
        lines = [x for x in lines if x[3]]
        if optional and not any(v for *_, s in lines for _, v in s):
            continue
        drawn.append((label, lines))
    if not drawn:
        return None
    colour = colours(results)
    fig, axes = grid(plt, len(drawn), GRID_COLUMNS if len(drawn) > 3 else 1, 2.8, 6.5
                     if len(drawn) > 3 else 9, sharex=True)
    for ax, (label, lines) in zip(axes, drawn):
        used = sorted({p for _, _, p, _ in lines})
        for config, i, _, s in lines:
            ax.plot([t for t, _ in s], [v for _, v in s], color=colour[config],
                    label=config if i == 0 else None, linewidth=1.2 if i == 0 else 0.8,
                    alpha=1.0 if i == 0 else 0.6)
        ax.set_ylabel(label, fontsize=8)
        ax.set_title(f"{label}  ({', '.join(used) or 'no data'})", fontsize=8)
        ax.grid(True, alpha=0.3)
        if lines:
            ax.legend(fontsize=7, loc="best")
    for ax in axes[-min(len(axes), GRID_COLUMNS if len(drawn) > 3 else 1):]:
        ax.set_xlabel("seconds since the recorder started", fontsize=8)
    return save(fig, plt, repeated(title, results), path)


# ---------------------------------------------------------------- latency CDFs

def latency_specs(declared, results: list[dict]) -> list[tuple[str, str, str]]:
    """(step, key, label) of each latency to draw: ``declared``, else every
    "*latency_ms" summary with a ``cdf`` in any run's steps, in the order found."""
    if declared:
        return [tuple(x) for x in declared]
    found = {}
    for r in results:
        for run in runs_of(r):
            for step, s in (run.get("results") or {}).items():
                for k, v in s.items():
                    if k.endswith("latency_ms") and isinstance(v, dict) and v.get("cdf"):
                        found.setdefault((step, k), f"{step}: {k.removesuffix('_ms')}")
    return [(step, k, label) for (step, k), label in found.items()]


def plot_latency(title: str, declared, results: list[dict], path: Path) -> Path | None:
    """The CDF of each latency (``latency_specs``) of the runs of ``results`` into
    ``path``: fraction of operations at or below x ms; None if no run has one."""
    plt = pyplot()
    def curves(step, key):
        """(config, run index, CDF points, the latency summary) of each run."""
        for r in results:
            for i, run in enumerate(runs_of(r)):
                lat = ((run.get("results") or {}).get(step) or {}).get(key) or {}
                pts = [(x, q) for x, q in lat.get("cdf") or () if x > 0]
                if pts:
                    yield r["config"], i, pts, lat

    panels = [(label, list(curves(step, key)))
              for step, key, label in latency_specs(declared, results)]
    if not (drawn := figure(plt, panels, GRID_COLUMNS, 3.6, 6.5)):
        return None
    fig, pairs = drawn
    colour = colours(results)
    for ax, (label, lines) in pairs:
        for config, i, pts, lat in lines:
            xs = [x for x, _ in pts]
            ys = [q for _, q in pts]
            tag = (f"{config} (p50 {short(lat['p50'])}, p99 {short(lat['p99'])} ms)"
                   if i == 0 and is_number(lat.get("p50")) and is_number(lat.get("p99"))
                   else config if i == 0 else None)
            ax.step(xs, ys, where="post", color=colour[config], label=tag,
                    linewidth=1.2 if i == 0 else 0.8, alpha=1.0 if i == 0 else 0.6)
        for q in (0.5, 0.99):
            ax.axhline(q, color="grey", linewidth=0.6, linestyle=":")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("latency, ms (log)", fontsize=8)
        ax.set_ylabel("fraction of operations", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.grid(True, alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left")  # a CDF leaves that corner empty
    return save(fig, plt, repeated(title, results), path)


# ---------------------------------------------------------------- bars

def short(v) -> str:
    """A bar's value: whole numbers with thousands separators, else 3 digits."""
    if abs(v) >= 1000 or float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:.3g}"


def plot_bars(title: str, bars, results: list[dict], path: Path) -> Path | None:
    """A bar chart per figure of ``bars`` ([row key, label] each): one bar per
    configuration at its (median) value, the min-max of its runs as an error bar, the
    value written above it, every configuration in the same place in every chart (one
    without the figure leaves its place empty); figures no configuration has are left
    out.  None if there is no figure to draw."""
    plt = pyplot()
    names = [r["config"] for r in results]
    panels = [(label, [(i, r["config"], r["row"][key], (r.get("spread") or {}).get(key))
                       for i, r in enumerate(results)
                       if is_number((r.get("row") or {}).get(key))])
              for key, label in bars]
    if not (drawn := figure(plt, panels, BAR_COLUMNS, 2.9, 3.3)):
        return None
    fig, pairs = drawn
    colour = colours(results)
    for ax, (label, vals) in pairs:
        heights = [v for _, _, v, _ in vals]
        lo = [v - sp[0] if sp else 0 for _, _, v, sp in vals]
        hi = [sp[1] - v if sp else 0 for _, _, v, sp in vals]
        err = [lo, hi] if any(lo) or any(hi) else None
        drawn = ax.bar([i for i, *_ in vals], heights, yerr=err, capsize=3 if err else 0,
                       color=[colour[c] for _, c, _, _ in vals])
        ax.bar_label(drawn, labels=[short(v) for v in heights], fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_title(label, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.margins(y=0.15)
        ax.grid(True, axis="y", alpha=0.3)
    return save(fig, plt, title, path)


# ---------------------------------------------------------------- all of them

def plot_experiment(desc: dict, results: list[dict], out: Path) -> dict[str, str]:
    """Every PNG of one experiment (``desc``: its ``describe()``) into OUT: kind
    (timeseries, latency, bars) -> path of those drawn.  PlotUnavailable without
    matplotlib."""
    name, title = desc["name"], desc.get("title") or desc["name"]
    made = {
        "timeseries": plot_runs(title, desc.get("timeseries") or desc.get("plots", ()),
                                results, Path(out) / f"{name}.png"),
        "latency": plot_latency(f"{title}: latency CDFs", desc.get("latencies"), results,
                                Path(out) / f"{name}-latency.png"),
        "bars": plot_bars(f"{title}: summary figures", desc.get("bars")
                          or desc.get("columns", ()), results, Path(out) / f"{name}-bars.png"),
    }
    return {k: str(p) for k, p in made.items() if p}


def plot_summary(out: Path) -> list[Path]:
    """The PNGs of every experiment of a finished run OUT (its summary.json); OSError
    or ValueError if it cannot be read, PlotUnavailable without matplotlib."""
    obj = json.loads((Path(out) / "summary.json").read_text())
    made = []
    for name, e in obj.get("experiments", {}).items():
        made += [Path(p) for p in plot_experiment({"name": name, **e}, e.get("results", []),
                                                  Path(out)).values()]
    return made


if __name__ == "__main__":
    try:
        for p in plot_summary(Path(sys.argv[1])):
            print(p)
    except (OSError, ValueError, IndexError, PlotUnavailable) as e:
        print(f"plot: {e}", file=sys.stderr)
        sys.exit(1)
