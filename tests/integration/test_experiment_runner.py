"""The experiment runner on real clusters: a configuration that outlives its time bound
is stopped and reported "timed out" (never hangs), its cluster stopped and its samples
kept; a cluster that cannot start is reported "failed"; the recorder samples the
kernel's counters, the port queues and every process while a workload runs.  A whole
invocation of a two-configuration experiment with --repeat 2: the alternating order,
a directory per run, medians and spreads, the calibration, the latency CDFs, the
plots, report.md and index.html."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest

from lab.experiments.base import Claim, Configuration, Experiment, Step
from lab.experiments.cli import invoke
from lab.experiments.progress import Quiet
from lab.experiments.runner import FAILED, OK, TIMED_OUT, ConfigRun
from lab.experiments.summary import load_samples, peak
from lab.rundir import RunDir

BOUND = 25.0
SLEEP_MS = 3


class Tiny(Experiment):
    """An experiment of the demo server and the flood workload (not registered)."""

    name = "tiny"
    title = "tiny"
    claim = Claim("a bound holds", "this test", "none")
    configurations = (Configuration("flood", "demo flood"),)
    workload = "flood"
    samples = "everything"
    columns = (("threads_peak", "demo threads"),)

    def __init__(self, duration: float, module: str = "translators.demo"):
        self.duration, self.module = duration, module

    def timeout(self, quick):
        return BOUND

    def kernel_base(self, quick):
        return {"physical_pages": 1024}

    def servers(self, config, quick):
        return [{"name": "demo", "module": self.module, "args": [], "role": "server"}]

    def steps(self, config, quick):
        return [Step("flood", "flood", ("--server", "demo", "--tasks", "2",
                                        "--duration", f"{self.duration:g}"))]

    def row(self, config, samples, results, kernel):
        return {"threads_peak": peak(samples, "procs.demo.threads"),
                "ok": (results.get("flood") or {}).get("ok")}



def kernel_gone(run_dir: Path) -> bool:
    return not RunDir(run_dir).kernel_listening()


@pytest.mark.timeout(180)
def test_a_run_past_its_bound_is_stopped_and_reported(run_dir):
    t0 = time.monotonic()
    r = ConfigRun(Tiny(duration=600), Tiny.configurations[0], run_dir, quick=True).run()
    took = time.monotonic() - t0
    assert r["status"] == TIMED_OUT, r
    assert "bound" in r["reason"]
    assert r["results"]["flood"]["interrupted"] is True  # SIGINT: it stopped early
    # stopped at the bound, then SIGINT and at most the stop grace periods
    assert BOUND <= took < BOUND + 60, took
    run_dir = Path(r["run_dir"])
    assert kernel_gone(run_dir)
    samples = load_samples(run_dir / "samples.jsonl")
    assert len(samples) == r["samples"] > 10
    # the recorder followed the kernel, the demo server and the workload's tasks
    assert all("vm" in s for s in samples)
    assert any("ports" in s for s in samples)
    labels = set().union(*(s["procs"] for s in samples))
    assert {"kernel", "demo", "loadgen"} <= labels
    assert any(k.startswith("loadgen.") for k in labels), labels
    assert r["row"]["threads_peak"] >= 1


@pytest.mark.timeout(180)
def test_a_finished_run_is_ok_and_leaves_nothing_running(run_dir):
    r = ConfigRun(Tiny(duration=2), Tiny.configurations[0], run_dir, quick=True).run()
    assert r["status"] == OK, r
    assert r["results"]["flood"]["ok"] > 0 and r["row"]["ok"] > 0
    run_dir = Path(r["run_dir"])
    assert kernel_gone(run_dir)
    assert not [p for p in psutil.process_iter(["cmdline"])
                if str(run_dir) in " ".join(p.info["cmdline"] or [])]


@pytest.mark.timeout(180)
def test_a_cluster_that_cannot_start_is_reported(run_dir):
    r = ConfigRun(Tiny(2, module="translators.no_such_server"), Tiny.configurations[0],
                  run_dir, quick=True).run()
    assert r["status"] == FAILED
    assert "cluster did not start" in r["reason"] and "demo" in r["reason"]
    assert kernel_gone(Path(r["run_dir"]))


# ---------------------------------------------------------------- an invocation

class TwoRpcs(Tiny):
    """Two configurations of the flood: null RPCs, and demo_sleep RPCs that hold a
    server thread SLEEP_MS each (a latency the CDF must show)."""

    name = "tworpcs"
    title = "tworpcs: null against sleeping RPCs"
    server = "demo"
    configurations = (Configuration("null", "demo_null"),
                      Configuration("sleep", f"demo_sleep {SLEEP_MS} ms"))
    columns = (("threads_peak", "demo threads"), ("calls_per_s", "calls/s"),
               ("p50_ms", "p50 ms"), ("wall_s", "wall s"), ("status", "status"))

    def steps(self, config, quick):
        rpc = ("--rpc", "sleep", "--sleep-ms", str(SLEEP_MS)) if config.name == "sleep" else ()
        return [Step("flood", "flood", ("--server", "demo", "--tasks", "1", "--threads", "2",
                                        "--duration", f"{self.duration:g}", *rpc))]

    def row(self, config, samples, results, kernel):
        s = results.get("flood") or {}
        return {"threads_peak": peak(samples, "procs.demo.threads"),
                "calls_per_s": s.get("calls_per_s"),
                "p50_ms": (s.get("latency_ms") or {}).get("p50"), "ok": s.get("ok")}


class Order(Quiet):
    """Records the order the runs start in."""

    def __init__(self):
        self.started = []

    def run_started(self, exp, config, run, repeat):
        super().run_started(exp, config, run, repeat)
        self.started.append((config.name, run))


def is_png(path: Path) -> bool:
    return path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" \
        and path.stat().st_size > 5000


@pytest.mark.timeout(420)
def test_an_invocation_with_repeat_calibration_report_and_plots(run_dir):
    order = Order()
    obj, by = invoke([TwoRpcs(duration=2)], run_dir, quick=True, repeat=2, progress=order)
    # alternating order, each run in its own directory
    assert order.started == [("null", 1), ("sleep", 1), ("sleep", 2), ("null", 2)]
    results = {r["config"]: r for r in by["tworpcs"]}
    assert list(results) == ["null", "sleep"]
    for name, r in results.items():
        assert r["status"] == OK and r["repeat"] == 2 and r["runs_ok"] == 2, r
        dirs = [Path(x["run_dir"]) for x in r["runs"]]
        assert dirs == [run_dir / "tworpcs" / name / "r1", run_dir / "tworpcs" / name / "r2"]
        assert all(load_samples(d / "samples.jsonl") for d in dirs)
        # the row is the median (of two: their mean) and the spread their min-max
        vals = [x["row"]["calls_per_s"] for x in r["runs"]]
        assert r["row"]["calls_per_s"] == pytest.approx(sum(vals) / 2, rel=1e-3)
        if vals[0] != vals[1]:
            assert r["spread"]["calls_per_s"] == [min(vals), max(vals)]
    # the sleeping RPCs are slower, in the rows and in the CDFs the loadgen wrote
    null, sleep = results["null"], results["sleep"]
    assert sleep["row"]["p50_ms"] >= SLEEP_MS > null["row"]["p50_ms"], (sleep, null)
    cdf = {n: r["runs"][0]["results"]["flood"]["latency_ms"]["cdf"]
           for n, r in results.items()}
    half = {n: next(x for x, q in c if q >= 0.5) for n, c in cdf.items()}
    assert half["sleep"] >= SLEEP_MS > half["null"], half
    # summary.json keeps every run's row and the CDFs
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["repeat"] == 2
    s = {r["config"]: r for r in saved["experiments"]["tworpcs"]["results"]}
    assert [x["row"]["calls_per_s"] for x in s["sleep"]["runs"]] == [
        x["row"]["calls_per_s"] for x in sleep["runs"]]
    assert s["sleep"]["runs"][1]["results"]["flood"]["latency_ms"]["cdf"]
    # the calibration, measured at the start
    cal = saved["calibration"]
    assert "error" not in cal, cal
    assert 0 < cal["floor_rtt_us"]["p50"] <= cal["floor_rtt_us"]["p99"]
    assert cal["null_rpc_us"]["p50"] > 0 and cal["null_rpc_floor_ratio"] > 0
    assert cal["host"]["cores"] >= 1 and cal["host"]["memory_bytes"] > 0
    # the plots, and the report in both forms, the same content
    figs = saved["experiments"]["tworpcs"]["figures"]
    assert set(figs) == {"timeseries", "latency", "bars"}
    for p in figs.values():
        assert is_png(Path(p)), p
    md = (run_dir / "report.md").read_text()
    page = (run_dir / "index.html").read_text()
    for text in (TwoRpcs.claim.text, "transport floor", "kernel null RPC", "1024 pages"):
        assert text in md and text in page, text
    assert "| null |" in md and "ok, 2/2 ok" in md
    assert md.count("![tworpcs") == 3 and page.count('src="data:image/png;base64,') == 3
    # tables: the calibration, the claim beside the result, the measured, the runs'
    # calibration; no script, nothing fetched from outside the page
    assert page.count("<table") == 4
    assert "<script" not in page and "http" not in page
