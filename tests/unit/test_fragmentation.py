"""E2's numbers from a run's summaries (no processes): the lookup cost between map
samples, the latency buckets of the run's last third, a row from a mixed summary."""

from __future__ import annotations

import pytest

from lab.experiments.fragmentation import Fragmentation, late, median_p50
from lab.loadgen.mixed import KINDS, WEIGHTS, lookup_cost

pytestmark = pytest.mark.timeout(30)

# [t, entries, lookups, lookup_us, find_spaces, find_space_us]
SERIES = [[0.0, 10, 100, 200, 10, 50], [10.0, 400, 1100, 4200, 110, 3050],
          [20.0, 800, 2100, 12200, 210, 9050]]


def test_lookup_cost_per_call_between_samples():
    c = lookup_cost(SERIES)
    assert c["lookups"] == 2000 and c["lookup_us_per_call"] == 6.0
    assert c["find_spaces"] == 200 and c["find_space_us_per_call"] == 45.0
    assert c["entries_mean"] == pytest.approx((10 + 400 + 800) / 3, abs=0.1)
    assert c["kernel_map_ms_per_s"] == pytest.approx((12000 + 9000) / 1000 / 20)
    tail = lookup_cost(SERIES, since=10.0)
    assert tail["lookup_us_per_call"] == 8.0 and tail["find_space_us_per_call"] == 60.0
    assert lookup_cost(SERIES[:1]) == {} and lookup_cost([]) == {}


def test_late_buckets_and_their_median():
    lat = [[float(t), 10, float(t), 2.0 * t, 1.0] for t in range(30)]
    rows = late(lat)
    assert rows[0][0] == 20.0 and rows[-1][0] == 29.0  # from 2/3 of 29 s on
    assert median_p50(rows) == rows[len(rows) // 2][2]
    assert late([]) == [] and median_p50([]) is None


def test_row_from_a_mixed_summary():
    s = {"map_series": SERIES, "map_entries_start": 10, "map_entries_end": 800,
         "map_entries_peak": 810, "files_live_at_end": 500, "files_final_verified": 500,
         "final_bytes": 5000, "bytes_verified": 9000, "bytes_written": 7000,
         "latency_series": [[float(t), 5, 10.0 + t, 20.0, 11.0] for t in range(9)],
         "latency_by_kind_ms": {"read": {"p50": 3.0, "p99": 9.0}},
         "probe_before": {"p50": 1.5, "min": 1.0}, "probe_after": {"p50": 2.5, "min": 1.2},
         "ops_per_s": 100.0, "exit_status": 0, "mismatches": 0}
    samples = [{"t": 0, "map_entries": {"ext2fs": 10}, "procs": {"kernel": {"cpu": 1.0}}},
               {"t": 1, "map_entries": {"ext2fs": 820}, "procs": {"kernel": {"cpu": 3.5}}}]
    e = Fragmentation()
    row = e.row(e.configurations[0], samples, {"mixed": s}, {"physical_pages": 8192})
    assert row["entries_end"] == 800 and row["entries_peak"] == 820
    assert row["lookup_us"] == 6.0 and row["late_find_space_us"] == 60.0
    assert row["probe_before_ms"] == 1.5 and row["probe_after_ms"] == 2.5
    assert row["probe_best_before_ms"] == 1.0 and row["probe_best_after_ms"] == 1.2
    assert row["late_p50_ms"] == 17.0 and row["early_p50_ms"] == 11.0
    assert row["kernel_cpu_s"] == 2.5 and row["verified_all"] is True
    # last third (from 13.3 s): 700 ms/s of lookups over the 5 ops/s the buckets counted
    # then (the latency series ends at 8 s: no bucket from 13.3 s on)
    assert row["late_kernel_map_ms_per_op"] is None
    assert row["bytes_expected"] == 5000 <= row["bytes_verified"]
    assert {k for k, _ in e.columns} - {"wall_s", "status"} <= set(row)
    assert len(KINDS) == len(WEIGHTS)


def test_kernel_map_time_per_operation():
    from lab.experiments.fragmentation import per_op_ms

    lat = [[float(t), 10, 1.0, 2.0, 1.0] for t in range(20)]  # 10 ops a second
    assert per_op_ms({"kernel_map_ms_per_s": 50.0}, lat, 10.0) == 5.0
    assert per_op_ms({}, lat, 10.0) is None and per_op_ms({"kernel_map_ms_per_s": 1}, [], 0) is None


def test_findings_set_the_ends_beside_the_claim():
    e = Fragmentation()
    res = [{"config": c.name, "status": "ok",
            "row": {"entries_start": 7, "entries_end": n, "files_live": 500,
                    "late_entries_mean": n, "late_lookup_us": 5.0,
                    "late_find_space_us": 50.0, "probe_before_ms": 1.0,
                    "probe_after_ms": 2.0}}
           for c, n in zip(e.configurations, (1200, 1190, 1000, 60))]
    text = "\n".join(e.findings(res))
    assert "classic-list: ext2fs's map went from 7 to 1200 entries" in text
    assert "(claim: <= 100)" in text and "list vs tree" in text
    assert "coalescing alone merged 190 entries" in text and "ends at 60" in text
