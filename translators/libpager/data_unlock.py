"""memory_object_data_unlock (Hurd libpager/data-unlock.c): the kernel wants to write a
write-locked page.  The file system allocates its backing store (ops.unlock_page) and
the lock is lowered with lock_request(VM_PROT_NONE).  If it cannot, the page is flushed
still write-locked and the next write-access data_request for it gets the error.

The advisory pageout patch (GNU Mach 666299d0, 2011) has the kernel ask for writeback
by sending a length of PAGE_SIZE + 1 once potentially dirty pages pass its soft limit;
the Hurd half of that patch is lost.  What this libpager does with the hint: the page is
unlocked as usual (the length rounded down to whole pages), then the pager is queued for
the process's writeback thread, which writes the object back one data_return's worth at
a time (writeback.py says why).  Hints are counted (``writeback_hints``).  The pages of
that writeback come back as data_returns like any others: held in our map (the
kernel's laundry) until written, then deallocated (data_return.py)."""

from __future__ import annotations

import structlog

from protocol.defs import mach as V
from protocol.vm_param import PAGE_SIZE
from translators.libpager.lock_object import _pager_lock_object
from translators.libpager.pagemap import PM_UNLOCKED, SET_PM_NEXTERROR, page_error
from translators.libpager.pager import (
    NORMAL,
    Pager,
    _pager_release_seqno,
    _pager_wait_for_seqno,
    error_code,
)
from translators.libpager.writeback import pager_writeback_hint

log = structlog.get_logger("libpager")


def _pager_S_memory_object_data_unlock(p: Pager, seqno: int, control: int, offset: int,
                                       length: int, access: int) -> bool:
    P = PAGE_SIZE
    hint = length % P == 1  # the advisory kernel's "start writing back"
    if hint:
        length -= 1
    with p.lock:
        _pager_wait_for_seqno(p, seqno)
        ok = (control == p.memobjcntl and p.pager_state == NORMAL and length > 0
              and not length % P and not offset % P)
        _pager_release_seqno(p, seqno)
    if not ok:
        log.warning("data_unlock dropped", port=p.port_right, control=control,
                    offset=offset, length=length, state=p.pager_state)
        p.count("dropped")
        return False
    p.count("unlocks")
    fn = getattr(p.ops, "unlock_page", None)
    err = 0
    if fn is not None:
        try:
            fn(p, offset, length)
        except Exception as exc:  # noqa: BLE001 - the file system's error
            err = error_code(exc)
            log.warning("unlock_page failed", port=p.port_right, offset=offset, code=err,
                        error=str(exc))
    if not err:
        with p.lock:  # the pages the kernel may now dirty: what a hinted writeback asks
            for idx in range(offset // P, (offset + length) // P):
                p.pagemap.set(idx, PM_UNLOCKED)
        _pager_lock_object(p, offset, length, V.MEMORY_OBJECT_RETURN_NONE, False,
                           V.VM_PROT_NONE, False)
        if hint:
            p.count("writeback_hints")
            pager_writeback_hint(p)
        return False
    p.count("unlock_errors")
    with p.lock:
        first = offset // P
        for idx in range(first, first + length // P):
            p.pagemap[idx] = SET_PM_NEXTERROR(p.pagemap[idx], page_error(err))
    _pager_lock_object(p, offset, length, V.MEMORY_OBJECT_RETURN_NONE, True,
                       V.VM_PROT_WRITE, False)
    return False
