"""memory_object_lock_completed (Hurd libpager/lock-completed.c): the kernel finished a
synchronous lock_request (the reply port was the pager's own port)."""

from __future__ import annotations

import structlog

from translators.libpager.pager import Pager, _pager_release_seqno, _pager_wait_for_seqno

log = structlog.get_logger("libpager")


def _pager_S_memory_object_lock_completed(p: Pager, seqno: int, control: int, offset: int,
                                          length: int) -> bool:
    with p.lock:
        _pager_wait_for_seqno(p, seqno)
        p.count("lock_completed")
        found = None
        if control != p.memobjcntl:
            log.warning("lock_completed: wrong control port", port=p.port_right,
                        control=control)
        else:
            for lr in p.lock_requests:
                if lr.start == offset and lr.end == offset + length and lr.locks_pending:
                    found = lr
                    break
            if found is None:
                log.warning("lock_completed for no request", port=p.port_right,
                            offset=offset, length=length)
            else:
                found.locks_pending -= 1
                if not found.locks_pending and not found.pending_writes:
                    p.wakeup.notify_all()
        _pager_release_seqno(p, seqno)
    return False
