"""pager_flush, pager_flush_some (Hurd libpager/pager-flush.c): the kernel drops its
copies without returning them (lock_request RETURN_NONE, flush)."""

from __future__ import annotations

from protocol.defs import mach as V
from protocol.vm_param import PAGE_SIZE
from translators.libpager.lock_object import _pager_lock_object
from translators.libpager.pagemap import PM_INCORE
from translators.libpager.pager import Pager
from translators.libpager.pager_sync import _extent


def pager_flush(p: Pager, wait: bool = True, timeout: float | None = None) -> bool:
    """pager_flush over the object's extent."""
    return pager_flush_some(p, 0, _extent(p), wait, timeout)


def pager_flush_some(p: Pager, offset: int, size: int, wait: bool = True,
                     timeout: float | None = None) -> bool:
    """pager_flush_some."""
    if size <= 0:
        return True
    ok = _pager_lock_object(p, offset, size, V.MEMORY_OBJECT_RETURN_NONE, True,
                            V.VM_PROT_NO_CHANGE, wait, timeout)
    if ok:
        _clear_incore(p, offset, size)
    return ok


def _clear_incore(p: Pager, offset: int, size: int):
    """After a flush the kernel has no copy of the range."""
    with p.lock:
        first = offset // PAGE_SIZE
        for i in p.pagemap.indices(first, (size + PAGE_SIZE - 1) // PAGE_SIZE, PM_INCORE):
            p.pagemap.clear(i, PM_INCORE)
