"""The calibration's parts that need no cluster: the disk of a run as its ext2fs's log
states it (store.DiskDevice.stats in a "stats" or "stopping" record), and the host."""

from __future__ import annotations

import json

import pytest

from lab.experiments.calibration import disk, host
from translators.ext2fs.store import DiskDevice

pytestmark = pytest.mark.timeout(60)


def record(event, stats, when="2026-12-02T05:00:00.000000Z"):
    return json.dumps({"event": event, "timestamp": when, "level": "info", **stats}) + "\n"


def test_disk_per_write_from_the_servers_last_record(tmp_path):
    dev = DiskDevice(latency=0.002)
    for _ in range(5):
        dev.write(8192, lambda: None)
    first = {"disk_writes": 1, "disk_busy_s": 1.0, "disk_wait_s": 0.0}
    (tmp_path / "ext2fs.log").write_text(record("stats", first) + "not json\n"
                                         + record("ext2fs stopping", dev.stats())
                                         + record("ext2fs synced", {"disk_writes": 0}))
    d = disk(tmp_path, "ext2fs")
    assert d["writes"] == 5 and d["avg_write_bytes"] == 8192 and d["latency_ms"] == 2.0
    # each write held the device for at least the emulated latency; none waited
    assert 2.0 <= d["ms_per_write"] < 200 and d["wait_ms_per_write"] == 0.0
    assert d["queue_depth"] == 1 and d["max_queued"] == 0


def test_no_disk_statistics(tmp_path):
    assert disk(tmp_path, "ext2fs") is None  # no log
    (tmp_path / "demo.log").write_text(record("stats", {"calls": 3}))
    assert disk(tmp_path, "demo") is None  # a server without a disk
    (tmp_path / "idle.log").write_text(record("stats", {"disk_writes": 0}))
    assert disk(tmp_path, "idle")["ms_per_write"] is None  # nothing written


def test_host():
    h = host()
    assert h["cores"] >= 1 and h["memory_bytes"] > 1 << 20
