"""--repeat: the alternating order of the runs and one configuration's runs made into
one result (medians, min-max, the status of all of them)."""

from __future__ import annotations

import pytest

from lab.experiments.repeat import aggregate, aggregate_rows, median, runs_of, schedule

pytestmark = pytest.mark.timeout(60)


def test_schedule_alternates():
    assert [f"{c}{k}" for k, c in schedule(["A", "B", "C"], 3)] == [
        "A1", "B1", "C1", "C2", "B2", "A2", "A3", "B3", "C3"]
    assert schedule(["A"], 1) == [(1, "A")]
    assert schedule([], 2) == []
    with pytest.raises(ValueError):
        schedule(["A"], 0)


def test_median_keeps_ints_whole():
    assert median([3, 1, 2]) == 2 and isinstance(median([3, 1, 2]), int)
    assert median([1, 2]) == 1.5
    assert median([2, 4]) == 3 and isinstance(median([2, 4]), int)
    assert median([0.1, 0.2, 0.4]) == 0.2


def test_aggregate_rows():
    rows = [{"peak": 10, "rate": 1.5, "ok": True, "mode": "page", "gone": None, "x": 1},
            {"peak": 30, "rate": 1.5, "ok": False, "mode": "page", "gone": None},
            {"peak": 20, "rate": 1.5, "ok": True, "mode": "bulk", "gone": None, "x": 5}]
    row, spread = aggregate_rows(rows)
    assert row == {"peak": 20, "rate": 1.5, "ok": False, "mode": "page", "gone": None,
                   "x": 3}
    # only the fields that differed have a spread
    assert spread == {"peak": [10, 30], "x": [1, 5]}
    assert aggregate_rows([]) == ({}, {})


def run(status="ok", k=1, **row):
    return {"experiment": "e", "config": "c", "status": status, "reason": "why" if
            status != "ok" else "", "run_dir": f"/o/e/c/r{k}", "config_dir": "/o/e/c",
            "run": k, "wall_s": 10.0 * k, "samples": 5, "results": {"s": {}}, "row": row,
            "disk": {"writes": 10 * k, "ms_per_write": 5.0}}


def test_one_run_is_its_own_result():
    r = run(peak=3)
    assert aggregate([r]) is r and runs_of(r) == [r]


def test_several_runs_become_one_result():
    runs = [run(k=1, peak=10), run(k=2, peak=40), run(k=3, peak=20)]
    a = aggregate(runs)
    assert a["status"] == "ok" and a["reason"] == "" and a["repeat"] == 3
    assert a["runs_ok"] == 3 and a["runs"] is runs and runs_of(a) == runs
    assert a["row"] == {"peak": 20} and a["spread"] == {"peak": [10, 40]}
    assert a["wall_s"] == 20.0 and a["samples"] == 15 and a["run_dir"] == "/o/e/c"
    assert a["disk"] == {"writes": 20, "ms_per_write": 5.0}
    assert "results" not in a  # each run keeps its own


def test_a_failed_run_fails_the_configuration_but_not_its_medians():
    runs = [run(k=1, peak=10), run("failed", k=2, peak=9999), run(k=3, peak=20)]
    a = aggregate(runs)
    assert a["status"] == "failed" and a["reason"] == "run 2: failed: why"
    assert a["runs_ok"] == 2 and a["row"]["peak"] == 15  # of the runs that succeeded
    b = aggregate([run("timed out", k=1, peak=1), run("failed", k=2, peak=3)])
    assert b["status"] == "timed out" and b["row"]["peak"] == 2  # none ok: all of them
    assert b["reason"].startswith("run 1: timed out") and "run 2: failed" in b["reason"]
