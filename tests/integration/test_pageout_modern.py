"""The modern pageout policy on small real clusters.

ext2fs writes (io_write, through its own mappings of the files) three times physical
memory into two files, with no periodic sync: only the pageout daemon's evictions
(five a round, each round waiting for ext2fs to release its laundry or for 50 ms) clean
the file pages; every byte reads back.  Anonymous memory of one and a half times
physical memory goes to the default pager, no eviction round starting while five pages
are there (so at most 4 + 5 are), and reads back.  vm_statistics shows modern's counters moving in both."""

from __future__ import annotations

import pytest

from protocol.defs import fs as F
from protocol.defs import mach as MD
from protocol.runtime import TaskRuntime
from protocol.vm_param import PAGE_SIZE
from tests.conftest import start_kernel, start_server
from tests.integration.test_ext2fs_translator import Client, pattern

T = 60  # seconds: any single RPC
CHUNK = 256 * 1024


def modern_cluster(run_dir, procs, phys: int, *server) -> TaskRuntime:
    """A kernel of ``phys`` pages under modern and one server (start_server's module,
    name and arguments); returns a client task."""
    endpoint = start_kernel(run_dir, procs, pageout_policy="modern", physical_pages=phys)
    start_server(procs, run_dir, *server)
    return TaskRuntime(endpoint, "client")


def pageout_stats(rt) -> dict:
    s = MD.vm_statistics(rt.task_self, timeout=T, rt=rt)
    assert s["policy"] == "modern"
    return s


@pytest.mark.timeout(300)
def test_ext2fs_writes_three_times_memory_and_every_byte_survives(run_dir, procs):
    phys = 2048  # thresholds 500 / 600 / 1000 pages
    rt = modern_cluster(run_dir, procs, phys, "translators.ext2fs", "ext2fs", "--size-mib",
                        "64", "--sync-interval", "0")
    try:
        c = Client(rt)
        s0 = pageout_stats(rt)
        size = 3 * phys * PAGE_SIZE // 2  # per file
        datas = [pattern(size, seed=n + 1) for n in range(2)]
        files = [c.open(f"big{n}", F.O_CREAT | F.O_READ | F.O_WRITE) for n in range(2)]
        for off in range(0, size, CHUNK):
            for f, data in zip(files, datas):
                assert c.call(F.io_write, f, data[off:off + CHUNK], off) == len(
                    data[off:off + CHUNK])
        for f, data in zip(files, datas):
            assert c.read_all(f, size) == data
        s1 = pageout_stats(rt)
        po0, po1 = s0["pageout"], s1["pageout"]
        # file pages went back to ext2fs through eviction rounds of at most five
        assert s1["data_returns"] - s0["data_returns"] >= phys, (s0, s1)
        assert po1["evictions"] > po0["evictions"] >= 0, po1
        assert po1["rounds"] > po0["rounds"] and po1["evictions"] <= 5 * po1["rounds"], po1
        assert po1["laundry_external_peak"] >= 1, po1
        assert po1["laundry_resumes"] + po1["daemon_timeouts"] > 0, po1
        assert po1["laundry_internal_peak"] == 0, po1  # no anonymous page was evicted
        assert po1["returned"] - po0["returned"] >= phys, po1
        assert (po1["min_free"], po1["low_free"], po1["high_free"]) == (500, 600, 1000), po1
    finally:
        rt.close()


@pytest.mark.timeout(300)
def test_anonymous_memory_beyond_physical_goes_to_defpager_and_reads_back(run_dir, procs):
    phys = 1024  # thresholds 256 / 307 / 512 pages
    rt = modern_cluster(run_dir, procs, phys, "translators.defpager", "defpager",
                        "--swap-size", "32")
    try:
        npages = phys + phys // 2
        addr = MD.vm_allocate(rt.task_self, 0, npages * PAGE_SIZE, True, timeout=T, rt=rt)

        def page(i):
            return f"anon page {i} ".encode().ljust(PAGE_SIZE, b".")

        for i in range(npages):
            MD.vm_write(rt.task_self, addr + i * PAGE_SIZE, page(i), timeout=T, rt=rt)
        for i in range(npages):
            got = MD.vm_read(rt.task_self, addr + i * PAGE_SIZE, PAGE_SIZE, timeout=T, rt=rt)
            assert bytes(got) == page(i), i
        s = pageout_stats(rt)
        po = s["pageout"]
        assert po["returned_internal"] >= npages - phys, po
        # no round starts with five pages at the default pager: four plus a round's five
        assert 1 <= po["laundry_internal_peak"] <= 4 + 5, po
        assert po["evictions"] > 0 and po["evictions"] <= 5 * po["rounds"], po
        assert po["laundry_resumes"] + po["daemon_timeouts"] > 0, po
        assert s["pageins"] > 0, s
    finally:
        rt.close()
