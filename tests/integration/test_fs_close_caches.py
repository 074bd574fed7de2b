"""Closing the last open of an ext2fs file lets its memory object enter the kernel's
object cache (ext2fs unmaps its own window on the file, fsserver._last_close), and the
next open's first io_read finds it there with its pages (vm_object_enter hit: no
data_request).  With deactivate_on_cache the entering object's pages go inactive and the
re-read reactivates them; without it they stay active.  Real kernel, real ext2fs."""

from __future__ import annotations

import pytest

from lab.rundir import RunDir
from protocol.defs import fs as F
from protocol.defs import mach as VM
from protocol.runtime import TaskRuntime
from tests.conftest import start_kernel, start_server, wait_for
from tests.integration.test_ext2fs_translator import RW, Client, last_stats, pattern

SIZE = 64 * 4096  # 64 pages
T = 60


def vmstat(rt):
    return VM.vm_statistics(rt.task_self, timeout=T, rt=rt)


def cluster(run_dir, procs, deactivate: bool):
    """A kernel of 4,096 pages and ext2fs (no periodic sync); a task of the owner."""
    endpoint = start_kernel(run_dir, procs, physical_pages=4096,
                            deactivate_on_cache=deactivate)
    start_server(procs, run_dir, "translators.ext2fs", "ext2fs", "--stats-interval", "0.2",
                 "--sync-interval", "0")
    return TaskRuntime(endpoint, "client", secret=RunDir(run_dir).host_secret())


def written(c, name, seed):
    """A file of SIZE bytes made, synced (its pages clean) and read back once: (its
    open port, its bytes)."""
    data = pattern(SIZE, seed=seed)
    port = c.open(name, RW | F.O_CREAT)
    assert c.call(F.io_write, port, data, 0) == len(data)
    c.call(F.fsys_syncfs, port, 1, 0)
    assert c.read_all(port, SIZE) == data
    return port, data


def stats_when(rt, pred, what):
    """vm_statistics once ``pred`` holds of it."""
    return wait_for(lambda: (lambda v: v if pred(v) else None)(vmstat(rt)), T, what=what)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("deactivate", [True, False], ids=["deactivate", "keep"])
def test_last_close_caches_and_reopen_hits(run_dir, procs, deactivate):
    rt = cluster(run_dir, procs, deactivate)
    try:
        c = Client(rt)
        port, data = written(c, "f", 7)
        before = vmstat(rt)
        # a second open of the same file, closed (in either order, one entry comes)
        extra = c.open("f", F.O_READ)
        c.close(extra)
        c.close(port)  # the last open: ext2fs unmaps its window, the object is cached
        s = stats_when(rt, lambda v: v["cache_entered"] > before["cache_entered"],
                       "the object entering the cache")
        assert s["cache_entered"] == before["cache_entered"] + 1, s  # once: the last close
        assert s["cached_objects"] >= 1
        if deactivate:
            # every page of the file had been read (active): all deactivated on entry
            assert s["cache_deactivated"] - before["cache_deactivated"] >= SIZE // 4096, s
        else:
            assert s["cache_deactivated"] == before["cache_deactivated"], s
        st = wait_for(lambda: (lambda x: x if x.get("mappings_released", 0) >= 1 else None)(
            last_stats(run_dir)), T, what="ext2fs's stats line")
        assert st["last_closes"] >= 1

        # reopen and read: the object comes from the cache with every page resident
        port = c.open("f", F.O_READ)
        assert c.read_all(port, SIZE) == data
        a = vmstat(rt)
        assert a["hits"] == s["hits"] + 1, (s, a)
        assert a["lookups"] == s["lookups"] + 1, (s, a)
        assert a["data_requests"] == s["data_requests"], (s, a)  # no page asked again
        react = a["reactivations"] - s["reactivations"]
        if deactivate:
            assert react >= SIZE // 4096, (s, a)  # each page found inactive by its fault
        else:
            assert react == 0, (s, a)
        c.close(port)
        stats_when(rt, lambda v: v["cache_entered"] == s["cache_entered"] + 1,
                   "the second entry")
    finally:
        rt.close()


@pytest.mark.timeout(120)
def test_open_file_keeps_its_object(run_dir, procs):
    """While one open remains the window stays: closing another open caches nothing."""
    rt = cluster(run_dir, procs, True)
    try:
        c = Client(rt)
        port, data = written(c, "g", 3)
        before = vmstat(rt)
        other = c.open("g", F.O_READ)
        assert c.read_all(other, SIZE) == data
        freed = wait_for(lambda: last_stats(run_dir).get("protids_made", 0) >= 2
                         and last_stats(run_dir), T, what="ext2fs's stats")["protids_freed"]
        c.close(other)
        wait_for(lambda: last_stats(run_dir).get("protids_freed", 0) > freed, T,
                 what="the other open's protid freed")
        s = vmstat(rt)
        assert s["cache_entered"] == before["cache_entered"], (before, s)
        assert s["cache_deactivated"] == before["cache_deactivated"], (before, s)
        assert c.read_all(port, SIZE) == data
        c.close(port)
    finally:
        rt.close()
