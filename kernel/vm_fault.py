"""Page faults (GNU Mach vm/vm_fault.c), as kernel-thread generators.

``vm_fault`` finds or makes the resident page behind one address of a task's map: it
waits for busy pages, zero-fills new anonymous pages, asks the pager for missing pages of
objects that have one (at most ``absent_max`` outstanding per object), waits for free
memory when short, and sends memory_object_data_unlock for a write to a page whose
``page_lock`` forbids writing.
"""

from __future__ import annotations

import time

from kernel import memory_object_user as MOU
from kernel.sched_prim import Sleep
from kernel.vm_object import vm_object_allocate
from kernel.vm_page import Q_INACTIVE, vm_page_free, vm_page_grab, vm_page_insert, vm_page_wait
from protocol.defs.mach import VM_PROT_WRITE
from protocol.kern_return import KernReturn as K
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE, trunc_page


def vm_fault(k, task, vaddr: int, fault_type: int):
    """Generator: returns (object, page) with the page resident, not busy, and allowing
    ``fault_type``; raises MachError (KERN_INVALID_ADDRESS, KERN_PROTECTION_FAILURE,
    KERN_MEMORY_ERROR, KERN_RESOURCE_SHORTAGE when no free page comes, see
    vm_page_wait)."""
    vm = k.vm
    mem = vm.mem
    mem.stats["faults"] += 1
    vaddr = trunc_page(vaddr)
    short_since = None  # when this fault first found no free page
    throttled = False  # this fault has paused for the dirty limit (once per fault)
    while True:
        vmap = task.map
        if vmap is None:
            raise MachError(K.KERN_INVALID_ADDRESS)
        found, entry = vmap.vm_map_lookup_entry(vaddr)
        if not found:
            raise MachError(K.KERN_INVALID_ADDRESS)
        if fault_type & ~entry.protection:
            raise MachError(K.KERN_PROTECTION_FAILURE)
        obj = entry.object
        if obj is None:
            obj = entry.object = vm_object_allocate(vm, entry.vme_end - entry.vme_start)
            entry.offset = 0
        offset = entry.offset + (vaddr - entry.vme_start)
        page = obj.resident.get(offset)
        if page is not None:
            if page.busy:
                page.wanted = True
                yield page
                continue
            if page.error:
                vm_page_free(vm, page)
                raise MachError(K.KERN_MEMORY_ERROR)
            if fault_type & VM_PROT_WRITE and page.page_lock & VM_PROT_WRITE:
                if not page.unlock_request & VM_PROT_WRITE:
                    pageout = vm.pageout
                    if pageout is not None and pageout.too_dirty(obj):
                        yield from pageout.vm_page_too_dirty_wait()
                        continue
                    page.unlock_request |= VM_PROT_WRITE
                    size = PAGE_SIZE if pageout is None else pageout.write_unlock(page)
                    MOU.memory_object_data_unlock(k, obj, offset, VM_PROT_WRITE, size)
                page.wanted = True
                yield page
                continue
            if (fault_type & VM_PROT_WRITE and not page.dirty and not throttled
                    and vm.pageout is not None):
                # The write will dirty the page: the writer pays (throttle policy).
                throttled = True
                pause = vm.pageout.dirty_pause(obj, page)
                if pause > 0:
                    yield Sleep(pause)
                    continue
            if page.queue == Q_INACTIVE:
                mem.vm_page_activate(page)
            page.referenced = True
            return obj, page
        if not obj.alive:
            raise MachError(K.KERN_MEMORY_ERROR)
        if obj.pager is None:
            page = vm_page_grab(vm, privileged=obj.privileged, external=not obj.internal)
            if page is None:
                short_since = short_since or time.monotonic()
                yield from vm_page_wait(vm, short_since)
                continue
            vm_page_insert(page, obj, offset)
            mem.zero(page)
            mem.stats["zero_fill_count"] += 1
            page.referenced = True
            mem.vm_page_activate(page)
            return obj, page
        if not obj.pager.active:
            raise MachError(K.KERN_MEMORY_ERROR)  # the pager is gone
        if not obj.pager_ready or obj.absent_count >= vm.config.absent_max:
            yield obj
            continue
        page = vm_page_grab(vm, privileged=obj.privileged, external=not obj.internal)
        if page is None:
            short_since = short_since or time.monotonic()
            yield from vm_page_wait(vm, short_since)
            continue
        vm_page_insert(page, obj, offset)
        page.busy = page.absent = True
        obj.absent_count += 1
        obj.paging_in_progress += 1
        MOU.memory_object_data_request(k, obj, offset, fault_type)
        page.wanted = True
        yield page


def vm_fault_range(k, task, address: int, size: int, fault_type: int, each):
    """Generator: fault every page of [address, address + size) and call
    ``each(page, start_in_page, length, done)`` right after each fault — before anything
    else can run and take the page away.  ``done`` counts bytes before this piece."""
    end = address + size
    a = address
    while a < end:
        page_start = trunc_page(a)
        n = min(end, page_start + PAGE_SIZE) - a
        _, page = yield from vm_fault(k, task, a, fault_type)
        each(page, a - page_start, n, a - address)
        a += n
