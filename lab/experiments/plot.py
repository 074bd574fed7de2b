"""The PNG of an experiment: one panel per series it plots (ext2fs threads, data_returns
in flight, ...), one line per configuration, time on a shared x axis (matplotlib, Agg
backend: no display needed).  Without matplotlib there is no PNG and the report says
so (PlotUnavailable); ``scripts/experiment plot DIR`` draws them later from the recorded
samples with a Python that has it."""

from __future__ import annotations

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


def plot_experiment(exp, results: list[dict], path: Path) -> Path | None:
    """Draw ``exp``'s panels for the runs in ``results`` (their DIR/samples.jsonl) into
    ``path``; None if no run has samples.  PlotUnavailable without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise PlotUnavailable(f"matplotlib is not installed ({e}): no plot") from None
    runs = [(r["config"], load_samples(Path(r["run_dir"]) / "samples.jsonl"))
            for r in results]
    runs = [(c, s) for c, s in runs if s]
    if not runs or not exp.plots:
        return None
    fig, axes = plt.subplots(len(exp.plots), 1, sharex=True, squeeze=False,
                             figsize=(9, 3.2 * len(exp.plots)))
    for ax, (paths, label) in zip(axes[:, 0], exp.plots):
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
        ax.legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel("seconds since the recorder started")
    fig.suptitle(exp.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
