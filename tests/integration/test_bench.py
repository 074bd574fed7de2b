"""scripts/bench, run for real (floor processes, a kernel, server and client tasks):
the shape of its --json output and its cleanup.  Speed is never asserted."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench"

FLOOR = {"floor.rtt_p50": "us", "floor.rtt_p99": "us", "floor.pipelined_rate": "msg/s"}
KERNEL = {
    "kernel.null_rpc_p50": "us", "kernel.null_rpc_p99": "us",
    "kernel.echo_4k_rpc_p50": "us", "kernel.echo_4k_rpc_p99": "us",
    "kernel.routed_rate": "msg/s",
    "kernel.kobject_rpc_p50": "us", "kernel.kobject_rpc_p99": "us",
}


def _run(*args, timeout=240):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=env)


@pytest.mark.timeout(300)
def test_quick_json_shape():
    r = _run("--quick", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)  # nothing but one JSON document on stdout
    assert isinstance(rows, list)
    by = {}
    for row in rows:
        assert set(row) == {"name", "value", "unit", "floor_ratio"}, row
        assert row["name"] not in by, f"duplicate {row['name']}"
        by[row["name"]] = row
    for name, unit in {**FLOOR, **KERNEL}.items():
        assert name in by, f"{name} missing from {sorted(by)}"
        row = by[name]
        assert row["unit"] == unit
        assert isinstance(row["value"], (int, float)) and math.isfinite(row["value"])
        assert row["value"] > 0, row
    for name in FLOOR:
        assert by[name]["floor_ratio"] is None
    for name in KERNEL:
        ratio = by[name]["floor_ratio"]
        assert isinstance(ratio, (int, float)) and math.isfinite(ratio) and ratio > 0, name
    # Ratios are the kernel path over the floor of the same run.
    null, floor = by["kernel.null_rpc_p50"], by["floor.rtt_p50"]
    assert math.isclose(null["floor_ratio"], null["value"] / floor["value"], rel_tol=0.01)
    routed, frate = by["kernel.routed_rate"], by["floor.pipelined_rate"]
    assert math.isclose(routed["floor_ratio"], routed["value"] / frate["value"], rel_tol=0.01)
    # Its run dir (named on stderr) is gone: every process stopped, every file removed.
    m = re.search(r"bench: run dir (\S+)", r.stderr)
    assert m, r.stderr
    assert not Path(m.group(1)).exists()


@pytest.mark.timeout(300)
def test_table_output():
    r = _run("--quick", "--rounds", "30", "--routed", "100", "--messages", "200")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for name in (*FLOOR, *KERNEL):
        assert name in out
    assert "target kernel.null_rpc_p50" in out
    assert "target kernel.routed_rate" in out


@pytest.mark.timeout(60)
def test_bad_option():
    r = _run("--rounds", "0", timeout=30)
    assert r.returncode == 2
    assert r.stdout == ""
