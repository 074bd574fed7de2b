"""Memory objects inside the kernel (GNU Mach vm/vm_object.c, vm/vm_object.h).

Internal objects are anonymous memory: zero-filled on first touch, given to the default
pager (memory_object_create) the first time one of their pages is paged out.  External
objects are backed by a translator's pager port.  An object whose last reference goes
while ``can_persist`` is set enters the object cache; a later vm_map of the same pager
finds it there with its pages still resident.

The vm_object_* routines take the VM system (``kernel.vm_init.VMSystem``) first.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict

from kernel import memory_object_user as MOU
from kernel.ipc_port import KERNEL, IPCPort, ipc_port_make_send
from kernel.ipc_right import PORT_SEND, release_right
from kernel.vm_page import Q_INACTIVE, vm_page_free, vm_page_wakeup
from protocol.vm_param import PAGE_SIZE

_ids = itertools.count(1)


class VMObject:
    __slots__ = ("id", "ref_count", "size", "resident", "internal", "temporary", "pager",
                 "pager_request", "pager_name", "pager_created", "pager_initialized",
                 "pager_ready", "paging_in_progress", "absent_count", "can_persist",
                 "copy_strategy", "shadow", "shadow_offset", "cached", "alive",
                 "privileged", "label")

    def __init__(self, size: int, internal: bool = True, label: str = ""):
        self.id = next(_ids)
        self.ref_count = 1
        self.size = size
        self.resident: dict[int, object] = {}  # offset -> VMPage
        self.internal = internal
        self.temporary = internal
        self.pager = None  # IPCPort: the kernel's send right to the pager
        self.pager_request = None  # IPCPort: the control port (served by the kernel)
        self.pager_name = None  # IPCPort: the name port (vm_region reports it)
        self.pager_created = False
        self.pager_initialized = False
        self.pager_ready = internal
        self.paging_in_progress = 0
        self.absent_count = 0
        self.can_persist = False
        self.copy_strategy = 2  # MEMORY_OBJECT_COPY_DELAY
        self.shadow = None
        self.shadow_offset = 0
        self.cached = False
        self.alive = True
        self.privileged = False
        self.label = label

    def __repr__(self):
        kind = "internal" if self.internal else "external"
        return f"<vm_object {self.id} {kind} {len(self.resident)} pages>"


def make_control_ports(obj: VMObject):
    """The control and name ports of an object with a pager (kernel-served ports)."""
    obj.pager_request = IPCPort(receiver=KERNEL, kobject=obj, kotype="memory_object_control",
                                label=f"control {obj.id}")
    obj.pager_name = IPCPort(receiver=KERNEL, kobject=obj, kotype="memory_object_name",
                             label=f"name {obj.id}")


class VMObjectCache:
    """vm_object_cached_list: persisting objects at zero references, oldest first.

    As made here it is the cache before 2013: at most ``max_objects`` (None: no limit),
    empty objects cached too (``keep_empty``), an entering object's pages deactivated
    when config.deactivate_on_cache says so (``deactivate``).  A pageout policy may
    change the three (kernel.vm_pageout_modern: the 2013 cache).

    Counters (``statistics``): ``lookups`` and ``hits`` are vm_statistics' object
    cache lookups (vm_object_enter) and hits (the object was found in the cache);
    ``entered`` objects vm_object_deallocate cached, ``deactivated`` pages
    vm_object_deactivate_pages moved to the inactive queue as their object entered
    (``deactivate_seconds`` the time those calls took), ``overflowed`` objects
    terminated because the cache was over its limit."""

    def __init__(self, max_objects: int | None):
        self.objects: OrderedDict[int, VMObject] = OrderedDict()
        self.max_objects = max_objects
        self.keep_empty = True
        self.deactivate = True
        self.lookups = 0
        self.hits = 0
        self.entered = 0
        self.deactivated = 0
        self.deactivate_seconds = 0.0
        self.overflowed = 0

    def __len__(self):
        return len(self.objects)

    def statistics(self) -> dict:
        """The cache's counters for vm_statistics (``cache_*``; lookups and hits are
        vm_statistics' own names)."""
        return {"lookups": self.lookups, "hits": self.hits,
                "cached_objects": len(self.objects), "cache_entered": self.entered,
                "cache_deactivated": self.deactivated,
                "cache_deactivate_ms": round(self.deactivate_seconds * 1000, 3),
                "cache_overflowed": self.overflowed}

    def enter(self, obj: VMObject):
        obj.cached = True
        self.objects[obj.id] = obj
        self.entered += 1

    def remove(self, obj: VMObject):
        obj.cached = False
        self.objects.pop(obj.id, None)

    def overflow(self):
        """Objects to terminate because the cache is over its limit."""
        out = []
        if self.max_objects is not None:
            while len(self.objects) > self.max_objects:
                _, obj = self.objects.popitem(last=False)
                obj.cached = False
                out.append(obj)
        self.overflowed += len(out)
        return out


def pages_of(obj: VMObject, offset: int, size: int):
    """The resident pages of ``obj`` in [offset, offset + size), in offset order."""
    res = obj.resident
    if size // PAGE_SIZE < len(res):
        for off in range(offset, offset + size, PAGE_SIZE):
            p = res.get(off)
            if p is not None:
                yield p
    else:
        for off in sorted(o for o in res if offset <= o < offset + size):
            yield res[off]


# ------------------------------------------------------------ references

def vm_object_allocate(vm, size: int) -> VMObject:
    """vm_object_allocate: a new anonymous (internal) object."""
    vm.objects += 1
    return VMObject(size, internal=True)


def vm_object_reference(obj):
    """vm_object_reference."""
    if obj is not None:
        obj.ref_count += 1


def vm_object_deallocate(vm, obj):
    """vm_object_deallocate: the last reference either caches the object (pager
    allows caching; resident pages too unless the cache keeps empty objects) or
    terminates it."""
    if obj is None:
        return
    obj.ref_count -= 1
    if obj.ref_count > 0:
        return
    cache = vm.cache
    if (obj.can_persist and obj.pager is not None and obj.alive and obj.pager.active
            and (obj.resident or cache.keep_empty)):
        cache.enter(obj)
        if cache.deactivate and vm.config.deactivate_on_cache:
            t0 = time.perf_counter()
            cache.deactivated += vm_object_deactivate_pages(vm, obj)
            cache.deactivate_seconds += time.perf_counter() - t0
        for old in vm.cache.overflow():
            vm_object_terminate(vm, old)
        return
    vm_object_terminate(vm, obj)


def vm_object_deactivate_pages(vm, obj) -> int:
    """vm_object_deactivate_pages (vm_object.c until 98d64d1a, 2013): every resident
    page of ``obj`` that is neither busy nor wired goes to the inactive queue with its reference bit
    cleared (vm_page_deactivate; a page already inactive and unreferenced stays where
    it is).  Returns the number of pages that were active or referenced: the ones the
    call took their activity from."""
    mem = vm.mem
    n = 0
    for p in list(obj.resident.values()):
        if p.busy or p.wire_count:
            continue
        if p.queue != Q_INACTIVE or p.referenced:
            n += 1
        mem.vm_page_deactivate(p)
    return n


def vm_object_terminate(vm, obj):
    """vm_object_terminate: the dirty and precious pages of a permanent (external)
    object go back to its pager, one page per data_return as vm_pageout_page sends them
    (data_return_cluster pages when clustering is configured); a temporary object's
    pages are only freed.  Then every page is freed, and the pager gets
    memory_object_terminate.  A data_return's laundry terminating is its pager letting
    it go (the pageout policy's laundry counts)."""
    from kernel.vm_pageout import vm_pageout_pages  # vm_pageout.c uses vm_object.c too

    if not obj.alive:
        return
    obj.alive = False
    vm.objects -= 1
    if vm.pageout is not None:
        vm.pageout.laundry_released(obj)
    if not obj.temporary and obj.pager is not None and obj.pager.active:
        cluster = max(1, vm.config.data_return_cluster)
        vm_pageout_pages(vm, obj, 0, None, flush=True, only_dirty=False, cluster=cluster)
    for p in list(obj.resident.values()):
        if p.busy:
            p.absent = False
            p.error = True
            vm_page_wakeup(vm, p)
        vm_page_free(vm, p)
    if obj.pager is not None:
        vm.pager_objects.pop(obj.pager.id, None)
    MOU.memory_object_terminate(vm.k, obj)


def vm_object_destroy(vm, obj):
    """vm_object_destroy (memory_object_destroy from the pager): the object goes, its
    data with it."""
    if vm.cache.objects.get(obj.id) is obj:
        vm.cache.remove(obj)
    for p in list(obj.resident.values()):
        if not p.busy:
            p.dirty = p.precious = False
    vm_object_terminate(vm, obj)


# ------------------------------------------------------------ pagers

def vm_object_enter(vm, pager_port, size: int) -> VMObject:
    """vm_object_enter: the object of a pager port, made (and memory_object_init sent)
    on first use, found again — possibly in the object cache — afterwards.  Takes the
    caller's send right to the pager."""
    obj = vm.pager_objects.get(pager_port.id)
    vm.cache.lookups += 1
    if obj is not None and obj.alive:
        release_right(vm.k, pager_port, PORT_SEND)  # the object holds one already
        if obj.cached:
            vm.cache.hits += 1
            vm.cache.remove(obj)
            obj.ref_count = 1
        else:
            obj.ref_count += 1
        obj.size = max(obj.size, size)
        return obj
    obj = VMObject(size, internal=False)
    vm.objects += 1
    obj.pager = pager_port
    obj.pager_ready = False
    make_control_ports(obj)
    vm.pager_objects[pager_port.id] = obj
    MOU.memory_object_init(vm.k, obj)
    return obj


def vm_object_pager_create(vm, obj, default_pager):
    """vm_object_pager_create: an anonymous object's first pageout makes the default
    pager its pager.  The kernel makes the pager port and gives its receive right away
    (memory_object_create)."""
    k = vm.k
    port = IPCPort(receiver=None, qlimit=k.config.qlimit_default, label=f"anon {obj.id}")
    make_control_ports(obj)
    ipc_port_make_send(port)
    obj.pager = port
    obj.pager_created = obj.pager_initialized = obj.pager_ready = True
    vm.pager_objects[port.id] = obj
    MOU.memory_object_create(k, obj, default_pager, port)


def vm_object_pager_died(vm, obj):
    """The pager's port died (its translator is gone): pages it was asked for will
    never come, so their faults end with a memory error instead of waiting forever;
    later faults on missing pages fail the same way (vm_fault checks the port).  GNU
    Mach has no such routine: there the faults would wait."""
    vm.stats["pagers_died"] += 1
    for p in list(obj.resident.values()):
        if p.absent:
            p.absent = False
            obj.absent_count -= 1
            obj.paging_in_progress -= 1
            p.error = True
            vm_page_wakeup(vm, p)
    obj.pager_ready = True
    vm.k.sched.thread_wakeup(obj)


# ------------------------------------------------------------ pages of a range

def vm_object_page_remove(vm, obj, offset: int, size: int, busy_too: bool = False):
    """vm_object_page_remove: free the resident pages of [offset, offset + size).  Busy
    pages are skipped, or with ``busy_too`` marked in error (a fault in flight sees them
    gone) and freed."""
    for p in list(pages_of(obj, offset, size)):
        if p.busy:
            if not busy_too:
                continue
            p.error = True
        vm_page_free(vm, p)


def vm_object_coalesce(vm, a, size_a, b, size_b, offset_a=0, offset_b=0):
    """vm_object_coalesce: let one anonymous object (one reference, no pager) cover
    two neighbouring ranges.  Pages left over in the range it grows into (from an
    earlier, deallocated mapping of the same object) are purged first, so the new
    memory reads as zeros."""
    if b is None and a is not None:
        vm_object_page_remove(vm, a, offset_a + size_a, size_b, busy_too=True)
        a.size = max(a.size, offset_a + size_a + size_b)
        return a
    if a is None and b is not None:
        if offset_b < size_a:
            return None
        vm_object_page_remove(vm, b, offset_b - size_a, size_a, busy_too=True)
        return (b, offset_b - size_a)
    return None
