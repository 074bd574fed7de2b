"""The default pager dies in the middle of an anonymous workload: the pageout daemon
stalls instead of spinning (its counters stay bounded), a later anonymous client that
needs pages nobody can free gets KERN_RESOURCE_SHORTAGE within a bound instead of
hanging, and a new default pager started later takes over."""

from __future__ import annotations

import signal
import time

import pytest

from protocol.defs import mach as MD
from protocol.kern_return import KernReturn as K
from protocol.kern_return import MachError
from protocol.runtime import TaskRuntime
from protocol.vm_param import PAGE_SIZE
from tests.conftest import start_kernel, start_server, wait_for

PAGES = 512  # physical memory of the test's kernel
WAIT = 3.0  # its page_wait_timeout
T = 60


def fill(rt, npages, tag, timeout=T):
    """A new anonymous region of ``npages`` pages, each page written with its tag."""
    a = MD.vm_allocate(rt.task_self, 0, npages * PAGE_SIZE, True, timeout=T, rt=rt)
    for i in range(npages):
        MD.vm_write(rt.task_self, a + i * PAGE_SIZE, page(tag, i), timeout=timeout, rt=rt)
    return a


def page(tag, i):
    return f"{tag} page {i} ".encode().ljust(PAGE_SIZE, b".")


def pageout_stats(rt):
    return MD.vm_statistics(rt.task_self, timeout=T, rt=rt)["pageout"]


def defpager(procs, run_dir, name):
    return start_server(procs, run_dir, "translators.defpager", name, "--swap-size", "32")


@pytest.mark.timeout(240)
def test_defpager_death_stalls_pageout_fails_waiters_and_a_new_one_takes_over(run_dir,
                                                                               procs):
    endpoint = start_kernel(run_dir, procs, physical_pages=PAGES, page_wait_timeout=WAIT)
    dp = defpager(procs, run_dir, "defpager")
    a = TaskRuntime(endpoint, "anon-a")
    b = TaskRuntime(endpoint, "anon-b")
    c = TaskRuntime(endpoint, "anon-c")
    try:
        # More than physical memory: pages go to the default pager and come back.
        addr = fill(a, PAGES + PAGES // 2, "a")
        for i in (0, PAGES - 1, PAGES + 7):
            assert MD.vm_read(a.task_self, addr + i * PAGE_SIZE, PAGE_SIZE, timeout=T,
                              rt=a) == page("a", i)
        assert pageout_stats(a)["returned_internal"] > 0

        dp.kill(signal.SIGKILL)
        dp.p.wait(T)

        # A later anonymous client needs more than can ever be freed: an error within a
        # bound, not a hang (its calls' own timeout is far longer).
        t0 = time.monotonic()
        with pytest.raises(MachError) as e:
            fill(b, PAGES, "b", timeout=120)
        assert e.value.code == K.KERN_RESOURCE_SHORTAGE
        assert time.monotonic() - t0 < WAIT + 30

        # The daemon is stalled, not spinning: over a few seconds it scans at most a few
        # times (each STALL_RECHECK) and gives up on at most a few queues' worth.
        s0 = pageout_stats(c)
        time.sleep(3.0)  # the quantity measured is a rate over this interval
        s1 = pageout_stats(c)
        assert s1["stalls"] >= 1
        assert s1["scans"] - s0["scans"] <= 5, (s0, s1)
        assert s1["no_default_pager"] - s0["no_default_pager"] <= 5 * PAGES, (s0, s1)

        # A new default pager takes over: the stalled pages go to it and a new client's
        # anonymous memory past physical memory works again.
        defpager(procs, run_dir, "defpager2")
        addr_c = fill(c, PAGES, "c")
        for i in (0, PAGES // 2, PAGES - 1):
            assert MD.vm_read(c.task_self, addr_c + i * PAGE_SIZE, PAGE_SIZE, timeout=T,
                              rt=c) == page("c", i)
        wait_for(lambda: pageout_stats(c)["returned_internal"]
                 > s1.get("returned_internal", 0), timeout=T, what="pageout to defpager2")
    finally:
        for rt in (a, b, c):
            rt.close()


@pytest.mark.timeout(120)
def test_a_new_default_pager_replaces_a_dead_one_without_memory_pressure(run_dir, procs):
    """vm_set_default_memory_manager when the registered default pager died and nothing
    made the pageout daemon notice: the kernel forgets the dead one and hands back no
    right (MACH_PORT_NULL, not a dead name the new pager would have to deallocate), so
    the new one starts and takes over."""
    endpoint = start_kernel(run_dir, procs, physical_pages=PAGES)
    dp = defpager(procs, run_dir, "defpager")
    dp.kill(signal.SIGKILL)
    assert dp.p.wait(30) == -signal.SIGKILL
    dp2 = defpager(procs, run_dir, "defpager2")  # start_server waits for it to be ready
    rt = TaskRuntime(endpoint, "client")
    try:
        assert dp2.alive()
        a = fill(rt, PAGES * 2, "after")  # needs pageout: only defpager2 can take it
        for i in (0, PAGES, 2 * PAGES - 1):
            got = MD.vm_read(rt.task_self, a + i * PAGE_SIZE, PAGE_SIZE, timeout=T, rt=rt)
            assert bytes(got) == page("after", i)
        assert pageout_stats(rt).get("returned_internal", 0) > 0
    finally:
        rt.close()
