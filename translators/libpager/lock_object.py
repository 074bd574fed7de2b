"""_pager_lock_object (Hurd libpager/lock-object.c): memory_object_lock_request, and
when ``sync`` is set, wait until the kernel answered lock_completed and every
data_return that overlapped the range while the request was pending has been written.

The pager's lock is dropped around the lock_request: the kernel may have to wait for a
busy page whose data_request is being served by another thread of this pager, and that
handler needs the lock.  Holding it here was the classic libpager deadlock.
"""

from __future__ import annotations

import structlog

from protocol import message as M
from protocol.kern_return import MachError
from translators.libpager.pager import (
    NORMAL,
    LockRequest,
    Pager,
    _request_release,
    _request_wait,
)

log = structlog.get_logger("libpager")


def _pager_lock_object(p: Pager, offset: int, size: int, should_return: int,
                       should_flush: bool, lock_value: int, sync: bool,
                       timeout: float | None = None) -> bool:
    """Returns True when the request was sent (and, with ``sync``, completed; False if
    ``timeout`` seconds passed first).  A pager not serving the kernel does nothing."""
    lr = None
    with p.lock:
        if p.pager_state != NORMAL or not p.memobjcntl:
            return True
        control = p.memobjcntl
        if sync:
            for r in p.lock_requests:
                if r.start == offset and r.end == offset + size and not r.aborted:
                    lr = r
                    break
            if lr is None:
                lr = LockRequest(offset, offset + size)
                p.lock_requests.append(lr)
            lr.locks_pending += 1
            lr.threads_waiting += 1
        reply = p.port_right if sync else M.MACH_PORT_NULL
    p.count("lock_requests")
    try:
        p.kernel.lock_request(control, offset, size, should_return, should_flush,
                              lock_value, reply)
    except MachError as e:
        log.warning("lock_request failed", port=p.port_right, offset=offset, size=size,
                    code=e.code)
        if lr is not None:
            with p.lock:
                lr.locks_pending -= 1
                _request_release(p.lock_requests, lr)
        return False
    return _request_wait(p, p.lock_requests, lr, timeout)
