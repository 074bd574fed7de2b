"""scripts/loadgen against a real kernel and a real demo server (translators.demo).

Each test runs the CLI as a user would (a subprocess, --json) and checks the summary it
prints: counts, errors by code, verification of echoed pages, sampled server threads,
exit statuses.  Speed is never asserted.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from lab.loadgen.latency import Latencies
from tests.conftest import ROOT, run_loadgen, wait_for

LOADGEN = ROOT / "scripts" / "loadgen"


def write_cluster_json(run_dir, kernel, servers):
    """DIR/cluster.json as scripts/launch writes it (format in the shared brief)."""
    procs = [{"name": "kernel", "role": "kernel", "pid": kernel.proc.pid,
              "log": str(run_dir / "kernel.log")}]
    procs += [{"name": name, "role": "server", "pid": p.pid,
               "log": str(run_dir / f"{name}.log")} for name, p in servers.items()]
    (run_dir / "cluster.json").write_text(json.dumps({
        "run_dir": str(run_dir), "kernel": {"endpoint": str(kernel), "pid": kernel.proc.pid},
        "processes": procs, "launcher_pid": os.getpid(), "started": time.time()}))


@pytest.fixture
def demo(kernel, run_dir, procs):
    """A real demo server checked in as "demo", and the run dir's cluster.json."""
    p = procs.python(["-m", "translators.demo", "--run-dir", str(run_dir), "--name", "demo"],
                     name="demo")
    ready = run_dir / "demo.ready"
    wait_for(lambda: ready.exists() or p.p.poll() is not None, 60, what="demo ready")
    assert p.p.poll() is None, p.output()
    write_cluster_json(run_dir, kernel, {"demo": p})
    return p


def loadgen(run_dir, *args, timeout=100):
    return run_loadgen(run_dir, *args, timeout=timeout)


@pytest.mark.timeout(120)
def test_flood_null_count(run_dir, demo):
    code, s, err = loadgen(run_dir, "flood", "--tasks", "2", "--count", "200")
    assert code == 0, (s, err)
    assert s["workload"] == "flood" and s["rpc"] == "null" and s["server_name"] == "demo"
    assert s["calls"] == 200 and s["ok"] == 200
    assert s["errors"] == {} and s["errors_total"] == 0
    assert s["tasks"] == 2 and s["task_failures"] == {}
    lat = s["latency_ms"]
    assert lat["samples"] == 200 and lat["exact"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"]
    assert s["calls_per_s"] > 0 and s["elapsed_s"] > 0
    srv = s["server"]
    assert srv["pid"] == demo.pid  # found through cluster.json
    assert srv["threads_peak"] >= 1 and srv["threads_final"] >= 1
    assert srv["rss_peak"] > 0 and srv["samples"]
    assert s["kernel"]["rss"] > 0
    assert s["exit_status"] == 0


@pytest.mark.timeout(120)
def test_flood_echo_verifies_pages(run_dir, demo):
    code, s, err = loadgen(run_dir, "flood", "--rpc", "echo", "--tasks", "2",
                           "--threads", "2", "--count", "101")
    assert code == 0, (s, err)
    assert s["rpc"] == "echo" and s["threads"] == 4
    assert s["calls"] == 101 and s["verified"] == 101
    assert s["mismatches"] == 0 and s["errors_total"] == 0


@pytest.mark.timeout(120)
def test_flood_duration_and_server_pid_fallback(run_dir, demo):
    # Without cluster.json the kernel is found by its socket and the server's pid through
    # the kernel's task list.
    (run_dir / "cluster.json").unlink()
    code, s, err = loadgen(run_dir, "flood", "--duration", "1")
    assert code == 0, (s, err)
    assert s["mode"] == "duration" and s["calls"] > 0 and s["errors_total"] == 0
    assert s["ok"] == s["calls"] == s["latency_ms"]["samples"]
    assert s["server"]["pid"] == demo.pid


@pytest.mark.timeout(120)
def test_flood_call_timeout_counts_errors_by_code(run_dir, demo):
    # Each demo_sleep holds its reply for 1 s; the caller gives up after 0.6 s.  One
    # thread makes three calls, so the late reply to call k arrives while call k+1 waits:
    # loadgen must drop its reply port after a timeout (as MIG's mig_dealloc_reply_port
    # does) or it would take that stale reply for a success.
    code, s, err = loadgen(run_dir, "flood", "--rpc", "sleep", "--sleep-ms", "1000",
                           "--call-timeout", "0.6", "--count", "3")
    assert code == 1, (s, err)  # every call failed
    assert s["calls"] == 3 and s["ok"] == 0
    assert s["errors"] == {"MACH_RCV_TIMED_OUT": 3}
    assert "failure" in s


@pytest.mark.timeout(60)
def test_unknown_server_is_unreachable(run_dir, kernel):
    code, s, err = loadgen(run_dir, "flood", "--server", "nosuch", "--count", "5")
    assert code == 2
    assert "NETNAME_NOT_CHECKED_IN" in s["error"]


@pytest.mark.timeout(60)
def test_no_kernel_is_unreachable(run_dir):
    code, s, err = loadgen(run_dir, "flood", "--count", "5", "--connect-timeout", "2")
    assert code == 2
    assert "kernel" in s["error"]


def test_latencies_histogram_close_to_exact():
    # Past the exact cap, percentiles come from 1 %-wide log buckets: within 1 %.
    import random

    rng = random.Random(7)
    xs = [rng.lognormvariate(-7, 1.0) for _ in range(5000)]
    exact, capped = Latencies(cap=10_000), Latencies(cap=100)
    halves = Latencies(cap=10_000), Latencies(cap=10_000)
    for i, x in enumerate(xs):
        exact.add(x)
        capped.add(x)
        halves[i % 2].add(x)
    assert capped.exact is None and exact.exact is not None
    merged = Latencies.from_wire(halves[0].to_wire())
    merged.merge(Latencies.from_wire(halves[1].to_wire()))
    ys = sorted(xs)
    for q in (0.5, 0.9, 0.99):
        want = ys[round(q * 5000) - 1]  # nearest rank
        assert exact.quantile(q) == want
        assert merged.quantile(q) == want
        assert abs(capped.quantile(q) - want) <= 0.01 * want
    assert capped.quantile(1.0) == exact.quantile(1.0) == max(xs)
    assert capped.n == merged.n == 5000
