"""The object cache of the classic kernel (kernel.vm_object: vm_object_deallocate,
vm_object_deactivate_pages, vm_object_enter, VMObjectCache) on an in-process kernel
with no pager process: what enters the cache, what deactivate_on_cache does to the
entering object's pages, what the counters in vm_statistics say."""

from __future__ import annotations

import shutil

import pytest

from kernel.ipc_port import IPCPort, ipc_port_make_send
from kernel.vm_object import (
    VMObject,
    make_control_ports,
    vm_object_deactivate_pages,
    vm_object_deallocate,
    vm_object_enter,
)
from kernel.vm_page import Q_ACTIVE, Q_INACTIVE, vm_page_grab, vm_page_insert
from kernel.vm_user import vm_statistics
from protocol.vm_param import PAGE_SIZE
from tests.unit.test_vm_pageout_advisory import make_kernel

PHYS = 1024


def kernel(**cfg):
    k, d = make_kernel(physical_pages=PHYS, **cfg)
    return k, d


def a_kernel(deactivate: bool):
    k, d = kernel(deactivate_on_cache=deactivate)
    yield k
    k.close()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def deact():
    yield from a_kernel(True)


@pytest.fixture
def keep():
    yield from a_kernel(False)


def pager_object(k, npages, queue="active", referenced=True):
    """An external, cacheable object as vm_object_enter makes it (its pager port with one
    send right, in vm.pager_objects), ``npages`` resident pages on ``queue``."""
    port = IPCPort(receiver=None, label="pager")
    ipc_port_make_send(port)
    obj = vm_object_enter(k.vm, port, npages * PAGE_SIZE)
    obj.pager_initialized = obj.pager_ready = True
    obj.can_persist = True
    mem = k.vm.mem
    for i in range(npages):
        page = vm_page_grab(k.vm)
        vm_page_insert(page, obj, i * PAGE_SIZE)
        if queue == "active":
            mem.vm_page_activate(page)
        else:
            mem.vm_page_deactivate(page)
        page.referenced = referenced
    return obj, port


def test_entering_deactivates_every_page_and_counts_them(deact):
    vm = deact.vm
    obj, _ = pager_object(deact, 8)
    busy = obj.resident[0]
    busy.busy = True
    wired = obj.resident[PAGE_SIZE]
    vm.mem.vm_page_wire(wired)
    vm_object_deallocate(vm, obj)
    assert obj.cached and obj.alive and len(vm.cache) == 1
    s = vm_statistics(vm)
    assert s["cache_entered"] == 1 and s["cached_objects"] == 1
    assert s["cache_deactivated"] == 6  # not the busy page, not the wired one
    assert s["cache_deactivate_ms"] > 0  # timed
    rest = [p for o, p in obj.resident.items() if o >= 2 * PAGE_SIZE]
    assert all(p.queue == Q_INACTIVE and not p.referenced for p in rest)
    assert busy.queue == Q_ACTIVE and wired.wire_count == 1


def test_pages_already_inactive_unreferenced_are_not_counted(deact):
    vm = deact.vm
    obj, _ = pager_object(deact, 4, queue="inactive", referenced=False)
    obj.resident[0].referenced = True  # touched while inactive: it loses that
    assert vm_object_deactivate_pages(vm, obj) == 1
    assert not obj.resident[0].referenced
    vm.mem.vm_page_activate(obj.resident[PAGE_SIZE])
    assert vm_object_deactivate_pages(vm, obj) == 1


def test_without_deactivation_pages_stay_active(keep):
    vm = keep.vm
    obj, _ = pager_object(keep, 8)
    vm_object_deallocate(vm, obj)
    assert obj.cached
    s = vm_statistics(vm)
    assert s["cache_entered"] == 1 and s["cache_deactivated"] == 0
    assert s["cache_deactivate_ms"] == 0
    assert all(p.queue == Q_ACTIVE and p.referenced for p in obj.resident.values())


def test_enter_finds_the_cached_object(deact):
    vm = deact.vm
    obj, port = pager_object(deact, 4)
    s0 = vm_statistics(vm)
    vm_object_deallocate(vm, obj)
    ipc_port_make_send(port)  # the next vm_map's send right
    again = vm_object_enter(vm, port, 4 * PAGE_SIZE)
    assert again is obj and not obj.cached and obj.ref_count == 1 and len(vm.cache) == 0
    s = vm_statistics(vm)
    assert (s["lookups"], s["hits"]) == (s0["lookups"] + 1, s0["hits"] + 1)
    assert len(obj.resident) == 4  # its pages came back with it


def test_referenced_object_is_not_cached(deact):
    vm = deact.vm
    obj, _ = pager_object(deact, 2)
    obj.ref_count += 1
    vm_object_deallocate(vm, obj)
    assert not obj.cached and vm_statistics(vm)["cache_entered"] == 0
    assert all(p.queue == Q_ACTIVE for p in obj.resident.values())


def test_overflow_terminates_the_oldest_and_counts_it():
    k, d = kernel(deactivate_on_cache=True, object_cache_max=2)
    try:
        vm = k.vm
        objs = [pager_object(k, 1)[0] for _ in range(3)]
        for o in objs:
            vm_object_deallocate(vm, o)
        s = vm_statistics(vm)
        assert s["cache_entered"] == 3 and s["cache_overflowed"] == 1
        assert s["cached_objects"] == 2 and not objs[0].alive and objs[2].cached
    finally:
        k.close()
        shutil.rmtree(d, ignore_errors=True)


def test_internal_object_is_never_cached(deact):
    vm = deact.vm
    obj = VMObject(PAGE_SIZE, internal=True)
    make_control_ports(obj)
    vm.objects += 1
    obj.can_persist = True  # no pager: nothing to find it again by
    vm_object_deallocate(vm, obj)
    assert not obj.cached and not obj.alive
    assert vm_statistics(vm)["cache_entered"] == 0
