"""The task VM calls (GNU Mach vm/vm_user.c), served on task ports.

Calls that may have to wait (vm_read and vm_write faulting pages in, vm_map waiting for
nothing but kept uniform) run as kernel threads; when every page they touch is resident
they finish at once and reply like any other kernel routine.
"""

from __future__ import annotations

from kernel.vm_fault import vm_fault_range
from kernel.vm_object import vm_object_deallocate, vm_object_enter
from kernel.vm_pageout_throttle import vm_page_dirty_throttled
from protocol import message as M
from protocol.defs import mach as MD
from protocol.kern_return import KernReturn as K
from protocol.kern_return import MachError
from protocol.mig import Demux
from protocol.vm_param import PAGE_SIZE, round_page, trunc_page


def vm_statistics(vm) -> dict:
    """vm_statistics: vm_statistics_data_t plus machemu's counters, the pageout
    policy's among them (its ``statistics()``: policy, laundry, external count, pauses,
    evictions, dirty sleeps ...)."""
    mem = vm.mem
    c = mem.counts()
    s = mem.stats
    out = {
        "policy": vm.k.config.pageout_policy if vm.k is not None else "classic",
        "pagesize": PAGE_SIZE, "free_count": c["free"], "active_count": c["active"],
        "inactive_count": c["inactive"], "wire_count": c["wired"],
        "transit_count": c["transit"], "zero_fill_count": s["zero_fill_count"],
        "reactivations": s["reactivations"], "pageins": s["pageins"],
        "pageouts": s["pageouts"], "faults": s["faults"], "cow_faults": s["cow_faults"],
        "physical_pages": mem.npages, "dirty_count": mem.dirty_count,
        "potentially_dirty": 0, "dirty_sleeping": 0, "dirty_sleeps": 0,
        "dirty_sleep_seconds": 0.0, "unlock_hints": 0, "laundry_count": 0,
        "laundered": vm.stats["laundered"], "ool_regions": vm.stats["ool_regions"],
        "data_returns": vm.stats["memory_object_data_return"],
        "data_return_pages": vm.stats["data_return_pages"],
        "data_requests": vm.stats["memory_object_data_request"],
        "data_unlocks": vm.stats["memory_object_data_unlock"],
        "objects": vm.objects,
        "page_waits": vm.stats["page_waits"],
        # throttle pageout (zero under other policies but the count)
        "dirty_throttled": vm_page_dirty_throttled(vm),
        "dirty_pauses": vm.stats["dirty_pauses"],
        "dirty_pause_ms": round(vm.stats["dirty_pause_ms"], 3),
        "background_writeback_pages": vm.stats["background_writeback_pages"],
    }
    out.update(vm.cache.statistics())  # lookups, hits, cached_objects, cache_* (vm_object)
    if vm.pageout is not None:
        out.update(vm.pageout.statistics())
    return out


def fail(code):
    raise MachError(code)


def _range(address, size):
    if size == 0:
        return None
    start, end = trunc_page(address), round_page(address + size)
    if end <= start:
        fail(K.KERN_INVALID_ARGUMENT)
    return start, end


def _copy_from_pages(mem, out: bytearray):
    """A vm_fault_range callback copying each faulted-in piece of page into ``out``."""
    memory = mem.memory

    def each(page, start, n, done):
        i = page.frame * PAGE_SIZE + start
        out[done:done + n] = memory[i:i + n]

    return each


def _copy_to_pages(mem, data):
    """A vm_fault_range callback storing ``data`` into each piece of page, marking the
    page dirty (pmap's modify bit)."""

    def each(page, start, n, done):
        mem.write(page, data[done:done + n], start)
        if not page.dirty:
            page.dirty = True

    return each


def make_handlers(k) -> Demux:
    vm = k.vm

    def vm_allocate(task, address, size, anywhere):
        if size == 0:
            fail(K.KERN_INVALID_ARGUMENT)
        size = round_page(size)
        return task.map.vm_map_enter(None if anywhere else trunc_page(address), size)

    def vm_deallocate(task, address, size):
        r = _range(address, size)
        if r:
            task.map.vm_map_delete(*r)

    def vm_protect(task, address, size, set_maximum, new_protection):
        if new_protection & ~MD.VM_PROT_ALL:
            fail(K.KERN_INVALID_ARGUMENT)
        r = _range(address, size)
        if r:
            task.map.vm_map_protect(r[0], r[1], new_protection, set_maximum)

    def vm_inherit(task, address, size, new_inheritance):
        r = _range(address, size)
        if r:
            task.map.vm_map_inherit(r[0], r[1], new_inheritance)

    def vm_read(task, address, size):
        if size > M.MAX_OOL_BYTES:
            fail(K.KERN_INVALID_ARGUMENT)
        out = bytearray(size)

        def run():
            yield from vm_fault_range(k, task, address, size, MD.VM_PROT_READ,
                                      _copy_from_pages(vm.mem, out))
            return bytes(out)

        return k.run_or_defer(run(), MD.vm_read)

    def vm_write(task, address, data):
        data = bytes(data)

        def run():
            yield from vm_fault_range(k, task, address, len(data), MD.VM_PROT_WRITE,
                                      _copy_to_pages(vm.mem, data))

        return k.run_or_defer(run(), MD.vm_write)

    def vm_copy(task, source_address, size, dest_address):
        if size > M.MAX_OOL_BYTES:
            fail(K.KERN_INVALID_ARGUMENT)
        buf = bytearray(size)

        def run():
            yield from vm_fault_range(k, task, source_address, size, MD.VM_PROT_READ,
                                      _copy_from_pages(vm.mem, buf))
            yield from vm_fault_range(k, task, dest_address, size, MD.VM_PROT_WRITE,
                                      _copy_to_pages(vm.mem, buf))

        return k.run_or_defer(run(), MD.vm_copy)

    def vm_region(task, address):
        e = task.map.vm_region(address)
        obj = e.object
        return (e.vme_start, e.vme_end - e.vme_start, e.protection, e.max_protection,
                e.inheritance, bool(e.is_shared or (obj is not None and obj.ref_count > 1)),
                0, e.offset)

    def statistics(task):
        s = vm_statistics(vm)
        s["map_entries"] = task.map.nentries
        s["pageout"] = dict(vm.pageout.stats)
        return s

    def vm_map(task, address, size, mask, anywhere, memory_object, offset, copy,
               cur_protection, max_protection, inheritance):
        port, typ = memory_object
        if size == 0 or offset % PAGE_SIZE:
            fail(K.KERN_INVALID_ARGUMENT)
        size = round_page(size)
        if port is None:
            if typ:
                fail(K.KERN_INVALID_ARGUMENT)  # a dead name
            return task.map.vm_map_enter(None if anywhere else trunc_page(address), size,
                                         None, 0, cur_protection, max_protection,
                                         inheritance, mask)
        if port.receiver is None and port.kotype is None and not port.active:
            fail(K.KERN_INVALID_ARGUMENT)
        # Check the range before the pager hears of the object.
        if not anywhere:
            a = trunc_page(address)
            found, _ = task.map.vm_map_lookup_entry(a)
            if found:
                fail(K.KERN_NO_SPACE)
        obj = vm_object_enter(vm, port, offset + size)
        k.consume_descs()  # the object holds the pager right now
        try:
            return task.map.vm_map_enter(None if anywhere else trunc_page(address), size,
                                         obj, offset, cur_protection, max_protection,
                                         inheritance, mask)
        except MachError:
            vm_object_deallocate(vm, obj)
            raise

    return Demux({
        MD.vm_allocate: vm_allocate, MD.vm_deallocate: vm_deallocate,
        MD.vm_protect: vm_protect, MD.vm_inherit: vm_inherit, MD.vm_read: vm_read,
        MD.vm_write: vm_write, MD.vm_copy: vm_copy, MD.vm_region: vm_region,
        MD.vm_statistics: statistics, MD.vm_map: vm_map,
    })
