"""The VM system of the kernel (GNU Mach vm/vm_init.c, with the object and page routines
of vm/vm_object.c and vm/vm_resident.c that the pager protocol drives).

``VMSystem`` owns physical memory, the object cache, the pager -> object table and the
default pager; vm_fault, vm_pageout and vm_user build on it.
"""

from __future__ import annotations

import collections

import structlog

from kernel import memory_object as MOK
from kernel.ipc_right import PORT_SEND_ONCE, ipc_port_make_send
from kernel.vm_object import VMObject, VMObjectCache, make_control_ports, pages_of
from kernel.vm_page import VMResident
from protocol.defs import mach as MD
from protocol.defs import memory_object as MO
from protocol.kern_return import KernReturn as K
from protocol.vm_param import PAGE_SIZE

log = structlog.get_logger("kernel")

FREE_EVENT = "vm_page_free_wanted"
PAGEOUT_EVENT = "vm_pageout"


class VMSystem:
    def __init__(self, k, config):
        self.k = k
        self.config = config
        self.mem = VMResident(config.physical_pages)
        self.cache = VMObjectCache(config.object_cache_max)
        self.pager_objects: dict[int, VMObject] = {}  # pager port id -> object
        self.default_pager = None  # IPCPort (kernel's send right)
        self.stats = collections.Counter()
        self.objects = 0
        self.pageout = None  # the daemon's policy object (vm_pageout)

    def map_create(self):
        """vm_map_create: a task's empty address map, with the configured lookup
        structure and merge mode."""
        from kernel.vm_map import VMMap

        return VMMap(min_offset=PAGE_SIZE, lookup=self.config.map_lookup,
                     merge=self.config.map_merge,
                     reference=self.object_reference, deallocate=self.object_deallocate,
                     unmap=self.entry_unmap, coalesce=self.object_coalesce)

    def object_coalesce(self, a, size_a, b, size_b, offset_a=0, offset_b=0):
        """vm_object_coalesce: let one anonymous object (one reference, no pager) cover
        two neighbouring ranges.  Pages left over in the range it grows into (from an
        earlier, deallocated mapping of the same object) are purged first, so the new
        memory reads as zeros."""
        if b is None and a is not None:
            self._purge(a, offset_a + size_a, size_b)
            a.size = max(a.size, offset_a + size_a + size_b)
            return a
        if a is None and b is not None:
            if offset_b < size_a:
                return None
            self._purge(b, offset_b - size_a, size_a)
            return (b, offset_b - size_a)
        return None

    def _purge(self, obj, offset, size):
        for p in list(pages_of(obj, offset, size)):
            if p.busy:
                p.error = True  # a fault in flight will see it gone
            self.page_free(p)

    def entry_unmap(self, entry):
        """vm_map_entry_delete's page removal: pages of an anonymous object that no other
        entry maps are freed with the range (Mach's vm_object_page_remove)."""
        obj = entry.object
        if obj is None or not obj.internal or obj.ref_count > 1:
            return
        start, end = entry.offset, entry.offset + (entry.vme_end - entry.vme_start)
        for p in list(pages_of(obj, start, end - start)):
            if not p.busy:
                self.page_free(p)

    # ------------------------------------------------------------ pages of objects

    def page_insert(self, page, obj, offset):
        """vm_page_insert."""
        page.object, page.offset = obj, offset
        obj.resident[offset] = page

    def page_free(self, page):
        """vm_page_free: out of its object, back to the free queue; wakes waiters."""
        obj = page.object
        if obj is not None and obj.resident.get(page.offset) is page:
            del obj.resident[page.offset]
        if page.laundry and self.pageout is not None:
            self.pageout.laundry -= 1
        if page.wanted:
            self.k.sched.thread_wakeup(page)
        self.mem.vm_page_free(page)
        if self.k.sched.waitq.get(FREE_EVENT) and self.mem.free_count > self.reserved():
            self.k.sched.thread_wakeup(FREE_EVENT)

    def reserved(self) -> int:
        return self.pageout.free_reserved if self.pageout is not None else 0

    def page_grab(self, privileged: bool = False):
        """vm_page_grab: a free frame, or None when only the reserve is left (which only
        privileged allocations — pageout, the default pager's objects — may take)."""
        mem = self.mem
        if mem.free_count <= (0 if privileged else self.reserved()):
            return None
        page = mem.vm_page_grab()
        if self.pageout is not None:
            self.pageout.after_grab()
        return page

    def page_wait(self):
        """vm_page_wait: sleep until pages are freed (kicking the pageout daemon)."""
        self.stats["page_waits"] += 1
        self.k.sched.thread_wakeup(PAGEOUT_EVENT)
        yield FREE_EVENT

    def page_wakeup(self, page):
        page.busy = False
        if page.wanted:
            page.wanted = False
            self.k.sched.thread_wakeup(page)

    # ------------------------------------------------------------ objects

    def object_allocate(self, size: int) -> VMObject:
        """vm_object_allocate: a new anonymous (internal) object."""
        self.objects += 1
        return VMObject(size, internal=True)

    def object_enter(self, pager_port, size: int) -> VMObject:
        """vm_object_enter: the object of a pager port, made (and memory_object_init sent)
        on first use, found again — possibly in the object cache — afterwards.  Takes the
        caller's send right to the pager."""
        obj = self.pager_objects.get(pager_port.id)
        self.cache.lookups += 1
        if obj is not None and obj.alive:
            from kernel.ipc_right import PORT_SEND, release_right

            release_right(self.k, pager_port, PORT_SEND)  # the object holds one already
            if obj.cached:
                self.cache.hits += 1
                self.cache.remove(obj)
                obj.ref_count = 1
            else:
                obj.ref_count += 1
            obj.size = max(obj.size, size)
            return obj
        obj = VMObject(size, internal=False)
        self.objects += 1
        obj.pager = pager_port
        obj.pager_ready = False
        make_control_ports(obj)
        self.pager_objects[pager_port.id] = obj
        MOK.memory_object_init(self.k, obj)
        return obj

    def object_reference(self, obj):
        if obj is not None:
            obj.ref_count += 1

    def object_deallocate(self, obj):
        """vm_object_deallocate: the last reference either caches the object (pager
        allows caching) or terminates it."""
        if obj is None:
            return
        obj.ref_count -= 1
        if obj.ref_count > 0:
            return
        if obj.can_persist and obj.pager is not None and obj.alive and obj.pager.active:
            self.cache.enter(obj)
            if self.config.deactivate_on_cache:
                for p in list(obj.resident.values()):
                    if not p.busy:
                        self.mem.vm_page_deactivate(p)
            for old in self.cache.overflow():
                self.object_terminate(old)
            return
        self.object_terminate(obj)

    def object_terminate(self, obj):
        """vm_object_terminate: dirty and precious pages go back to the pager, every page
        is freed, the pager gets memory_object_terminate."""
        if not obj.alive:
            return
        obj.alive = False
        self.objects -= 1
        if obj.pager is not None and obj.pager.active:
            self.return_pages(obj, 0, None, flush=True, only_dirty=False)
        for p in list(obj.resident.values()):
            if p.busy:
                p.absent = False
                p.error = True
                self.page_wakeup(p)
            self.page_free(p)
        if obj.pager is not None:
            self.pager_objects.pop(obj.pager.id, None)
        MOK.memory_object_terminate(self.k, obj)

    def pager_died(self, obj):
        """The pager's port died (its translator is gone): pages it was asked for will
        never come, so their faults end with a memory error instead of waiting forever;
        later faults on missing pages fail the same way (vm_fault checks the port)."""
        self.stats["pagers_died"] += 1
        for p in list(obj.resident.values()):
            if p.absent:
                p.absent = False
                obj.absent_count -= 1
                obj.paging_in_progress -= 1
                p.error = True
                self.page_wakeup(p)
        obj.pager_ready = True
        self.k.sched.thread_wakeup(obj)

    def object_destroy(self, obj):
        """memory_object_destroy from the pager: the object goes, its data with it."""
        if self.cache.objects.get(obj.id) is obj:
            self.cache.remove(obj)
        for p in list(obj.resident.values()):
            if not p.busy:
                p.dirty = p.precious = False
        self.object_terminate(obj)

    # ------------------------------------------------------------ returning pages

    def return_pages(self, obj, offset, size, flush: bool, only_dirty: bool,
                     cluster: int = MOK.DATA_WRITE_MAX) -> int:
        """Send the dirty (and, unless only_dirty, precious) resident pages of a range to
        the pager, contiguous pages batched into data_returns of up to ``cluster`` pages
        (lock_request: DATA_WRITE_MAX; pageout: the configured cluster size); flushed
        pages are freed, the others are cleaned.  Returns the number of pages sent."""
        if size is None:
            size = max([o for o in obj.resident] + [0]) + PAGE_SIZE
        run_off, run = None, []
        sent = 0

        def flush_run():
            nonlocal run_off, run, sent
            if run:
                data = b"".join(self.mem.read(p) for p in run)
                dirty = any(p.dirty for p in run)
                laundry = self.launder(run, move=flush)
                MOK.memory_object_data_return(self.k, obj, run_off, data, dirty,
                                              kernel_copy=not flush, laundry=laundry)
                sent += len(run)
                if not flush:
                    for p in run:
                        p.dirty = False
                        p.potentially_dirty = False
                        self.mem.vm_page_deactivate(p)
            run_off, run = None, []

        for p in list(pages_of(obj, offset, size)):
            if p.busy or p.absent or p.error:
                continue
            if not (p.dirty or (p.precious and not only_dirty)):
                continue
            if run and (p.offset != run_off + len(run) * PAGE_SIZE or len(run) >= cluster):
                flush_run()
            if not run:
                run_off = p.offset
            run.append(p)
        flush_run()
        return sent

    def launder(self, run, move: bool):
        """The pages of a data_return go out in a new internal object (vm_pageout's
        copy): moved out of their object when flushed, copied when the kernel keeps
        them.  They stay wired, counted as laundry, until the pager deallocates them.
        None if no frame is left for a copy (the data still travels in the message)."""
        lobj = VMObject(len(run) * PAGE_SIZE, internal=True, label="laundry")
        mem = self.mem
        for i, p in enumerate(run):
            if move:
                del p.object.resident[p.offset]
                q = p
                q.dirty = q.precious = False
                q.page_lock = q.unlock_request = 0
            else:
                q = self.page_grab(privileged=True)
                if q is None:
                    for r in list(lobj.resident.values()):
                        self.page_free(r)
                    return None
                mem.write(q, mem.data(p))
            self.page_insert(q, lobj, i * PAGE_SIZE)
            q.laundry = True
            mem.vm_page_wire(q)
            if self.pageout is not None:
                self.pageout.laundry += 1
        self.stats["laundered"] += len(run)
        self.objects += 1
        return lobj

    def ool_object(self, data):
        """Out-of-line data copied into new wired pages of an internal object, to be
        mapped into a receiver; None when no frame is left (the data still travels)."""
        n = (len(data) + PAGE_SIZE - 1) // PAGE_SIZE
        obj = VMObject(n * PAGE_SIZE, internal=True, label="ool")
        mem = self.mem
        for i in range(n):
            q = self.page_grab(privileged=True)
            if q is None:
                for r in list(obj.resident.values()):
                    self.page_free(r)
                self.stats["ool_no_memory"] += 1
                return None
            chunk = data[i * PAGE_SIZE:(i + 1) * PAGE_SIZE]
            mem.write(q, chunk)
            if len(chunk) < PAGE_SIZE:
                mem.write(q, bytes(PAGE_SIZE - len(chunk)), len(chunk))
            self.page_insert(q, obj, i * PAGE_SIZE)
            mem.vm_page_wire(q)
        self.objects += 1
        self.stats["ool_regions"] += 1
        return obj

    # ------------------------------------------------------------ pager replies

    def supply_page(self, obj, offset, data, lock_value, precious) -> int:
        """One page of memory_object_data_supply."""
        page = obj.resident.get(offset)
        if page is not None and not page.absent:
            return K.KERN_MEMORY_PRESENT
        asked = page is not None
        if page is None:
            # an unasked page never takes the reserve: a pager cannot starve the system
            page = self.page_grab(privileged=False)
            if page is None:
                return K.KERN_RESOURCE_SHORTAGE
            self.page_insert(page, obj, offset)
        else:
            page.absent = False
            obj.absent_count -= 1
            obj.paging_in_progress -= 1
            self.mem.stats["pageins"] += 1
        self.mem.write(page, data)
        page.page_lock = lock_value & 7
        page.unlock_request = 0
        page.precious = precious
        page.dirty = False
        if self.pageout is not None:
            self.pageout.page_supplied(page, asked)
        if asked:
            self.mem.vm_page_activate(page)
        else:
            self.mem.vm_page_deactivate(page)
        self.page_wakeup(page)
        if not asked:
            self.k.sched.thread_wakeup(obj)
        return K.KERN_SUCCESS

    def _absent_page(self, obj, offset):
        page = obj.resident.get(offset)
        if page is None or not page.absent:
            return None
        page.absent = False
        obj.absent_count -= 1
        obj.paging_in_progress -= 1
        return page

    def page_unavailable(self, obj, offset):
        """memory_object_data_unavailable: the pager has no data: zero-fill."""
        page = self._absent_page(obj, offset)
        if page is None:
            return
        self.mem.zero(page)
        self.mem.stats["zero_fill_count"] += 1
        page.dirty = obj.internal  # nothing backs it until it is written out
        self.mem.vm_page_activate(page)
        self.page_wakeup(page)

    def page_error(self, obj, offset):
        page = self._absent_page(obj, offset)
        if page is None:
            return
        page.error = True
        self.page_wakeup(page)

    # ------------------------------------------------------------ lock_request

    def lock_request_thread(self, obj, offset, size, should_return, should_flush,
                            lock_value, reply_port):
        """memory_object_lock_request, page by page: absent pages are skipped, busy ones
        waited for; the lock is set; pages to return go in data_returns (kernel_copy when
        not flushing); flushed pages are freed, returned ones deactivated; then one
        lock_completed to the reply port."""
        if offset % PAGE_SIZE:
            size += offset % PAGE_SIZE
            offset -= offset % PAGE_SIZE
        end = offset + size
        while True:
            busy = [p for p in pages_of(obj, offset, end - offset) if p.busy and not p.absent]
            if not busy:
                break
            busy[0].wanted = True
            yield busy[0]
        for p in list(pages_of(obj, offset, end - offset)):
            if p.absent or p.error:
                continue
            if lock_value != MD.VM_PROT_NO_CHANGE:
                old = p.page_lock
                p.page_lock = lock_value & 7
                if old & ~p.page_lock:
                    p.unlock_request &= p.page_lock
                    if self.pageout is not None:
                        self.pageout.page_unlocked(p)
                    self.page_wakeup(p)
        if should_return != MD.MEMORY_OBJECT_RETURN_NONE and obj.pager is not None:
            self.return_pages(obj, offset, end - offset, flush=should_flush,
                              only_dirty=should_return == MD.MEMORY_OBJECT_RETURN_DIRTY)
        if should_flush:
            for p in list(pages_of(obj, offset, end - offset)):
                if not p.absent and not p.busy:
                    self.page_free(p)
        self.stats["lock_requests"] += 1
        if reply_port is not None:
            ipc_port_make_send(obj.pager_request)
            from kernel.ipc_right import PORT_SEND

            self.k.kernel_send(MOK.kernel_message(
                self.k, MO.memory_object_lock_completed, reply_port, PORT_SEND_ONCE,
                [(obj.pager_request, PORT_SEND), offset, size]))

    # ------------------------------------------------------------ statistics

    def statistics(self) -> dict:
        """vm_statistics_data_t plus machemu's counters."""
        mem = self.mem
        c = mem.counts()
        s = mem.stats
        dirty = sum(1 for p in mem.pages if p.dirty and p.object is not None)
        return {
            "pagesize": PAGE_SIZE, "free_count": c["free"], "active_count": c["active"],
            "inactive_count": c["inactive"], "wire_count": c["wired"],
            "transit_count": c["transit"], "zero_fill_count": s["zero_fill_count"],
            "reactivations": s["reactivations"], "pageins": s["pageins"],
            "pageouts": s["pageouts"], "faults": s["faults"], "cow_faults": s["cow_faults"],
            "lookups": self.cache.lookups, "hits": self.cache.hits,
            "physical_pages": mem.npages, "dirty_count": dirty,
            "potentially_dirty": self.pageout.potentially_dirty if self.pageout else 0,
            "laundry_count": self.pageout.laundry if self.pageout else 0,
            "laundered": self.stats["laundered"], "ool_regions": self.stats["ool_regions"],
            "data_returns": self.stats["memory_object_data_return"],
            "data_return_pages": self.stats["data_return_pages"],
            "data_requests": self.stats["memory_object_data_request"],
            "data_unlocks": self.stats["memory_object_data_unlock"],
            "objects": self.objects, "cached_objects": len(self.cache),
            "page_waits": self.stats["page_waits"],
        }
