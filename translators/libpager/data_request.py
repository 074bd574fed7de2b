"""memory_object_data_request (Hurd libpager/data-request.c): the kernel wants a page.

A page being paged out is not read (the backing store is not yet right): it is marked
page-in wait and the writer supplies it when its write is done.  Otherwise the file
system reads it (ops.read_page) and it is supplied — write-locked if the file system
says so, precious if the pager wants its pages back.  An invalid page, or a page whose
backing store could not be allocated (for a write access), gets data_error.
"""

from __future__ import annotations

import structlog

from protocol.defs import mach as V
from protocol.defs.fs import EIO
from protocol.kern_return import KernReturn, MachError
from protocol.vm_param import PAGE_SIZE
from translators.libpager.pagemap import (
    PAGE_NOERR,
    PM_ERROR,
    PM_INCORE,
    PM_INVALID,
    PM_NEXTERROR,
    PM_PAGEINWAIT,
    PM_PAGINGOUT,
    SET_PM_ERROR,
    SET_PM_NEXTERROR,
    page_error,
    page_error_code,
)
from translators.libpager.pager import (
    NORMAL,
    Pager,
    _pager_allow_termination,
    _pager_block_termination,
    _pager_release_seqno,
    _pager_wait_for_seqno,
    error_code,
)

log = structlog.get_logger("libpager")

_WAIT, _READ, _ERROR = "wait", "read", "error"


def _pager_S_memory_object_data_request(p: Pager, seqno: int, control: int, offset: int,
                                        length: int, access: int) -> bool:
    P = PAGE_SIZE
    refuse = None
    with p.lock:
        _pager_wait_for_seqno(p, seqno)
        p.count("data_requests")
        if control != p.memobjcntl:
            log.warning("data_request: wrong control port", port=p.port_right,
                        control=control)
            _pager_release_seqno(p, seqno)
            p.count("dropped")
            return False
        if p.pager_state != NORMAL:
            refuse = EIO
        elif length <= 0 or length % P or offset % P:
            refuse = KernReturn.KERN_INVALID_ARGUMENT
        if refuse is not None:
            _pager_release_seqno(p, seqno)
        else:
            _pager_block_termination(p)
            plan = []
            first = offset // P
            pm = p.pagemap
            for idx in range(first, first + length // P):
                e = pm[idx]
                if e & PM_PAGINGOUT:
                    # The writer will supply it (data_return.py).
                    pm[idx] = e | PM_PAGEINWAIT
                    plan.append((_WAIT, 0))
                elif PM_NEXTERROR(e) != PAGE_NOERR and access & V.VM_PROT_WRITE:
                    pm[idx] = SET_PM_NEXTERROR(e, PAGE_NOERR)
                    plan.append((_ERROR, page_error_code(PM_NEXTERROR(e))))
                elif e & PM_INVALID:
                    plan.append((_ERROR, page_error_code(PM_ERROR(e)) or EIO))
                else:
                    pm[idx] = e | PM_INCORE  # the kernel might have a copy from now on
                    plan.append((_READ, 0))
            _pager_release_seqno(p, seqno)
    if refuse is not None:
        log.warning("data_request refused", port=p.port_right, offset=offset,
                    length=length, state=p.pager_state, code=int(refuse))
        p.count("dropped")
        _send(p, p.kernel.data_error, control, offset, length, int(refuse))
        return False

    first = offset // P

    def note(i, code):
        # The pagemap knows a page's error before the kernel does: a thread woken by
        # the data_error that asks pager_get_error at once must find it.
        with p.lock:
            e = p.pagemap[first + i]
            if code:
                e &= ~PM_INCORE
            p.pagemap[first + i] = SET_PM_ERROR(e, page_error(code))

    try:
        for i, (what, code) in enumerate(plan):
            off = offset + i * P
            if what == _WAIT:
                p.count("pagein_waits")
                continue
            if what == _READ:
                try:
                    got = p.ops.read_page(p, off, P)
                except Exception as exc:  # noqa: BLE001 - the file system's error
                    code = error_code(exc)
                    p.count("read_errors")
                    log.warning("read_page failed", port=p.port_right, offset=off,
                                code=code, error=str(exc))
                else:
                    note(i, 0)
                    if got is None:
                        p.count("pages_unavailable")
                        _send(p, p.kernel.data_unavailable, control, off, P)
                    else:
                        data, write_lock = got
                        data = _page(data, P)
                        p.count("data_supplies")
                        _send(p, p.kernel.data_supply, control, off, data,
                              V.VM_PROT_WRITE if write_lock else V.VM_PROT_NONE,
                              p.precious, 0)
                    continue
            p.count("data_errors")
            note(i, code)
            _send(p, p.kernel.data_error, control, off, P, code)
    finally:
        with p.lock:
            _pager_allow_termination(p)
    return False


def _page(data, length: int) -> bytes:
    if len(data) == length:
        return data
    data = bytes(data[:length])
    return data + bytes(length - len(data))


def _send(p: Pager, call, *args):
    """A one-way call to the kernel; the object may be gone (its control port dead)."""
    try:
        call(*args)
    except MachError as e:
        log.warning("kernel call failed", call=getattr(call, "__name__", "?"),
                    port=p.port_right, code=e.code)
