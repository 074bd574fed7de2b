"""lab.bench's pure parts: statistics, payloads, the floor's header, the rows and the
table, option parsing, the role entry point, ext2fs's stats records, the map lookup
benchmark at small sizes, and lab.process.read_line.  No kernel is started here
(tests/integration/test_bench.py runs the bench for real)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import msgpack
import pytest

from lab.bench import cli, orchestrator, rows, stats, vmmap
from lab.bench.floor import header
from lab.bench.orchestrator import ext2_stats
from lab.bench.pages import PAGE_BYTES, page, tagged_page
from lab.bench.role import ROLES
from lab.bench.role import main as role_main
from lab.bench.vm_roles import free_target, lookup_counts
from lab.process import Child, ProcessError, child_env, read_line
from protocol.vm_param import PAGE_SIZE

# ---------------------------------------------------------------- statistics


def test_percentile_nearest_rank():
    vals = list(range(1, 101))
    assert stats.percentile([], 50) == 0.0
    assert stats.percentile(vals, 50) == 50
    assert stats.percentile(list(range(1, 102)), 50) == 51
    # The rank is rounded half to even: with 100 samples p99 is the largest.
    assert stats.percentile(vals, 99) == 100
    assert stats.percentile(list(range(1, 201)), 99) == 198
    assert stats.percentile([7], 0) == 7 and stats.percentile([7], 100) == 7


def test_latency_summary_in_microseconds():
    lat = stats.latency([3000, 1000, 2000])
    assert lat == {"p50_us": 2.0, "p99_us": 3.0, "n": 3}


def test_time_calls_warms_up_then_times_each_call():
    calls = []
    samples = stats.time_calls(lambda: calls.append(1), 20, warm=5)
    assert len(calls) == 25 and len(samples) == 20
    assert all(isinstance(s, int) and s >= 0 for s in samples)
    calls.clear()
    stats.time_calls(lambda: calls.append(1), 1000)
    assert len(calls) == 1000 + stats.warmup(1000) == 1100
    assert stats.warmup(10) == 50


# ---------------------------------------------------------------- payloads and floor


def test_pages():
    assert PAGE_BYTES == PAGE_SIZE  # the floor's own copy, it imports nothing of machemu
    assert len(page()) == PAGE_SIZE and page() == page()
    a, b = tagged_page(3, 1), tagged_page(3, 2)
    assert len(a) == len(b) == PAGE_SIZE and a != b
    assert a.startswith(b"00000003:00000001:")
    assert tagged_page(-1, 0).startswith(b"ffffffff:00000000:")


def test_floor_header_is_a_mach_shaped_list():
    h = msgpack.unpackb(header("rtt", 42), raw=False)
    assert h[0] == "rtt" and h[2] == 42 and len(h) == 13 and h[-1] == []


def test_floor_imports_nothing_of_machemu():
    code = ("import sys, lab.bench.role, lab.bench.floor\n"
            "bad = sorted(m for m in sys.modules\n"
            "             if m.split('.')[0] in ('protocol', 'kernel', 'translators'))\n"
            "print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, env=child_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# ---------------------------------------------------------------- roles


def test_role_table_names_real_functions():
    import importlib
    import inspect

    for role, (module, func, types) in ROLES.items():
        fn = getattr(importlib.import_module(module), func)
        assert len(inspect.signature(fn).parameters) == len(types), role


def test_role_main_refuses_unknown_role_and_wrong_arity():
    with pytest.raises(SystemExit, match="usage"):
        role_main([])
    with pytest.raises(SystemExit, match="usage"):
        role_main(["no-such-role"])
    with pytest.raises(SystemExit, match="2 arguments expected"):
        role_main(["maplookup", "1"])


def test_lookup_counts_shrink_with_the_list():
    assert lookup_counts("tree", 100_000, True) == 2_000
    assert lookup_counts("tree", 100, False) == 20_000
    assert lookup_counts("list", 100, True) == 5_000
    assert lookup_counts("list", 100_000, True) == 50
    assert lookup_counts("list", 100_000, False) == 200


def test_free_target_leaves_room_above_the_reserve():
    for n in (2048, 16384, 262144):
        t = free_target(n)
        assert 50 < t < n // 10, (n, t)
    assert free_target(262144) == 50 + 15 + (262144 - 50) // 80


# ---------------------------------------------------------------- vmmap


def test_vmmap_small():
    m = vmmap.build_map("tree", 50)
    assert len(m) == 50
    for s in vmmap.STRUCTURES:
        assert vmmap.bench_lookup(s, 50, 200) > 0
        assert vmmap.bench_lookup(s, 50, 200, pattern="sequential") > 0
        assert vmmap.bench_enter_anywhere(s, 50, 5) > 0
    with pytest.raises(ValueError):
        vmmap.bench_lookup("list", 10, 10, pattern="zigzag")
    out = vmmap.run(sizes=(10,), lookups=20)
    assert [(r["structure"], r["entries"]) for r in out] == [("list", 10), ("tree", 10)]


def test_vmmap_main_json(capsys):
    assert vmmap.main(["--sizes", "10", "--lookups", "20", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


# ---------------------------------------------------------------- rows and table


def _measurements():
    floor = [{"samples": [100_000] * 9 + [200_000], "stream_n": 500, "stream_s": 0.01},
             {"samples": [100_000] * 10, "stream_n": 500, "stream_s": 0.01}]
    kern = {k: {"p50_us": 250.0, "p99_us": 400.0, "n": 10} for k in ("null", "echo", "kobject")}
    routed = {"sent": 1000, "wall": 0.5, "kernel_cpu": 80.0, "server_cpu": 40.0,
              "senders_cpu_s": 0.25}
    vm = {"resident": {"p50_us": 150.0, "p99_us": 200.0, "n": 10},
          "cold": {"p50_us": 300.0, "p99_us": 600.0, "n": 48, "data_requests": 48}}
    lookups = {f"{s}_{n}": {"ns": ns * (1 if s == "tree" else 100), "lookups": 10}
               for s in ("list", "tree")
               for n, ns in ((100, 300.0), (10_000, 900.0), (100_000, 1500.0))}
    rss = {"physical_pages": 262144, "touched": 258000, "rss": 1_100 * 2**20,
           "idle_rss": 70 * 2**20, "secs": 4.0}
    ext2 = {c: {"write_s": 1.0, "sync_s": 1.0,
                "vm": {"data_returns": 2048 // c, "pageouts": 2048},
                "ext2fs": {"disk_writes": 2048 // c + 4, "data_returns": 2048 // c,
                           "blocks_written": 4096}}
            for c in rows.EXT2_CLUSTERS}
    return floor, kern, routed, vm, lookups, rss, ext2


def _rows(mib=16):
    floor, kern, routed, vm, lookups, rss, ext2 = _measurements()
    fr, rate = rows.floor_summary(floor)
    return [*rows.floor_rows(fr, rate), *rows.kernel_rows(fr, rate, kern, routed, 2),
            *rows.vm_rows(fr, vm), *rows.lookup_rows(lookups), *rows.rss_rows(rss),
            *rows.ext2_rows(ext2, mib)]


def test_row_rounds():
    assert rows.row("a", 1.23456, "us") == {"name": "a", "value": 1.235, "unit": "us",
                                            "floor_ratio": None}
    assert rows.row("a", 2, "x", 0.33333)["floor_ratio"] == 0.333


def test_floor_summary_pools_both_halves():
    fr, rate = rows.floor_summary(_measurements()[0])
    assert fr == {"p50_us": 100.0, "p99_us": 200.0, "n": 20}
    assert rate == pytest.approx(1000 / 0.02)


def test_rows_names_units_and_ratios():
    by = {r["name"]: r for r in _rows()}
    assert len(by) == len(_rows())  # no name twice
    assert all(set(r) == {"name", "value", "unit", "floor_ratio"} for r in by.values())
    assert by["kernel.null_rpc_p50"]["floor_ratio"] == 2.5
    assert by["kernel.null_rpc_p99"]["floor_ratio"] == 2.0
    assert by["kernel.routed_rate"]["value"] == 2000
    assert by["kernel.routed_rate"]["floor_ratio"] == pytest.approx(2000 / 50_000)
    assert by["info.routed_kernel_us_per_msg"]["value"] == 400.0  # 80 % of a core / 2000
    assert by["info.routed_senders_cpu"]["value"] == 50.0
    assert by["vm.resident_read_4k_p50"]["floor_ratio"] == 1.5
    assert by["vm.cold_fault_memfs_p99"]["floor_ratio"] == 3.0
    assert by["vm.map_lookup_tree_growth"]["value"] == 5.0
    assert by["vm.map_lookup_tree_growth_per_log"]["value"] == pytest.approx(
        5.0 / (math.log(100_000) / math.log(100)), abs=1e-3)
    assert by["vm.kernel_rss_per_page_256k"]["value"] == pytest.approx(
        (1_100 * 2**20 + 4144 * PAGE_SIZE) / 262144 / 1024, abs=1e-3)
    assert by["ext2.seqwrite_16m_cluster1_data_returns"]["unit"] == "msgs"
    assert by["info.seqwrite_16m_cluster32_blocks_written"]["value"] == 4096
    assert by["ext2.seqwrite_16m_disk_write_ratio"]["value"] == pytest.approx(2052 / 68,
                                                                              abs=1e-3)
    units = {r["unit"] for r in by.values()}
    assert units <= {"us", "msg/s", "%core", "cores", "pages", "ns", "x", "KiB", "MiB", "s",
                     "msgs", "writes", "MiB/s", "blocks"}


def test_ext2_ratio_never_divides_by_zero():
    ext2 = _measurements()[-1]
    ext2[32]["ext2fs"]["disk_writes"] = 0
    assert rows.ext2_rows(ext2, 16)[-1]["value"] == 2052


def test_table_shows_rows_and_targets():
    args = cli.parse(["--quick"])
    out = cli.table(_rows(), args)
    assert "kernel.null_rpc_p50" in out and "2.50" in out
    assert "target kernel.null_rpc_p50: 2.50 x floor, want <= 2.2 -> NOT met" in out
    assert "target vm.resident_read_4k_p50: 1.50 x floor, want <= 1.5 -> met" in out
    assert "target kernel.routed_rate: 0.04 x floor, want >= 0.2 -> NOT met" in out
    assert "target info.routed_kernel_us_per_msg: 400.00 us, want <= 60.0 -> NOT met" in out
    assert "ext2 seqwrite 16 MiB, 2048 pages of memory" in out
    assert "data_requests seen 48" in out
    assert "tree lookup growth 100 -> 100k entries: 5.00x" in out
    assert "qlimit 16" in out and "(window 256)" in out


def test_stages_run_bring_in_the_kernel_they_need():
    assert orchestrator.stages_run(None) == set(orchestrator.STAGES)
    assert orchestrator.stages_run(["vm"]) == {"vm", "kernel"}
    assert orchestrator.stages_run(["trace", "ext2"]) == {"trace", "kernel", "ext2"}
    assert orchestrator.stages_run(["lookups"]) == {"lookups"}


def test_table_of_some_stages():
    """--only: the table prints the rows measured and the targets they have, nothing
    about the stages left out."""
    args = cli.parse(["--quick", "--only", "kernel"])
    assert args.only == ["kernel"]
    floor, kern, routed, *_ = _measurements()
    fr, rate = rows.floor_summary(floor)
    out = cli.table([*rows.floor_rows(fr, rate), *rows.kernel_rows(fr, rate, kern, routed, 2)],
                    args)
    assert "target kernel.routed_rate" in out
    assert "cold faults" not in out and "ext2 seqwrite" not in out
    assert "vm.resident_read" not in out and "tree lookup" not in out


def test_fmt_value():
    assert cli.fmt_value({"value": 12345.678, "unit": "msg/s"}) == "12,346"
    assert cli.fmt_value({"value": 4.4132, "unit": "KiB"}) == "4.41"
    assert cli.fmt_value({"value": 160.83, "unit": "us"}) == "160.8"


def test_parse_defaults_and_errors(capsys):
    q = cli.parse(["--quick"])
    assert (q.rounds, q.messages, q.routed, q.faults, q.ext2_mib, q.ext2_pages) == (
        100, 500, 300, 48, 16, 2048)
    f = cli.parse([])
    assert (f.rounds, f.messages, f.routed, f.faults, f.ext2_mib, f.ext2_pages) == (
        2000, 20000, 10000, 1000, 128, 8192)
    assert f.qlimit == 16 and f.timeout == 600.0
    for bad in (["--rounds", "0"], ["--senders", "0"], ["--qlimit", "17"]):
        with pytest.raises(SystemExit) as e:
            cli.parse(bad)
        assert e.value.code == 2
    capsys.readouterr()


# ---------------------------------------------------------------- ext2fs stats records


def test_ext2_stats_takes_the_last_record_after_enough_syncs(tmp_path):
    log = tmp_path / "ext2fs.log"
    assert ext2_stats(log, 1) is None  # no log yet
    recs = [{"event": "stats", "syncs": 0, "disk_writes": 1},
            {"event": "other", "syncs": 5},
            {"event": "stats", "syncs": 1, "disk_writes": 2},
            {"event": "stats", "syncs": 2, "disk_writes": 3}]
    log.write_text("not json\n" + "\n".join(json.dumps(r) for r in recs) + "\n[1]\n")
    assert ext2_stats(log, 1)["disk_writes"] == 3
    assert ext2_stats(log, 3) is None


# ---------------------------------------------------------------- lab.process.read_line


def test_read_line(tmp_path):
    code = ("import sys, time\nprint('ready', flush=True)\nsys.stdin.readline()\n"
            "print('  two  ', flush=True)\n")
    c = Child("liner", [sys.executable, "-c", code], tmp_path, stdin=subprocess.PIPE,
              stdout=subprocess.PIPE)
    try:
        assert read_line(c, 30) == "ready"
        with pytest.raises(ProcessError, match="no answer from liner"):
            read_line(c, 0.2)
        c.popen.stdin.write(b"go\n")
        c.popen.stdin.flush()
        assert read_line(c, 30) == "two"
        assert read_line(c, 30) == ""  # it exited: end of the pipe
    finally:
        c.stop(5)


def test_trace_rows_against_the_mean_of_the_untraced_runs():
    fr = {"p50_us": 100.0, "p99_us": 200.0}
    kern = {"null": {"p50_us": 200.0, "p99_us": 400.0}}
    traced = {"null": {"p50_us": 330.0, "p99_us": 900.0},
              "after": {"null": {"p50_us": 240.0, "p99_us": 500.0}},
              "trace": {"messages": 450, "dropped": 3}}
    trows = rows.trace_rows(fr, kern, traced)
    by = {r["name"]: r for r in trows}
    assert by["kernel.null_rpc_traced_p50"]["floor_ratio"] == 3.3
    assert by["kernel.null_rpc_traced_p99"]["floor_ratio"] == 4.5
    assert by["info.trace_overhead_null_p50"]["value"] == 1.5  # 330 / mean(200, 240)
    assert by["info.trace_overhead_null_p99"]["value"] == 2.0  # 900 / mean(400, 500)
    assert by["info.traced_messages"]["value"] == 450 and by["info.trace_dropped"]["value"] == 3
    out = cli.table([*_rows(), *trows], cli.parse(["--quick"]))
    line = next(ln for ln in out.splitlines() if ln.startswith("rpctrace on"))
    assert line.startswith("rpctrace on (every message, 450 traced, 3 lost): null RPC p50 "
                           "330.0 us vs ")
    assert line.endswith(" us off before, 240.0 us after = 1.50x (p99 2.00x)")
