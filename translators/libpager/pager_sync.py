"""pager_sync, pager_sync_some (Hurd libpager/pager-sync.c): have the kernel return
every dirty or precious page (lock_request RETURN_ALL, no flush, lock unchanged) and,
with ``wait``, wait until they are written."""

from __future__ import annotations

from protocol.defs import mach as V
from protocol.vm_param import PAGE_SIZE
from translators.libpager.lock_object import _pager_lock_object
from translators.libpager.pager import Pager


def _extent(p: Pager) -> int:
    size = int(p.ops.report_extent(p))
    return (size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE


def pager_sync(p: Pager, wait: bool = True, timeout: float | None = None) -> bool:
    """pager_sync over the object's extent (ops.report_extent)."""
    return pager_sync_some(p, 0, _extent(p), wait, timeout)


def pager_sync_some(p: Pager, offset: int, size: int, wait: bool = True,
                    timeout: float | None = None) -> bool:
    """pager_sync_some."""
    if size <= 0:
        return True
    return _pager_lock_object(p, offset, size, V.MEMORY_OBJECT_RETURN_ALL, False,
                              V.VM_PROT_NO_CHANGE, wait, timeout)
