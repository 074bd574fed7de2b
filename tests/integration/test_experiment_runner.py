"""The experiment runner on real clusters: a configuration that outlives its time bound
is stopped and reported "timed out" (never hangs), its cluster stopped and its samples
kept; a cluster that cannot start is reported "failed"; the recorder samples the
kernel's counters, the port queues and every process while a workload runs."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from lab.experiments.base import Claim, Configuration, Experiment, Step
from lab.experiments.runner import FAILED, OK, TIMED_OUT, ConfigRun
from lab.experiments.summary import load_samples, peak
from lab.rundir import RunDir

BOUND = 25.0


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
