"""The PNG of an experiment: one panel per series it plots (ext2fs threads, data_returns
in flight, ...), one line per configuration, time on a shared x axis (matplotlib, Agg
backend: no display needed).

Without matplotlib there is no PNG and the report says so (PlotUnavailable).  This
module needs nothing but the standard library and matplotlib, so any Python that has
matplotlib draws the plots of a finished run from its summary.json and samples::

    python3 -m lab.experiments.plot DIR      # (or scripts/experiment plot DIR)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lab.experiments.summary import load_samples, series


class PlotUnavailable(Exception):
    """matplotlib cannot be imported here."""


def panel_series(samples: list[dict], paths) -> tuple[str | None, list[tuple[float, float]]]:
    """The first of ``paths`` the samples have, and its series."""
    for p in paths:
        s = series(samples, p)
        if s:
            return p, s
    return None, []


def plot_runs(title: str, panels, results: list[dict], path: Path) -> Path | None:
    """Draw ``panels`` (each (sample paths, y label)) for the runs in ``results`` (each
    with ``config`` and ``run_dir`` holding samples.jsonl) into ``path``; None if no run
    has samples.  PlotUnavailable without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise PlotUnavailable(f"matplotlib is not installed ({e}): no plot; draw it later "
                              "with `python3 -m lab.experiments.plot OUT` (or scripts/"
                              "experiment plot OUT) where matplotlib is") from None
    runs = [(r["config"], load_samples(Path(r["run_dir"]) / "samples.jsonl"))
            for r in results if r.get("run_dir")]
    runs = [(c, s) for c, s in runs if s]
    if not runs or not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, sharex=True, squeeze=False,
                             figsize=(9, 3.2 * len(panels)))
    for ax, (paths, label) in zip(axes[:, 0], panels):
        used = set()
        for config, samples in runs:
            p, s = panel_series(samples, paths)
            if not s:
                continue
            used.add(p)
            ax.plot([t for t, _ in s], [v for _, v in s], label=config, linewidth=1.2)
        ax.set_ylabel(label)
        ax.set_title(f"{label}  ({', '.join(sorted(used)) or 'no data'})", fontsize=9)
        ax.grid(True, alpha=0.3)
        if used:
            ax.legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel("seconds since the recorder started")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_summary(out: Path) -> list[Path]:
    """The PNGs of every experiment of a finished run OUT (its summary.json); OSError
    or ValueError if it cannot be read, PlotUnavailable without matplotlib."""
    obj = json.loads((Path(out) / "summary.json").read_text())
    made = []
    for name, e in obj.get("experiments", {}).items():
        p = plot_runs(e.get("title", name), e.get("plots", ()), e.get("results", []),
                      Path(out) / f"{name}.png")
        if p:
            made.append(p)
    return made


if __name__ == "__main__":
    try:
        for p in plot_summary(Path(sys.argv[1])):
            print(p)
    except (OSError, ValueError, IndexError, PlotUnavailable) as e:
        print(f"plot: {e}", file=sys.stderr)
        sys.exit(1)
