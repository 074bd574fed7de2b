"""The modern pageout policy's decisions (kernel.vm_pageout_modern) on an in-process
kernel with no task and no pager process.  Pager ports here are real ports nobody
receives on: what the kernel sends them (data_returns carrying their laundry) stays
queued until the test plays the pager and takes the messages (``release``), which
frees the laundry as a pager's vm_deallocate would."""

from __future__ import annotations

import shutil
import time

import pytest

from kernel.config import KernelConfig
from kernel.ipc_kmsg import ipc_kmsg_destroy
from kernel.ipc_port import IPCPort
from kernel.sched_prim import Sleep
from kernel.vm_object import VMObject, make_control_ports, vm_object_deallocate
from kernel.vm_page import (
    FREE_EVENT,
    PAGEOUT_EVENT,
    Q_ACTIVE,
    Q_INACTIVE,
    vm_page_free,
    vm_page_grab,
    vm_page_insert,
    vm_page_wait,
)
from kernel.vm_pageout import POLICIES, ClassicPageout
from kernel.vm_pageout_modern import (
    CONTINUE_EVENT,
    VM_PAGE_MAX_EVICTIONS,
    VM_PAGE_MAX_LAUNDRY,
    VM_PAGEOUT_TIMEOUT,
    ModernPageout,
    vm_page_seg_compute_pageout_thresholds,
)
from kernel.vm_user import vm_statistics
from protocol.kern_return import KernReturn, MachError
from protocol.vm_param import PAGE_SIZE
from tests.unit.test_vm_pageout_advisory import make_kernel

PHYS = 1024  # thresholds 256 / 307 / 512


@pytest.fixture
def modern():
    k, d = make_kernel(pageout_policy="modern", physical_pages=PHYS)
    yield k
    k.close()
    shutil.rmtree(d, ignore_errors=True)


def pager_port(label="pager"):
    return IPCPort(receiver=None, label=label)


def external(k, npages, dirty=False, queue="inactive", can_persist=False):
    """An external object with a pager port and ``npages`` resident pages."""
    obj = VMObject(npages * PAGE_SIZE, internal=False)
    obj.pager = pager_port()
    make_control_ports(obj)
    obj.pager_initialized = obj.pager_ready = True
    obj.can_persist = can_persist
    k.vm.objects += 1
    fill(k, obj, npages, dirty, queue)
    return obj


def anonymous(k, npages, dirty=True, queue="inactive"):
    obj = VMObject(npages * PAGE_SIZE, internal=True)
    k.vm.objects += 1
    fill(k, obj, npages, dirty, queue)
    return obj


def fill(k, obj, npages, dirty, queue):
    mem = k.vm.mem
    base = len(obj.resident)
    for i in range(npages):
        page = vm_page_grab(k.vm, privileged=True)
        vm_page_insert(page, obj, (base + i) * PAGE_SIZE)
        page.dirty = dirty
        if queue == "inactive":
            mem.vm_page_deactivate(page)
        else:
            mem.vm_page_activate(page)


def with_default_pager(k):
    k.vm.default_pager = pager_port("default pager")
    return k.vm.default_pager


def drain_free(k, to: int):
    """Take privileged frames (kept in an object nobody pages) until ``to`` are free."""
    hold = VMObject(0, internal=True)
    mem = k.vm.mem
    while mem.free_count > to:
        vm_page_insert(vm_page_grab(k.vm, privileged=True), hold, len(hold.resident) * PAGE_SIZE)
        # wired: off the queues, as the kernel's own memory
        mem.vm_page_wire(hold.resident[(len(hold.resident) - 1) * PAGE_SIZE])
    return hold


def release(k, port) -> int:
    """Play the pager: take every queued message, freeing the laundry it carries."""
    n = 0
    msgs = port.mqueue.messages
    while msgs:
        kmsg = msgs.popleft()
        n += sum(1 for o in kmsg.ool_objects or () if o is not None)
        ipc_kmsg_destroy(k, kmsg)
    return n


def test_registered_and_accepted_by_the_config(modern):
    assert POLICIES["modern"] is ModernPageout
    assert isinstance(modern.vm.pageout, ModernPageout)
    assert KernelConfig.load(pageout_policy="modern").pageout_policy == "modern"
    with pytest.raises(ValueError, match="modern"):
        KernelConfig.load(pageout_policy="nonesuch")  # the message lists the policies


def test_thresholds_default_and_small_memory():
    npages = KernelConfig().physical_pages
    assert vm_page_seg_compute_pageout_thresholds(npages) == (819, 983, 1638)  # 5/6/10 %
    assert vm_page_seg_compute_pageout_thresholds(4096) == (500, 600, 1000)  # the minimums
    assert vm_page_seg_compute_pageout_thresholds(2000) == (500, 600, 1000)
    # below GNU Mach's smallest segment the minimums shrink with memory: 25/30/50 %
    assert vm_page_seg_compute_pageout_thresholds(1024) == (256, 307, 512)
    assert vm_page_seg_compute_pageout_thresholds(64) == (16, 19, 32)
    for n in range(64, 12000, 37):
        lo_min, low, high = vm_page_seg_compute_pageout_thresholds(n)
        assert 0 < lo_min < low < high <= n // 2


def test_allocation_paused_below_min_and_resumed_at_high(modern):
    vm = modern.vm
    po, mem, sched = vm.pageout, vm.mem, modern.sched
    started = sched.spawn((lambda: (yield PAGEOUT_EVENT))(), "daemon stand-in")
    obj = anonymous(modern, 0)
    while mem.free_count > po.low_free + 1:
        fill(modern, obj, 1, False, "active")
    assert not started.done
    fill(modern, obj, 1, False, "active")  # the allocation that leaves low free
    sched.run()
    assert started.done  # vm_pageout_start
    got = 0
    while vm_page_grab(vm) is not None:
        got += 1
    assert mem.free_count == po.min_free and po.alloc_paused
    assert got == po.low_free - po.min_free
    assert vm_page_grab(vm, privileged=True) is not None  # the daemon's allocations go on
    refused = po.stats["paused_allocations"]
    assert refused == 1

    woken = []

    def faulting_thread():
        yield FREE_EVENT  # what vm_page_wait sleeps on
        woken.append(mem.free_count)

    sched.spawn(faulting_thread(), "fault")
    pages = list(obj.resident.values())
    while mem.free_count < po.high_free - 1:
        vm_page_free(vm, pages.pop())
    sched.run()
    assert not woken and vm_page_grab(vm) is None  # paused until high
    assert po.stats["paused_allocations"] == refused + 1
    assert not po.vm_page_check_usable() and po.alloc_paused
    vm_page_free(vm, pages.pop())
    sched.run()
    assert not woken  # only the daemon resumes allocation
    assert po.vm_pageout_scan() == (True, False)  # done: free is at high
    sched.run()
    assert woken == [po.high_free] and not po.alloc_paused
    assert vm_page_grab(vm) is not None
    s = po.statistics()
    assert s["alloc_pauses"] == 1 and s["alloc_paused"] is False and s["alloc_paused_seconds"] > 0


def test_a_privileged_allocation_leaving_less_than_min_pauses_the_others(modern):
    vm = modern.vm
    po = vm.pageout
    drain_free(modern, po.min_free)
    assert not po.alloc_paused and po.stats["paused_allocations"] == 0
    assert vm_page_grab(vm, privileged=True) is not None  # min - 1 left
    assert po.alloc_paused and po.stats["alloc_pauses"] == 1
    assert vm_page_grab(vm) is None and po.stats["paused_allocations"] == 1


def test_no_round_starts_with_five_pages_of_laundry_at_the_default_pager(modern):
    """vm_page_evict checks the laundry once, before its round: a round that starts with
    four pages at the default pager may send five more (nine), the next one none."""
    vm = modern.vm
    po = vm.pageout
    with_default_pager(modern)
    anon = anonymous(modern, 40)
    drain_free(modern, po.min_free)
    assert po.vm_pageout_scan() == (False, True)
    assert po.laundry_internal == VM_PAGE_MAX_LAUNDRY == 5
    assert len(anon.resident) == 35
    for _ in range(3):  # the default pager has not released anything: no eviction
        assert po.vm_pageout_scan() == (False, True)
    assert len(anon.resident) == 35 and po.stats["laundry_pauses"] == 3
    msgs = anon.pager.mqueue.messages
    ipc_kmsg_destroy(modern, msgs.popleft())  # the default pager releases one page
    assert po.laundry_internal == 4 and not po._resumed
    po.vm_pageout_scan()
    assert len(anon.resident) == 30 and po.laundry_internal == 9
    assert po.stats["laundry_internal_peak"] == VM_PAGE_MAX_LAUNDRY - 1 + VM_PAGE_MAX_EVICTIONS
    po.vm_pageout_scan()
    assert len(anon.resident) == 30 and po.stats["laundry_pauses"] == 4
    release(modern, anon.pager)
    assert po.laundry_internal == 0 and po._resumed  # the laundry reaching 0 resumes
    po.vm_pageout_scan()
    assert len(anon.resident) == 25 and po.laundry_internal == 5


def test_at_most_five_evictions_a_round_and_clean_rounds_do_not_wait(modern):
    po = modern.vm.pageout
    obj = external(modern, 100)  # clean
    drain_free(modern, po.min_free)
    before = len(obj.resident)
    done, should_wait = po.vm_page_evict()
    assert (done, should_wait) == (False, False)  # only clean pages: scan again at once
    assert before - len(obj.resident) == VM_PAGE_MAX_EVICTIONS == 5
    assert po.stats["evictions"] == 5 and po.stats["freed_clean"] == 5
    for p in obj.resident.values():
        p.dirty = True
    before = len(obj.resident)
    assert po.vm_page_evict() == (False, True)  # pages in the laundry: wait for them
    assert before - len(obj.resident) == 5 and po.stats["returned"] == 5
    assert po.external_laundry_count == 5 and po.daemon_laundry_external == 5


def test_external_pages_before_internal_and_inactive_before_active(modern):
    vm = modern.vm
    po = vm.pageout
    with_default_pager(modern)
    anon = anonymous(modern, 10)
    ext_active = external(modern, 10, dirty=True, queue="active")
    ext = external(modern, 3, dirty=True)
    drain_free(modern, po.min_free)
    po.vm_page_evict()
    # the three inactive external pages, then (no inactive external left) internal ones
    assert not ext.resident and len(anon.resident) == 8 and len(ext_active.resident) == 10
    assert (po.daemon_laundry_external, po.laundry_internal) == (3, 2)
    release(modern, ext.pager)
    release(modern, anon.pager)
    for p in list(anon.resident.values()):  # nothing inactive is left: active pages go,
        vm.mem.vm_page_activate(p)  # external first
    po.vm_page_evict()
    assert len(ext_active.resident) == 5 and len(anon.resident) == 8


def test_no_internal_eviction_without_a_default_pager(modern):
    vm = modern.vm
    po = vm.pageout
    dirty = anonymous(modern, 20)
    clean = anonymous(modern, 20, dirty=False)
    drain_free(modern, po.min_free)
    assert po.vm_pageout_scan() == (False, True)
    assert len(dirty.resident) == len(clean.resident) == 20 and dirty.pager is None
    assert po.stalled and po.stats["stalls"] == 1
    # page waits are bounded now: one that began page_wait_timeout ago fails
    wait = vm_page_wait(vm, time.monotonic() - vm.config.page_wait_timeout - 1)
    with pytest.raises(MachError) as e:
        next(wait)
    assert e.value.code == KernReturn.KERN_RESOURCE_SHORTAGE
    with_default_pager(modern)
    po.vm_pageout_scan()
    assert len(dirty.resident) + len(clean.resident) == 35 and not po.stalled


def test_active_pages_kept_to_a_third_external_first(modern):
    vm = modern.vm
    mem, po = vm.mem, vm.pageout
    anon = anonymous(modern, 30, dirty=False, queue="active")
    ext = external(modern, 30, queue="active")
    for p in list(anon.resident.values()) + list(ext.resident.values()):
        p.referenced = True
    moved = po.vm_page_refill_inactive()
    assert moved == 40 and len(mem.active) == 20 == (len(mem.active) + len(mem.inactive)) // 3
    assert all(p.queue == Q_INACTIVE and not p.referenced for p in ext.resident.values())
    assert sum(p.queue == Q_INACTIVE for p in anon.resident.values()) == 10
    assert po.vm_page_refill_inactive() == 0


def test_referenced_inactive_pages_are_reactivated_not_evicted(modern):
    po = modern.vm.pageout
    obj = external(modern, 8)
    first = [obj.resident[i * PAGE_SIZE] for i in range(3)]
    for p in first:
        p.referenced = True
    drain_free(modern, po.min_free)
    po.vm_page_evict()
    assert all(obj.resident.get(p.offset) is p and p.queue == Q_ACTIVE for p in first)
    assert len(obj.resident) == 3 and po.stats["reactivated"] == 3


def run_until(sched, cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        sched.run()
        time.sleep(0.002)


def test_daemon_resumed_by_external_laundry_at_zero_else_after_50_ms(modern):
    vm = modern.vm
    po, sched = vm.pageout, modern.sched
    obj = external(modern, 40, dirty=True)
    drain_free(modern, po.min_free)
    t = sched.spawn(po.daemon(), "vm_pageout")
    assert t.waiting == CONTINUE_EVENT and po.external_laundry_count == 5
    assert po.daemon_laundry_external == 5 and po.statistics()["laundry_external"] == 5
    # the pager releases four pages: not yet
    msgs = obj.pager.mqueue.messages
    for _ in range(4):
        ipc_kmsg_destroy(modern, msgs.popleft())
    assert t.waiting == CONTINUE_EVENT and po.external_laundry_count == 1
    ipc_kmsg_destroy(modern, msgs.popleft())
    assert t.waiting is None  # resumed
    sched.run()
    assert po.stats["laundry_resumes"] == 1 and po.stats["daemon_timeouts"] == 0
    assert t.waiting == CONTINUE_EVENT and po.external_laundry_count == 5  # the next round
    t0 = time.monotonic()
    run_until(sched, lambda: po.stats["daemon_timeouts"] >= 1)
    assert time.monotonic() - t0 >= VM_PAGEOUT_TIMEOUT * 0.9
    assert po.stats["laundry_resumes"] == 1


def test_object_cache_no_limit_no_deactivation_empty_not_cached_emptied_collected():
    k, d = make_kernel(pageout_policy="modern", physical_pages=PHYS, object_cache_max=2,
                       deactivate_on_cache=True)
    try:
        vm = k.vm
        po = vm.pageout
        objs = [external(k, 2, queue="active", can_persist=True) for _ in range(5)]
        for o in objs:
            vm_object_deallocate(vm, o)
        assert len(vm.cache) == 5 and all(o.cached and o.alive for o in objs)
        assert all(p.queue == Q_ACTIVE for o in objs for p in o.resident.values())  # still active
        empty = external(k, 0, can_persist=True)
        vm_object_deallocate(vm, empty)
        assert not empty.cached and not empty.alive  # terminated
        # an eviction that empties a cached object collects it
        victim = objs[0]
        for p in victim.resident.values():
            vm.mem.vm_page_deactivate(p)
        drain_free(k, po.min_free)
        po.vm_page_evict_one(True, False)
        po.vm_page_evict_one(True, False)
        assert not victim.resident and not victim.cached and not victim.alive
        assert len(vm.cache) == 4 and po.statistics()["cache_collected"] == 1
        assert po.statistics()["cached_objects"] == 4
        assert vm_statistics(vm)["cached_objects"] == 4
    finally:
        k.close()
        shutil.rmtree(d, ignore_errors=True)


def test_classic_cache_unchanged():
    k, d = make_kernel(physical_pages=PHYS, object_cache_max=2, deactivate_on_cache=True)
    try:
        vm = k.vm
        assert type(vm.pageout) is ClassicPageout
        objs = [external(k, 2, queue="active", can_persist=True) for _ in range(3)]
        for o in objs:
            vm_object_deallocate(vm, o)
        assert len(vm.cache) == 2 and not objs[0].alive  # over the limit: the oldest goes
        assert all(p.queue == Q_INACTIVE for o in objs[1:] for p in o.resident.values())
        empty = external(k, 0, can_persist=True)
        vm_object_deallocate(vm, empty)
        assert empty.cached and empty.alive
        assert vm_page_grab(vm) is not None  # no grab_allowed: the reserve only
    finally:
        k.close()
        shutil.rmtree(d, ignore_errors=True)


def test_statistics_has_every_modern_counter(modern):
    s = modern.vm.pageout.statistics()
    for key in ("laundry_internal", "laundry_external", "paused_allocations", "alloc_paused",
                "evictions", "daemon_timeouts", "laundry_resumes", "cached_objects",
                "cache_collected", "alloc_paused_seconds", "min_free", "low_free",
                "high_free"):
        assert key in s, key
    assert (s["min_free"], s["low_free"], s["high_free"]) == (256, 307, 512)


def test_daemon_sleeps_when_done(modern):
    po, sched = modern.vm.pageout, modern.sched
    t = sched.spawn(po.daemon(), "vm_pageout")
    assert t.waiting == PAGEOUT_EVENT and po.stats["scans"] == 1
    gen = po.vm_pageout_wait()
    wait = next(gen)
    assert isinstance(wait, Sleep) and wait.event == CONTINUE_EVENT
    assert wait.seconds == VM_PAGEOUT_TIMEOUT == 0.050  # vm_pageout.c: 50 ms
