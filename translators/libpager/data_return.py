"""memory_object_data_return (Hurd libpager/data-return.c): the kernel hands back a run
of contiguous pages (dirty: to be written; clean: precious pages it let go).

Dirty run: wait while any of its pages is still being written by an earlier return;
mark them paging out; count the write against every synchronous lock_request over the
range (pager_sync waits for it); DROP THE LOCK and write — one ops.write_pages call for
the run when the file system has a multi-page write, else ops.write_page per page;
retake the lock; supply back pages a data_request waits for; clear in-core unless the
kernel kept a copy; a failed write marks its pages invalid.  Pages the kernel no longer
has are reported to ops.notify_evict when the pager asked for eviction notices.

The pages arrive out of line: the kernel maps them into this task (the laundry; the
kernel counts them until they are given back).  As data-return.c munmaps them, the
handler takes the region over from the server loop (protocol.runtime.take_ool) and
vm_deallocates it itself: a clean run at once, a dirty run only once it is written
(successfully or not), so the kernel gets its pages back after the write, never before.
data-return.c unmaps page by page in its last loop; one vm_deallocate of the whole
region at the same point leaves the map the same.
"""

from __future__ import annotations

import structlog

from protocol.defs import mach as V
from protocol.defs.fs import EIO
from protocol.kern_return import MachError
from protocol.runtime import take_ool
from protocol.vm_param import PAGE_SIZE
from translators.libpager.data_request import _send
from translators.libpager.pagemap import (
    PM_INCORE,
    PM_INIT,
    PM_INVALID,
    PM_PAGEINWAIT,
    PM_PAGINGOUT,
    PM_UNLOCKED,
    PM_WRITEWAIT,
    SET_PM_ERROR,
    SET_PM_NEXTERROR,
    page_error,
)
from translators.libpager.pager import (
    NORMAL,
    Pager,
    _pager_allow_termination,
    _pager_block_termination,
    _pager_release_seqno,
    _pager_wait_for_seqno,
    current_message,
    error_code,
)

log = structlog.get_logger("libpager")


def _pager_S_memory_object_data_return(p: Pager, seqno: int, control: int, offset: int,
                                       data, dirty: bool, kernel_copy: bool) -> bool:
    """_pager_S_memory_object_data_return: the run ``data`` at ``offset`` (whole
    pages, for the current control port of a NORMAL pager, else dropped) written when
    dirty, its region in our map deallocated after (see the module docstring).
    Returns False: the control port's reference is the demuxer's to drop."""
    regions = take_ool(current_message())
    try:
        _data_return(p, seqno, control, offset, data, dirty, kernel_copy, regions)
    finally:
        _give_back(p, regions)  # a handler that failed half way leaks nothing either
    return False


def _data_return(p: Pager, seqno: int, control: int, offset: int, data, dirty: bool,
                 kernel_copy: bool, regions: list):
    P = PAGE_SIZE
    length = len(data)
    with p.lock:
        _pager_wait_for_seqno(p, seqno)
        p.count("data_returns")
        bad = (control != p.memobjcntl or p.pager_state != NORMAL or not length
               or length % P or offset % P)
        if bad:
            _pager_release_seqno(p, seqno)
        else:
            write, notified, lock_list = _begin(p, seqno, offset, length, dirty,
                                                kernel_copy)
    if bad:
        log.warning("data_return dropped", port=p.port_right, control=control,
                    offset=offset, length=length, state=p.pager_state)
        p.count("dropped")
        # (data-return.c's release_out leaves the pages mapped: a leak not copied here.)
        _give_back(p, regions)
        return
    if not write:
        _give_back(p, regions)  # data-return.c munmaps a clean run first thing
    else:
        notified = _write_run(p, control, offset, data, kernel_copy, lock_list)
        _give_back(p, regions)  # written (or failed) and supplied: the pages can go
    _notify(p, offset, notified)


def _begin(p: Pager, seqno: int, offset: int, length: int, dirty: bool,
           kernel_copy: bool):
    """The part before any write, lock held; ends our turn.  Returns whether the run
    is to be written, the eviction notices of a clean run, and the synchronous
    lock_requests the write counts against."""
    P = PAGE_SIZE
    npages = length // P
    first = offset // P
    pm = p.pagemap
    p.count("pages_returned", npages)
    _pager_block_termination(p)
    if not (dirty or p.write_clean):
        p.count("clean_returns")
        notified = []
        for idx in range(first, first + npages):
            e = pm[idx]
            notified.append(not kernel_copy and p.notify_on_evict
                            and not e & PM_PAGEINWAIT)
            if not kernel_copy:
                pm[idx] = e & ~PM_INCORE
        _pager_release_seqno(p, seqno)
        _pager_allow_termination(p)
        return False, notified, []
    # Another return of one of these pages is still being written: wait for it.
    while pm.any(first, npages, PM_PAGINGOUT):
        for idx in range(first, first + npages):
            if pm[idx] & PM_PAGINGOUT:
                pm.set(idx, PM_WRITEWAIT)
        p.count("write_waits")
        p.wakeup.wait()
    for idx in range(first, first + npages):
        pm.set(idx, PM_PAGINGOUT)
    lock_list = [lr for lr in p.lock_requests
                 if offset < lr.end and offset + length > lr.start]
    for lr in lock_list:
        lr.pending_writes += 1
    _pager_release_seqno(p, seqno)
    return True, [], lock_list


def _write_run(p: Pager, control: int, offset: int, data, kernel_copy: bool,
               lock_list: list) -> list[bool]:
    """Write the run without the lock, then settle its pagemap entries and supply the
    pages a data_request waits for.  Returns the eviction notices due."""
    P = PAGE_SIZE
    npages = len(data) // P
    first = offset // P
    pm = p.pagemap
    errs = _write(p, offset, data, npages)  # without the lock
    supply = []
    notified = []
    with p.lock:
        wakeup = False
        for i in range(npages):
            idx = first + i
            e = pm[idx]
            if e & PM_WRITEWAIT:
                wakeup = True
            err = errs[i]
            if err:
                if not e & PM_PAGEINWAIT:
                    # Give errors when it is read from now on (the data is lost).
                    e = SET_PM_ERROR(e | PM_INVALID, page_error(err))
            else:
                e = SET_PM_NEXTERROR(SET_PM_ERROR((e & ~(PM_INVALID | PM_UNLOCKED))
                                                  | PM_INIT, 0), 0)
            if e & PM_PAGEINWAIT:
                supply.append(i)
                e |= PM_INCORE
                notified.append(False)
            else:
                if not kernel_copy:
                    e &= ~PM_INCORE
                notified.append(not kernel_copy and p.notify_on_evict)
            pm[idx] = e & ~(PM_PAGINGOUT | PM_PAGEINWAIT | PM_WRITEWAIT)
        for lr in lock_list:
            lr.pending_writes -= 1
            if not lr.pending_writes and not lr.locks_pending:
                wakeup = True
        if wakeup:
            p.wakeup.notify_all()
        _pager_allow_termination(p)
    for i in supply:
        p.count("data_supplies")
        _send(p, p.kernel.data_supply, control, offset + i * P,
              bytes(data[i * P:(i + 1) * P]), V.VM_PROT_NONE, p.precious, 0)
    return notified


def _give_back(p: Pager, regions: list):
    """vm_deallocate the data_return's regions (emptying ``regions``: once only).  A
    failure (the kernel gone: the map went with the task) is logged and counted."""
    while regions:
        address, size = regions.pop()
        try:
            p.kernel.vm_deallocate(address, size)
            p.count("ool_deallocated")
        except MachError as e:
            p.count("ool_dealloc_errors")
            log.warning("data_return pages not deallocated", port=p.port_right,
                        address=address, size=size, code=e.code)


def _write(p: Pager, offset: int, data, npages: int) -> list[int]:
    """Write the run; the error_t of each page (0: written)."""
    P = PAGE_SIZE
    ops = p.ops
    if p.multi_page_write:
        p.count("write_calls")
        try:
            ops.write_pages(p, offset, data if isinstance(data, bytes) else bytes(data))
            errs = [0] * npages
        except Exception as exc:  # noqa: BLE001 - the file system's error
            code = error_code(exc)
            log.warning("write_pages failed", port=p.port_right, offset=offset,
                        npages=npages, code=code, error=str(exc))
            errs = [code] * npages
    else:
        errs = []
        for i in range(npages):
            p.count("write_calls")
            try:
                ops.write_page(p, offset + i * P, bytes(data[i * P:(i + 1) * P]))
                errs.append(0)
            except Exception as exc:  # noqa: BLE001 - the file system's error
                code = error_code(exc) or EIO
                log.warning("write_page failed", port=p.port_right, offset=offset + i * P,
                            code=code, error=str(exc))
                errs.append(code)
    bad = sum(1 for e in errs if e)
    p.count("pages_written", npages - bad)
    if bad:
        p.count("write_errors", bad)
    return errs


def _notify(p: Pager, offset: int, notified: list[bool]):
    """pager_notify_evict for each contiguous run of evicted pages; then their error
    bits are cleared (the association of the page may change, as in the Hurd)."""
    if not any(notified):
        return
    fn = getattr(p.ops, "notify_evict", None)
    P = PAGE_SIZE
    i, n = 0, len(notified)
    while i < n:
        if not notified[i]:
            i += 1
            continue
        j = i
        while j < n and notified[j]:
            j += 1
        p.count("evictions", j - i)
        if fn is not None:
            try:
                fn(p, offset + i * P, (j - i) * P)
            except Exception:  # noqa: BLE001
                log.exception("notify_evict failed", port=p.port_right,
                              offset=offset + i * P)
        with p.lock:
            first = offset // P
            for idx in range(first + i, first + j):
                p.pagemap[idx] = SET_PM_ERROR(SET_PM_NEXTERROR(p.pagemap[idx], 0), 0)
        i = j
