"""pager_return, pager_return_some (Hurd libpager/pager-return.c): the kernel returns
dirty and precious pages and drops every copy (lock_request RETURN_ALL, flush)."""

from __future__ import annotations

from protocol.defs import mach as V
from translators.libpager.lock_object import _pager_lock_object
from translators.libpager.pager import Pager
from translators.libpager.pager_flush import _clear_incore
from translators.libpager.pager_sync import _extent


def pager_return(p: Pager, wait: bool = True, timeout: float | None = None) -> bool:
    """pager_return over the object's extent."""
    return pager_return_some(p, 0, _extent(p), wait, timeout)


def pager_return_some(p: Pager, offset: int, size: int, wait: bool = True,
                      timeout: float | None = None) -> bool:
    """pager_return_some."""
    if size <= 0:
        return True
    ok = _pager_lock_object(p, offset, size, V.MEMORY_OBJECT_RETURN_ALL, True,
                            V.VM_PROT_NO_CHANGE, wait, timeout)
    if ok:
        _clear_incore(p, offset, size)
    return ok
