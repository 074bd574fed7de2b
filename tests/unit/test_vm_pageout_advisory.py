"""The advisory pageout policy's decisions (kernel.vm_pageout_advisory) on an in-process
kernel with no task and no pager process: objects without a pager port, so what the
kernel would send them is dropped, and the policy's state is looked at directly."""

from __future__ import annotations

import shutil
import tempfile

import pytest

from kernel.config import KernelConfig
from kernel.main import Kernel
from kernel.memory_object import memory_object_supply_page
from kernel.sched_prim import Sleep
from kernel.vm_object import VMObject
from kernel.vm_page import vm_page_grab, vm_page_insert
from kernel.vm_pageout import POLICIES, ClassicPageout, vm_pageout_page_list
from kernel.vm_pageout_advisory import (
    MEMORY_OBJECT_COPY_VMPRIV,
    TOO_DIRTY_EVENT,
    AdvisoryPageout,
    advisory_limits,
)
from kernel.vm_user import vm_statistics
from protocol.defs.mach import VM_PROT_WRITE
from protocol.vm_param import PAGE_SIZE


def make_kernel(**cfg):
    d = tempfile.mkdtemp(prefix="adv", dir="/tmp")
    k = Kernel(f"ipc://{d}/k.sock", KernelConfig.load(**cfg))
    return k, d


@pytest.fixture
def adv():
    k, d = make_kernel(pageout_policy="advisory", physical_pages=1024,
                       advisory_soft_limit=4, advisory_hard_limit=8)
    yield k
    k.close()
    shutil.rmtree(d, ignore_errors=True)


def external(k, npages, inactive=True):
    """An external object with ``npages`` resident pages, supplied as a pager would."""
    obj = VMObject(npages * PAGE_SIZE, internal=False)
    for i in range(npages):
        page = vm_page_grab(k.vm)
        vm_page_insert(page, obj, i * PAGE_SIZE)
        page.absent = True
        obj.absent_count += 1
        obj.paging_in_progress += 1
        assert memory_object_supply_page(k.vm, obj, i * PAGE_SIZE, bytes(PAGE_SIZE), 0,
                                         False) == 0
        if inactive:
            k.vm.mem.vm_page_deactivate(page)
    return obj


def write(k, page):
    """What vm_fault and the pager's unlock do for the first write of a locked page."""
    po = k.vm.pageout
    size = po.write_unlock(page)
    page.page_lock = 0
    po.page_unlocked(page)
    page.dirty = True
    return size


def run(gen):
    """Drive a kernel-thread generator to its end, skipping its waits."""
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        return stop.value


def test_registered_and_retuned_thresholds(adv):
    po = adv.vm.pageout
    assert POLICIES["advisory"] is AdvisoryPageout and isinstance(po, AdvisoryPageout)
    free = 1024 - po.free_reserved
    assert po.free_target == po.free_reserved + 15 + free // 20
    assert po.free_min == po.free_reserved + 10 + free // 40
    assert (po.external_limit, po.external_target) == (free // 10, free // 4)
    assert (po.soft_limit, po.hard_limit) == (4, 8)


def test_limits_default_and_scaled():
    assert advisory_limits(KernelConfig.load()) == (2700, 3000)
    scaled = KernelConfig.load(physical_pages=4096, advisory_scale_limits=True)
    assert advisory_limits(scaled) == (675, 750)
    with pytest.raises(ValueError, match="advisory_soft_limit"):
        KernelConfig.load(advisory_soft_limit=3001)
    with pytest.raises(ValueError, match="half of physical_pages"):
        KernelConfig.load(pageout_policy="advisory", physical_pages=4096)


def test_external_pages_supplied_write_locked(adv):
    obj = external(adv, 2)
    assert all(p.page_lock == VM_PROT_WRITE for p in obj.resident.values())
    internal = VMObject(PAGE_SIZE, internal=True)
    page = vm_page_grab(adv.vm)
    vm_page_insert(page, internal, 0)
    page.absent = True
    internal.absent_count = internal.paging_in_progress = 1
    memory_object_supply_page(adv.vm, internal, 0, bytes(PAGE_SIZE), 0, False)
    assert page.page_lock == 0


def test_unlock_counts_and_hints_above_soft_limit(adv):
    po = adv.vm.pageout
    obj = external(adv, 6)
    pages = [obj.resident[i * PAGE_SIZE] for i in range(6)]
    sizes = [write(adv, p) for p in pages]
    # the count is taken before this page joins it: > 4 from the sixth write on
    assert sizes == [PAGE_SIZE] * 5 + [PAGE_SIZE + 1]
    assert po.potentially_dirty == 6 and po.stats["unlock_hints"] == 1
    s = vm_statistics(adv.vm)
    assert (s["potentially_dirty"], s["unlock_hints"]) == (6, 1)


def test_hard_limit_sleeps_until_cleaned_and_vmpriv_is_exempt(adv):
    po = adv.vm.pageout
    obj = external(adv, 10)
    for i in range(9):
        write(adv, obj.resident[i * PAGE_SIZE])
    assert po.too_dirty(obj)
    priv = external(adv, 1)
    priv.copy_strategy = MEMORY_OBJECT_COPY_VMPRIV
    assert not po.too_dirty(priv)
    assert write(adv, priv.resident[0]) == PAGE_SIZE  # no hint either

    woken = []

    def writer():
        yield from po.vm_page_too_dirty_wait()
        woken.append(po.potentially_dirty)

    t = adv.sched.spawn(writer(), "writer")
    assert t.waiting == TOO_DIRTY_EVENT and not woken
    assert vm_statistics(adv.vm)["dirty_sleeping"] == 1
    # the pager writes two pages back (lock_request RETURN_DIRTY, no flush)
    sent = vm_pageout_page_list(adv.vm, obj, [obj.resident[0], obj.resident[PAGE_SIZE]],
                                flush=False, only_dirty=True)
    assert sent == 2
    adv.sched.run()
    assert woken == [8] and not po.too_dirty(obj)
    s = vm_statistics(adv.vm)
    assert (s["dirty_sleeps"], s["dirty_sleeping"]) == (1, 0)
    assert s["dirty_sleep_seconds"] > 0
    # cleaned pages are write-locked again: their next write is seen
    assert obj.resident[0].page_lock == VM_PROT_WRITE
    assert obj.resident[2 * PAGE_SIZE].page_lock == 0


def test_a_sleeper_looks_again_after_a_flush_it_was_not_told_of(adv):
    po = adv.vm.pageout
    obj = external(adv, 9)
    for i in range(9):
        write(adv, obj.resident[i * PAGE_SIZE])
    gen = po.vm_page_too_dirty_wait()
    wait = next(gen)
    assert isinstance(wait, Sleep) and wait.event == TOO_DIRTY_EVENT and wait.seconds <= 1
    vm_pageout_page_list(adv.vm, obj, [obj.resident[0]], flush=True, only_dirty=True)
    assert not po.too_dirty(obj)  # a decision recounts: the flushed page left


def test_scan_frees_clean_external_pages_before_internal(adv):
    vm = adv.vm
    po = vm.pageout
    anon = VMObject(64 * PAGE_SIZE, internal=True)
    for i in range(64):
        page = vm_page_grab(vm, privileged=True)
        vm_page_insert(page, anon, i * PAGE_SIZE)
        page.dirty = True
        vm.mem.vm_page_deactivate(page)
    obj = external(adv, vm.mem.free_count - po.free_reserved - 10)
    dirty_ext = obj.resident[0]
    write(adv, dirty_ext)
    assert vm.mem.free_count < po.free_target
    run(po.scan())
    assert vm.mem.free_count >= po.free_target
    assert po.stats["freed_clean_external"] > 0
    assert len(anon.resident) == 64 and po.stats["no_default_pager"] == 0
    assert obj.resident.get(0) is dirty_ext  # left to its pager

    # with no clean external page left, the classic scan tries the internal pages
    for p in list(obj.resident.values()):
        if p is not dirty_ext:
            p.dirty = True
    while vm.mem.free_count > po.free_min:
        vm_page_insert(vm_page_grab(vm, privileged=True), anon, len(anon.resident) * PAGE_SIZE)
    run(po.scan())
    assert po.stats["no_default_pager"] > 0  # wanted to launder an anonymous page
    assert obj.resident.get(0) is dirty_ext


def test_classic_hooks_do_nothing():
    k, d = make_kernel(physical_pages=256)
    try:
        po = k.vm.pageout
        assert type(po) is ClassicPageout
        obj = external(k, 1)
        page = obj.resident[0]
        assert page.page_lock == 0 and not po.too_dirty(obj)
        assert po.write_unlock(page) == PAGE_SIZE and po.potentially_dirty == 0
        s = vm_statistics(k.vm)
        assert (s["dirty_sleeps"], s["unlock_hints"]) == (0, 0)
    finally:
        k.close()
        shutil.rmtree(d, ignore_errors=True)
