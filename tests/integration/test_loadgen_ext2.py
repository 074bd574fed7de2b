"""scripts/loadgen's ext2fs workloads against a real kernel (small physical memory, so
file pages are paged out to ext2fs) and a real ext2fs translator on a fresh image.

seqwrite, randwrite, churn and dirtystorm each verify every byte they wrote through
io_read; a test fails on any mismatch.  Speed is never asserted.
"""

from __future__ import annotations

import pytest

from lab.loadgen.logstats import server_stats
from tests.conftest import run_loadgen, start_server, wait_for

PHYSICAL_PAGES = 2048  # 8 MiB: the larger workloads must page file data out to ext2fs


@pytest.fixture
def ext2_cluster(run_dir, procs):
    """kernel (physical_pages = 2048) and ext2fs (fresh 64 MiB image, stats every
    0.2 s, no periodic sync).  File data lives in file memory objects paged by ext2fs
    itself: no anonymous memory is paged, so no default pager is started."""
    cfg = run_dir / "kernel.toml"
    cfg.write_text(f"[kernel]\nphysical_pages = {PHYSICAL_PAGES}\ndata_return_cluster = 32\n")
    k = procs.python(["-m", "kernel", "--run-dir", str(run_dir), "--config", str(cfg)],
                     name="kernel")
    ready = run_dir / "kernel.ready"
    wait_for(lambda: ready.exists() or k.p.poll() is not None, 30, what="kernel ready")
    assert k.p.poll() is None, k.output()
    e = start_server(procs, run_dir, "translators.ext2fs", "ext2fs", "--size-mib", "64",
                     "--sync-interval", "0", "--stats-interval", "0.2")
    yield {"kernel": k, "ext2fs": e}
    assert e.p.poll() is None, f"ext2fs died during the test:\n{e.output()}"


def _ok(code, s, err):
    assert code == 0, (s.get("failure"), s.get("errors"), s.get("task_failures"), err)
    assert s["mismatches"] == 0 and s["errors_total"] == 0, s["errors"]
    assert s["task_failures"] == {}
    assert s["exit_status"] == 0
    assert s["server_name"] == "ext2fs"


def _ext2_delta(s):
    e = s["ext2fs"]
    assert e is not None, "no ext2fs stats line found"
    assert e["after"]["fresh"], e
    return e["delta"]


@pytest.mark.timeout(240)
def test_seqwrite_pages_out_and_verifies(run_dir, ext2_cluster):
    # 2 x 8 MiB through 8 MiB of memory: ext2fs gets data_returns before the read-back.
    code, s, err = run_loadgen(run_dir, "seqwrite", "--tasks", "2", "--file-mib", "8",
                               "--chunk-kib", "512", "--call-timeout", "60", timeout=200)
    _ok(code, s, err)
    total = 2 * 8 << 20
    assert s["bytes_written"] == s["bytes_verified"] == total
    assert s["bytes"] == 2 * total and s["files"] == 2
    assert s["counters"]["files_created"] == 2 and s["counters"]["files_unlinked"] == 2
    kv = s["kernel_vm"]
    assert kv["data_returns"] > 0 and kv["pageouts"] > 0, kv
    d = _ext2_delta(s)
    # Every data_return the kernel sent reached ext2fs's pager; it wrote blocks.
    assert d["data_returns"] == kv["data_returns"], (d, kv)
    assert d["disk_writes"] > 0 and d["blocks_written"] >= d["disk_writes"], d
    assert s["mib_per_s"] > 0


@pytest.mark.timeout(180)
def test_randwrite_matches_model(run_dir, ext2_cluster):
    code, s, err = run_loadgen(run_dir, "randwrite", "--tasks", "2", "--threads", "2",
                               "--file-mib", "1", "--writes", "60", "--max-kib", "48",
                               "--call-timeout", "60", timeout=150)
    _ok(code, s, err)
    assert s["files"] == 4
    assert s["counters"]["writes"] == 4 * 60
    assert s["bytes_verified"] == 4 << 20
    assert 4 * 60 <= s["bytes_written"] <= 4 * 60 * 48 * 1024
    assert s["vm"]["delta"]["data_requests"] >= 0
    _ext2_delta(s)


@pytest.mark.timeout(180)
def test_churn_small_files(run_dir, ext2_cluster):
    code, s, err = run_loadgen(run_dir, "churn", "--tasks", "2", "--threads", "2",
                               "--files", "25", "--max-kib", "12", "--call-timeout", "60",
                               timeout=150)
    _ok(code, s, err)
    assert s["files"] == 100
    assert s["files_created"] == s["files_unlinked"] == 100
    assert s["bytes_written"] == s["bytes_verified"] > 0
    assert s["verified"] == s["bytes_verified"]  # ops count the bytes they verified
    d = _ext2_delta(s)
    # Every unlinked inode is released, once its last no-senders is processed: that may
    # come after loadgen's last stats line, so later stats lines are waited for.
    before = s["ext2fs"]["after"]["nodes_freed"] - d["nodes_freed"]

    def freed():
        now = server_stats(str(run_dir), "ext2fs", ["nodes_freed"]) or {}
        return now.get("nodes_freed", 0) - before
    wait_for(lambda: d["nodes_freed"] >= 100 or freed() >= 100, 60,
             what=f"100 inodes released (loadgen saw {d['nodes_freed']})")


@pytest.mark.timeout(240)
def test_dirtystorm_syncs_and_verifies(run_dir, ext2_cluster):
    code, s, err = run_loadgen(run_dir, "dirtystorm", "--tasks", "3", "--threads", "3",
                               "--file-mib", "1", "--call-timeout", "90", timeout=200)
    _ok(code, s, err)
    assert s["files"] == 9
    assert s["syncfs"] == 3
    assert s["bytes_written"] == s["bytes_verified"] == 9 << 20
    d = _ext2_delta(s)
    assert d["syncs"] >= 3, d
    # Everything written reached the image: at least one block per 4 KiB written.
    assert d["blocks_written"] >= (9 << 20) // 4096, d
    assert d["data_returns"] > 0 and s["kernel_vm"]["data_returns"] > 0


@pytest.mark.timeout(120)
def test_seqwrite_without_server_is_refused(run_dir, kernel):
    code, s, err = run_loadgen(run_dir, "seqwrite", "--file-mib", "1", timeout=60)
    assert code == 2, (s, err)
    assert "ext2fs" in s["error"]
