"""Unit tests of the load generator's pure pieces (lab/loadgen) and of lab.client without
a kernel: latency quantiles and merging against an exact computation, splitting counts,
page patterns and what a wrong page is classified as, the page check, the summary's exit
status, the command line."""

from __future__ import annotations

import json
import math
import os
import random
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.client import ClusterClient, ClusterError, connect_task, err_name
from lab.loadgen.cli import build_parser
from lab.loadgen.driver import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, exit_status, split_count
from lab.loadgen.latency import Latencies, Meter
from lab.loadgen.logstats import log_records, record_time, server_stats
from lab.loadgen.pages import (
    MAGIC,
    TaskState,
    check_pages,
    classify,
    page_pattern,
    pages_of,
)
from lab.loadgen.workload import VerifyError, workloads
from protocol.vm_param import PAGE_SIZE

FAST = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def nearest_rank(xs: list[float], q: float) -> float:
    """The nearest-rank quantile, computed from scratch: the ceil(q*n)-th smallest."""
    ys = sorted(xs)
    rank = min(len(ys), max(1, math.ceil(round(q * len(ys), 9))))
    return ys[rank - 1]


latencies = st.lists(st.floats(min_value=1e-6, max_value=10.0, allow_nan=False),
                     min_size=1, max_size=300)
quantiles = st.sampled_from([0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0])


# ---------------------------------------------------------------- Latencies

@FAST
@given(latencies, quantiles)
def test_exact_quantile_is_nearest_rank(xs, q):
    lat = Latencies(cap=1000)
    for x in xs:
        lat.add(x)
    assert lat.quantile(q) == nearest_rank(xs, q)
    assert lat.n == len(xs) and lat.min == min(xs) and lat.max == max(xs)
    assert math.isclose(lat.sum, sum(xs))


@FAST
@given(latencies, quantiles)
def test_histogram_quantile_within_one_percent(xs, q):
    lat = Latencies(cap=0)  # no exact samples: every quantile from the buckets
    for x in xs:
        lat.add(x)
    assert lat.exact is None
    want = nearest_rank(xs, q)
    got = lat.quantile(q)
    assert min(xs) <= got <= max(xs)
    assert abs(got - want) <= 0.01 * want


@FAST
@given(st.lists(latencies, min_size=1, max_size=5), quantiles)
def test_merge_of_wire_parts_equals_one_latencies(parts, q):
    whole = Latencies(cap=10_000)
    merged = Latencies(cap=10_000)
    for part in parts:
        p = Latencies(cap=10_000)
        for x in part:
            p.add(x)
            whole.add(x)
        merged.merge(Latencies.from_wire(p.to_wire()))
    xs = [x for part in parts for x in part]
    assert merged.n == whole.n == len(xs)
    assert merged.quantile(q) == whole.quantile(q) == nearest_rank(xs, q)
    assert dict(merged.hist) == dict(whole.hist)
    assert merged.min == min(xs) and merged.max == max(xs)


def test_merge_past_the_cap_drops_exact_samples():
    a, b = Latencies(cap=10), Latencies(cap=10)
    xs = [0.001 * (i + 1) for i in range(6)] + [0.002 * (i + 1) for i in range(6)]
    for x in xs[:6]:
        a.add(x)
    for x in xs[6:]:
        b.add(x)
    a.merge(b)
    assert a.exact is None and a.n == 12
    want = nearest_rank(xs, 0.5)  # 4 ms, now from the buckets
    assert abs(a.quantile(0.5) - want) <= 0.01 * want
    # A side that already lost its exact samples makes the merge inexact too.
    c, d = Latencies(cap=100), Latencies(cap=1)
    c.add(0.001)
    d.add(0.001)
    d.add(0.002)
    c.merge(d)
    assert c.exact is None


def test_empty_latencies():
    lat = Latencies()
    assert lat.quantile(0.5) is None
    s = lat.summary_ms()
    assert s == {"p50": None, "p90": None, "p99": None, "max": None, "min": None,
                 "mean": None, "samples": 0, "exact": True}
    w = Latencies.from_wire(lat.to_wire())
    assert w.n == 0 and w.quantile(0.99) is None


def test_summary_ms():
    lat = Latencies()
    for ms in range(1, 101):
        lat.add(ms / 1000)
    s = lat.summary_ms()
    assert s["p50"] == 50.0 and s["p90"] == 90.0 and s["p99"] == 99.0
    assert s["max"] == 100.0 and s["min"] == 1.0 and s["mean"] == 50.5
    assert s["samples"] == 100 and s["exact"] is True
    json.dumps(s)


def test_meter_counts_errors_by_name():
    m = Meter(cap=10)
    m.error("MACH_RCV_TIMED_OUT")
    m.error("MACH_RCV_TIMED_OUT")
    m.error("DATA_MISMATCH")
    assert m.n_errors == 3
    assert m.errors == {"MACH_RCV_TIMED_OUT": 2, "DATA_MISMATCH": 1}
    assert m.lat.cap == 10


# ---------------------------------------------------------------- split_count

@FAST
@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=1, max_value=200))
def test_split_count(total, parts):
    shares = split_count(total, parts)
    assert len(shares) == parts and sum(shares) == total
    assert max(shares) - min(shares) <= 1
    assert shares == sorted(shares, reverse=True)  # the larger shares first


def test_split_count_examples():
    assert split_count(10, 3) == [4, 3, 3]
    assert split_count(2, 4) == [1, 1, 0, 0]
    assert split_count(0, 2) == [0, 0]


# ---------------------------------------------------------------- pages

def test_page_pattern_layout():
    p = page_pattern(0x1234, 3, 7, 2)
    assert len(p) == PAGE_SIZE
    assert struct.unpack_from("<IIQQQ", p) == (MAGIC, 3, 0x1234, 7, 2)
    assert p == page_pattern(0x1234, 3, 7, 2)  # deterministic
    assert p[32:96] == p[96:160]  # the digest repeated


def test_page_patterns_are_distinct():
    base = (99, 1, 5, 0)
    variants = [(98, 1, 5, 0), (99, 2, 5, 0), (99, 1, 6, 0), (99, 1, 5, 1)]
    pats = {page_pattern(*base)} | {page_pattern(*v) for v in variants}
    assert len(pats) == 5


def test_classify():
    nonce, task, page, counter = 77, 2, 10, 3
    want = page_pattern(nonce, task, page, counter)
    assert classify(want[:100], nonce, task, page, counter) == "short"
    assert classify(bytes(PAGE_SIZE), nonce, task, page, counter) == "zero"
    assert classify(os.urandom(PAGE_SIZE), nonce, task, page, counter) == "garbage"
    assert classify(page_pattern(nonce + 1, task, page, counter),
                    nonce, task, page, counter) == "garbage"  # another run's
    assert classify(page_pattern(nonce, task, page + 1, counter),
                    nonce, task, page, counter) == "misplaced"
    assert classify(page_pattern(nonce, task + 1, page, counter),
                    nonce, task, page, counter) == "misplaced"
    assert classify(page_pattern(nonce, task, page, counter - 1),
                    nonce, task, page, counter) == "stale"
    torn = bytearray(want)
    torn[2000] ^= 0xFF
    assert classify(bytes(torn), nonce, task, page, counter) == "corrupt"
    # A later write's pattern is not stale: it cannot have been there before.
    assert classify(page_pattern(nonce, task, page, counter + 1),
                    nonce, task, page, counter) == "corrupt"


def test_pages_of():
    assert pages_of(1) == 256
    assert pages_of(0.0000001) == 1
    assert pages_of(1.5) == 384
    assert pages_of(4097 / 2**20) == 2


def test_check_pages():
    st_ = TaskState(nonce=5)
    data = b"".join(page_pattern(5, 1, pg, 0) for pg in range(4, 8))
    assert check_pages(st_, data, 4, 4, 0, lambda pg: (1, pg), "vm_read", "ok_pages") == 4
    assert st_.counters == {"ok_pages": 4} and st_.progress == 4
    bad = bytearray(data)
    bad[PAGE_SIZE:2 * PAGE_SIZE] = bytes(PAGE_SIZE)             # page 5: zero
    bad[3 * PAGE_SIZE:] = page_pattern(5, 1, 4, 0)              # page 7: page 4's
    with pytest.raises(VerifyError) as ei:
        check_pages(st_, bytes(bad), 4, 4, 0, lambda pg: (1, pg), "vm_read", "ok_pages")
    assert ei.value.count == 2
    assert "first: page 5 zero" in str(ei.value)
    assert st_.counters == {"ok_pages": 6, "mismatch_zero": 1, "mismatch_misplaced": 1}
    assert st_.progress == 8


# ---------------------------------------------------------------- translators' logs

def _iso(t: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def test_log_records_and_server_stats(tmp_path):
    now = time.time()
    log = tmp_path / "ext2fs.log"
    lines = [json.dumps({"event": "ready", "timestamp": _iso(now - 9)}), "not json", "[1]",
             json.dumps({"event": "stats", "syncs": 1, "nodes": 3, "other": 0,
                         "timestamp": _iso(now - 5)}),
             json.dumps({"event": "stats", "syncs": 2, "nodes": 4,
                         "timestamp": _iso(now - 2)}),
             json.dumps({"event": "lookup", "timestamp": _iso(now - 1)})]
    log.write_text("\n".join(lines) + "\n")
    assert [r["event"] for r in log_records(log, head=True)] == ["ready", "stats", "stats",
                                                                 "lookup"]
    assert log_records(tmp_path / "missing.log", head=False) == []
    assert abs(record_time({"timestamp": _iso(now)}) - now) < 1e-3
    assert record_time({}) is None and record_time({"timestamp": "yesterday"}) is None
    d = server_stats(tmp_path, "ext2fs", ("syncs", "nodes", "absent"))
    assert d["syncs"] == 2 and d["nodes"] == 4 and "absent" not in d and d["fresh"]
    assert 1.5 < d["age_s"] < 10
    t0 = time.monotonic()
    stale = server_stats(tmp_path, "ext2fs", ("syncs",), since=now, wait=0.2)
    assert not stale["fresh"] and stale["syncs"] == 2
    assert time.monotonic() - t0 >= 0.2  # waited for a fresh one
    with open(log, "a") as f:
        f.write(json.dumps({"event": "ext2fs stopping", "syncs": 3,
                            "timestamp": _iso(time.time())}) + "\n")
    assert server_stats(tmp_path, "ext2fs", ("syncs",), since=now, wait=5) == \
        {"syncs": 3, "fresh": True, "age_s": pytest.approx(0, abs=1)}
    assert server_stats(tmp_path, "nosuch", ("syncs",)) is None


# ---------------------------------------------------------------- summary and command line

def _summary(**kw):
    s = {"errors": {}, "calls": 10, "ok": 10, "mismatches": 0}
    s.update(kw)
    return s


def test_exit_status():
    flood = workloads()["flood"]()
    assert exit_status(flood, _summary(), True) == (EXIT_OK, None)
    assert exit_status(flood, _summary(ok=0), True) == (EXIT_FAILED, "every call failed")
    assert exit_status(flood, _summary(mismatches=2), True) == \
        (EXIT_FAILED, "2 verification failures (data mismatch)")
    assert exit_status(flood, _summary(), False)[0] == EXIT_UNREACHABLE
    assert exit_status(flood, _summary(errors={"KERNEL_GONE": 1}), True)[0] == EXIT_UNREACHABLE
    assert exit_status(flood, _summary(calls=0, ok=0), False) == \
        (EXIT_FAILED, "every call failed")  # nothing was sent: not the kernel's fault


def test_workloads_in_command_line_order():
    assert list(workloads()) == ["flood", "anon", "mmap", "seqwrite", "randwrite", "churn",
                                 "dirtystorm", "storm", "cachemix", "reopen", "mixed"]


def test_common_options_before_or_after_the_workload():
    p = build_parser()
    a = p.parse_args(["--json", "--run-dir", "X", "flood", "--count", "5"])
    b = p.parse_args(["flood", "--count", "5", "--json", "--run-dir", "X"])
    for args in (a, b):
        assert args.json and args.run_dir == "X" and args.count == 5
        assert args.workload == "flood" and args.rpc == "null" and args.tasks == 1
    c = p.parse_args(["--run-dir", "X", "anon", "--factor", "2"])
    assert c.run_dir == "X" and c.factor == 2.0 and not c.json
    with pytest.raises(SystemExit):
        p.parse_args(["flood", "--tasks", "0"])


# ---------------------------------------------------------------- lab.client

def test_err_name_knows_netname_codes():
    assert err_name(2802) == "NETNAME_NOT_CHECKED_IN"
    assert err_name(0x10004003) == "MACH_RCV_TIMED_OUT"


def test_client_without_cluster_json(tmp_path):
    c = ClusterClient(tmp_path)
    assert c.info == {} and c.rt is None
    assert c.endpoint == f"ipc://{tmp_path.resolve()}/kernel.sock"
    with pytest.raises(ClusterError, match="socket missing"):
        c.connect()


def test_client_reads_cluster_json(tmp_path):
    (tmp_path / "cluster.json").write_text(json.dumps({
        "kernel": {"endpoint": "ipc:///nowhere/kernel.sock", "pid": 4242},
        "processes": [{"name": "demo", "pid": os.getpid()}]}))
    with ClusterClient(tmp_path, name="status") as c:
        assert c.endpoint == "ipc:///nowhere/kernel.sock"
        assert c.kernel_pid() == 4242
        assert c.process_pid("demo") == os.getpid()


def test_client_refuses_unreadable_cluster_json(tmp_path):
    (tmp_path / "cluster.json").write_text("{not json")
    with pytest.raises(ClusterError, match="unreadable"):
        ClusterClient(tmp_path)


def test_connect_task_without_socket(tmp_path):
    with pytest.raises(ClusterError, match="no kernel"):
        connect_task(f"ipc://{tmp_path}/kernel.sock", "t", 1.0)


def test_random_latencies_like_a_run():
    # Many tasks, past the per-task cap: the parent's quantiles stay within 1 %.
    rng = random.Random(3)
    xs = [rng.lognormvariate(-6, 1.5) for _ in range(3000)]
    parent = Latencies(cap=1000)
    for i in range(3):
        t = Latencies(cap=500)
        for x in xs[i::3]:
            t.add(x)
        parent.merge(Latencies.from_wire(t.to_wire()))
    assert parent.exact is None and parent.n == 3000
    for q in (0.5, 0.9, 0.99):
        want = nearest_rank(xs, q)
        assert abs(parent.quantile(q) - want) <= 0.01 * want
