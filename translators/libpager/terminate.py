"""memory_object_terminate (Hurd libpager/object-terminate.c): the kernel forgot the
object; wait until no handler uses the pagemap, forget it, destroy the control and
name ports (whose receive rights the message brought)."""

from __future__ import annotations

import structlog

from translators.libpager.pager import (
    Pager,
    _pager_free_structure,
    _pager_release_seqno,
    _pager_wait_for_seqno,
)

log = structlog.get_logger("libpager")


def _pager_S_memory_object_terminate(p: Pager, seqno: int, control: int,
                                     name: int) -> bool:
    with p.lock:
        _pager_wait_for_seqno(p, seqno)
        if control != p.memobjcntl:
            log.warning("terminate: wrong control port", port=p.port_right,
                        control=control, memobjcntl=p.memobjcntl)
        else:
            while p.noterm:
                p.termwaiting = True
                p.wakeup.wait()
            _pager_free_structure(p)
            p.count("terminates")
        _pager_release_seqno(p, seqno)
    # The send rights we kept from init share these names: destroy takes them all.
    for right in (control, name):
        if right:
            try:
                p.kernel.destroy(right)
            except Exception as e:  # noqa: BLE001 - the right may be gone already
                log.debug("terminate: right already gone", name=right, error=str(e))
    return True
