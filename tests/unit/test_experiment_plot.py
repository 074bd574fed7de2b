"""The PNGs of an experiment without a cluster, from samples and summaries written as
the recorder and the load generator write them: time series (an optional panel left
out where it has nothing), latency CDFs (the loadgen's bounded cdf), bars with the
spread of repeated runs, and all of them redrawn from summary.json."""

from __future__ import annotations

import json
import random

import pytest

from lab.experiments import report
from lab.experiments.base import Claim, Configuration, Experiment
from lab.experiments.plot import (
    latency_specs,
    plot_bars,
    plot_experiment,
    plot_latency,
    plot_runs,
    plot_summary,
    short,
)
from lab.experiments.repeat import aggregate
from lab.loadgen.latency import CDF_FRACTIONS, Latencies

pytestmark = pytest.mark.timeout(120)
matplotlib = pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR."""
    data = path.read_bytes()
    assert data[:8] == PNG, path
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def write_run(d, threads, free, ms_scale, seed):
    """A run directory with samples (threads rising, free pages falling, no dirty
    page) and a latency summary from ``ms_scale``-ms operations."""
    d.mkdir(parents=True)
    with open(d / "samples.jsonl", "w") as f:
        for i in range(50):
            f.write(json.dumps({"t": i / 10, "time": 1000 + i / 10,
                                "vm": {"free_count": free - i, "dirty_count": 0},
                                "procs": {"srv": {"threads": threads + i // 5}}}) + "\n")
    rnd = random.Random(seed)
    lat = Latencies()
    for _ in range(2000):
        lat.add(rnd.expovariate(1000 / ms_scale))
    return lat.summary_ms()


def results(tmp_path, repeat=1):
    out = []
    for name, threads, scale in (("a", 5, 1.0), ("b", 50, 10.0)):
        runs = []
        for k in range(1, repeat + 1):
            d = tmp_path / "exp" / name / (f"r{k}" if repeat > 1 else "")
            lat = write_run(d, threads + k, 2000, scale, k)
            runs.append({"config": name, "status": "ok", "run_dir": str(d),
                         "run": k if repeat > 1 else None, "wall_s": 5.0,
                         "results": {"step": {"latency_ms": lat, "other_ms": 3}},
                         "row": {"peak": threads + k, "p99": lat["p99"], "mode": "x"}})
        out.append(aggregate(runs))
    return out


class Exp(Experiment):
    name = "exp"
    title = "exp"
    claim = Claim("c", "s", "f")
    configurations = (Configuration("a", "a"), Configuration("b", "b"))
    columns = (("peak", "peak threads"), ("p99", "p99 ms"), ("mode", "mode"),
               ("wall_s", "wall s"), ("status", "status"))
    plots = ((("procs.srv.threads",), "srv threads"),)
    server = "srv"


def test_the_cdf_the_loadgen_writes():
    lat = Latencies(cap=10)  # past the cap: from the histogram
    exact = Latencies()
    for i in range(1, 1001):
        lat.add(i / 1e6)
        exact.add(i / 1e6)
    cdf = lat.cdf_ms()
    assert len(cdf) == len(CDF_FRACTIONS) + 1 <= 110  # bounded
    assert cdf[0] == [0.001, 0.001] and cdf[-1] == [1.0, 1.0]  # min first, max last
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(cdf, cdf[1:]))
    for (x, q), (ex, eq) in zip(cdf, exact.cdf_ms()):
        assert q == eq and x == pytest.approx(ex, rel=0.01)  # buckets 1 % wide
    assert exact.cdf_ms()[50] == [0.5, 0.5]
    assert Latencies().cdf_ms() == [] and "cdf" not in Latencies().summary_ms()
    assert lat.quantiles((0.5, 0.9)) == [lat.quantile(0.5), lat.quantile(0.9)]


def test_time_series_leave_out_optional_panels_with_nothing(tmp_path):
    res = results(tmp_path)
    panels = Exp().timeseries()
    labels = [p[1] for p in panels]
    assert labels[0] == "srv threads" and "dirty pages" in labels and "srv threads" \
        not in labels[1:]  # a standard panel the experiment has is not drawn twice
    p = plot_runs("t", panels, res, tmp_path / "ts.png")
    w, h = png_size(p)
    # srv threads and free pages: one column of two panels (dirty pages are all 0,
    # potentially dirty, returns in flight and map entries absent)
    assert w == 900 and 500 <= h <= 600, (w, h)
    assert plot_runs("t", panels[2:3], res, tmp_path / "none.png") is None  # dirty: 0
    assert not (tmp_path / "none.png").exists()


def test_latency_cdfs_and_bars(tmp_path):
    res = results(tmp_path, repeat=2)
    assert latency_specs((), res) == [("step", "latency_ms", "step: latency")]
    p = plot_latency("t", (), res, tmp_path / "lat.png")
    assert png_size(p)[0] > 500
    assert plot_latency("t", (("step", "absent_ms", "x"),), res, tmp_path / "x.png") is None
    bars = Exp().bar_columns()
    assert bars == [["peak", "peak threads"], ["p99", "p99 ms"], ["mode", "mode"]]
    p = plot_bars("t", bars, res, tmp_path / "bars.png")
    w, h = png_size(p)
    assert w == 2 * 330 and h == 290  # two numeric figures; "mode" is not a number
    assert res[0]["spread"]["peak"] == [6, 7]  # drawn as its error bar
    assert short(1234.5) == "1,234" and short(3.0) == "3" and short(0.0123) == "0.0123"


def test_every_png_redrawn_from_summary_json(tmp_path):
    exp, res = Exp(), results(tmp_path, repeat=2)
    drawn = plot_experiment(exp.describe(), res, tmp_path)
    assert set(drawn) == {"timeseries", "latency", "bars"}
    obj = report.summary_object(tmp_path, True, [exp], {"exp": res}, {"exp": drawn},
                                0.0, 1.0, repeat=2)
    report.write_summary(tmp_path, obj)
    for p in drawn.values():
        (tmp_path / p).unlink()
    made = plot_summary(tmp_path)
    assert sorted(p.name for p in made) == ["exp-bars.png", "exp-latency.png", "exp.png"]
    assert all(png_size(p) for p in made)
