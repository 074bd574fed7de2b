"""The kernel side of the external pager protocol (GNU Mach vm/memory_object.c): the calls
pagers make on an object's control port.  What the kernel sends to pagers is in
kernel.memory_object_user.
"""

from __future__ import annotations

import structlog

from kernel import memory_object_user as MOU
from kernel.ipc_right import PORT_SEND_ONCE, release_right
from kernel.sched_prim import Sleep
from kernel.vm_object import pages_of, vm_object_destroy
from kernel.vm_page import vm_page_free, vm_page_grab, vm_page_insert, vm_page_wakeup
from kernel.vm_pageout import vm_pageout_page_list
from protocol.defs import mach as MD
from protocol.kern_return import KernReturn as K
from protocol.kern_return import MachError
from protocol.mig import Demux
from protocol.vm_param import PAGE_SIZE

log = structlog.get_logger("kernel")


def _reply_port(reply_to):
    port, typ = reply_to
    return port if port is not None and typ == PORT_SEND_ONCE else None


# ---------------------------------------------------------------- data from the pager

def memory_object_supply_page(vm, obj, offset, data, lock_value, precious) -> int:
    """One page of memory_object_data_supply."""
    page = obj.resident.get(offset)
    if page is not None and not page.absent:
        return K.KERN_MEMORY_PRESENT
    asked = page is not None
    mem = vm.mem
    if page is None:
        # an unasked page never takes the reserve: a pager cannot starve the system
        page = vm_page_grab(vm, privileged=False, external=not obj.internal)
        if page is None:
            return K.KERN_RESOURCE_SHORTAGE
        vm_page_insert(page, obj, offset)
    else:
        page.absent = False
        obj.absent_count -= 1
        obj.paging_in_progress -= 1
        mem.stats["pageins"] += 1
    mem.write(page, data)
    page.page_lock = lock_value & 7
    page.unlock_request = 0
    page.precious = precious
    page.dirty = False
    if vm.pageout is not None:
        vm.pageout.page_supplied(page, asked)
    if asked:
        mem.vm_page_activate(page)
    else:
        mem.vm_page_deactivate(page)
    vm_page_wakeup(vm, page)
    if not asked:
        vm.k.sched.thread_wakeup(obj)
    return K.KERN_SUCCESS


def _absent_pages(obj, offset, size):
    """The absent pages of ``obj`` in [offset, offset + size), each taken out of the
    absent state.  Only resident pages are walked: a pager may name any range (2**63
    bytes included) without the kernel stepping through it page by page."""
    start = offset - offset % PAGE_SIZE
    for page in list(pages_of(obj, start, offset + size - start)):
        if not page.absent:
            continue
        page.absent = False
        obj.absent_count -= 1
        obj.paging_in_progress -= 1
        yield page


def memory_object_data_unavailable(vm, obj, offset, size):
    """memory_object_data_unavailable: the pager has no data: zero-fill."""
    mem = vm.mem
    for page in _absent_pages(obj, offset, size):
        mem.zero(page)
        mem.stats["zero_fill_count"] += 1
        page.dirty = obj.internal  # nothing backs it until it is written out
        mem.vm_page_activate(page)
        vm_page_wakeup(vm, page)


def memory_object_data_error(vm, obj, offset, size):
    """memory_object_data_error: the faults waiting for these pages fail."""
    for page in _absent_pages(obj, offset, size):
        page.error = True
        vm_page_wakeup(vm, page)


# ---------------------------------------------------------------- lock_request

LOCK_REQUEST_BATCH = 256  # resident pages one step of a lock_request looks at
OFFSET_LIMIT = 1 << 64  # vm_offset_t: no memory object reaches past this


def _lock_page(vm, p, lock_value):
    """memory_object_lock_page's lock part: set page_lock; an access the pager allows
    again wakes the faults waiting for its unlock."""
    old = p.page_lock
    p.page_lock = lock_value & 7
    if old & ~p.page_lock:
        p.unlock_request &= p.page_lock
        if vm.pageout is not None:
            vm.pageout.page_unlocked(p)
        vm_page_wakeup(vm, p)


def memory_object_lock_request(vm, obj, offset, size, should_return, should_flush,
                               lock_value, reply_port):
    """memory_object_lock_request as a kernel thread.  GNU Mach steps through every
    offset of the range; here the range's offsets or the object's resident pages are
    walked, whichever are fewer (the offsets found taken once, in order), at most
    LOCK_REQUEST_BATCH of them a step: a request costs min(range, resident), so a
    one-page unlock of an object with thousands of resident pages is one lookup, and
    the kernel's loop runs between steps.  Per batch: busy pages are waited for, absent
    and error pages skipped; the lock is set; pages to return go in data_returns
    (kernel_copy when not flushing); flushed pages are freed.  Then one lock_completed
    to the reply port (always, when one was given) with the offset and size asked."""
    asked_offset, asked_size = offset, size
    if offset % PAGE_SIZE:
        size += offset % PAGE_SIZE
        offset -= offset % PAGE_SIZE
    end = min(offset + size, OFFSET_LIMIT)
    offsets = [p.offset for p in pages_of(obj, offset, end - offset)]
    only_dirty = should_return == MD.MEMORY_OBJECT_RETURN_DIRTY
    for i in range(0, len(offsets), LOCK_REQUEST_BATCH):
        if i:
            yield Sleep(0)  # let the kernel's loop run between batches
        batch = offsets[i:i + LOCK_REQUEST_BATCH]
        while True:
            busy = [p for p in _resident(obj, batch) if p.busy and not p.absent]
            if not busy:
                break
            busy[0].wanted = True
            yield busy[0]
        pages = [p for p in _resident(obj, batch) if not (p.absent or p.error)]
        if lock_value != MD.VM_PROT_NO_CHANGE:
            for p in pages:
                _lock_page(vm, p, lock_value)
        if should_return != MD.MEMORY_OBJECT_RETURN_NONE and obj.pager is not None:
            vm_pageout_page_list(vm, obj, pages, flush=should_flush, only_dirty=only_dirty)
        if should_flush:
            for p in list(_resident(obj, batch)):
                if not p.absent and not p.busy:
                    vm_page_free(vm, p)
    vm.stats["lock_requests"] += 1
    if reply_port is not None:
        MOU.memory_object_lock_completed(vm.k, obj, reply_port, asked_offset,
                                         min(asked_size, OFFSET_LIMIT - 1))


def _resident(obj, offsets):
    """The pages still resident at ``offsets`` (the object may have changed while the
    request waited)."""
    res = obj.resident
    for off in offsets:
        p = res.get(off)
        if p is not None:
            yield p


# ---------------------------------------------------------------- control port calls

def make_handlers(k) -> Demux:
    vm = k.vm

    def ready(obj, may_cache, copy_strategy):
        obj.can_persist = may_cache
        obj.copy_strategy = copy_strategy
        obj.pager_ready = True
        k.sched.thread_wakeup(obj)

    def change_attributes(obj, may_cache, copy_strategy, reply_to):
        obj.can_persist = may_cache
        obj.copy_strategy = copy_strategy
        rp = _reply_port(reply_to)
        if rp is not None:
            MOU.memory_object_change_completed(k, rp, may_cache, copy_strategy)

    def data_supply(obj, offset, data, lock_value, precious, reply_to):
        if offset % PAGE_SIZE or len(data) % PAGE_SIZE or not len(data):
            rp = _reply_port(reply_to)
            if rp is not None:
                release_right(k, rp, PORT_SEND_ONCE)
            raise MachError(K.KERN_INVALID_ARGUMENT)
        result, error_offset = K.KERN_SUCCESS, 0
        for i in range(0, len(data), PAGE_SIZE):
            code = memory_object_supply_page(vm, obj, offset + i, data[i:i + PAGE_SIZE],
                                             lock_value, precious)
            if code and not result:
                result, error_offset = code, offset + i
        rp = _reply_port(reply_to)
        if rp is not None:
            MOU.memory_object_supply_completed(k, obj, rp, offset, len(data), result,
                                               error_offset)

    def data_unavailable(obj, offset, size):
        memory_object_data_unavailable(vm, obj, offset, size)

    def data_error(obj, offset, size, error_value):
        memory_object_data_error(vm, obj, offset, size)

    def lock_request(obj, offset, size, should_return, should_flush, lock_value, reply_to):
        # Any range is accepted (the work is bounded by what is resident).  A request
        # refused here loses its reply right: the pager hears mach_notify_send_once.
        if should_return not in (0, 1, 2) or offset >= OFFSET_LIMIT:
            log.warning("lock_request refused", object=obj.id, should_return=should_return,
                        offset=offset)
            raise MachError(K.KERN_INVALID_ARGUMENT)
        if k.sched.threads >= k.config.max_kernel_threads:
            k.stats["kernel_threads_refused"] += 1
            raise MachError(K.KERN_RESOURCE_SHORTAGE)
        k.sched.spawn(memory_object_lock_request(vm, obj, offset, size, should_return,
                                                 should_flush, lock_value,
                                                 _reply_port(reply_to)),
                      "lock_request")

    def destroy(obj, reason):
        vm_object_destroy(vm, obj)

    def get_attributes(obj):
        return obj.pager_ready, obj.can_persist, obj.copy_strategy

    return Demux({
        MD.memory_object_ready: ready,
        MD.memory_object_change_attributes: change_attributes,
        MD.memory_object_data_supply: data_supply,
        MD.memory_object_data_unavailable: data_unavailable,
        MD.memory_object_data_error: data_error,
        MD.memory_object_lock_request: lock_request,
        MD.memory_object_destroy: destroy,
        MD.memory_object_get_attributes: get_attributes,
    })
