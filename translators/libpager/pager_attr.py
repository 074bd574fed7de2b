"""pager_change_attributes (Hurd libpager/pager-attr.c).  As with lock_request, the
pager's lock is not held while the kernel is called."""

from __future__ import annotations

import structlog

from protocol import message as M
from protocol.kern_return import MachError
from translators.libpager.pager import (
    NOTINIT,
    AttributeRequest,
    Pager,
    _request_release,
    _request_wait,
)

log = structlog.get_logger("libpager")


def pager_change_attributes(p: Pager, may_cache: bool, copy_strategy: int,
                            wait: bool = False, timeout: float | None = None) -> bool:
    """Change may_cache / copy_strategy.  Before init only the pager's fields change
    (memory_object_ready will carry them); with ``wait``, wait for change_completed."""
    ar = None
    with p.lock:
        p.may_cache, p.copy_strategy = bool(may_cache), int(copy_strategy)
        if p.pager_state == NOTINIT or not p.memobjcntl:
            return True
        control = p.memobjcntl
        if wait:
            for a in p.attribute_requests:
                if (a.may_cache == p.may_cache and a.copy_strategy == p.copy_strategy
                        and not a.aborted):
                    ar = a
                    break
            if ar is None:
                ar = AttributeRequest(p.may_cache, p.copy_strategy)
                p.attribute_requests.append(ar)
            ar.attrs_pending += 1
            ar.threads_waiting += 1
        reply = p.port_right if wait else M.MACH_PORT_NULL
    try:
        p.kernel.change_attributes(control, bool(may_cache), int(copy_strategy), reply)
    except MachError as e:
        log.warning("change_attributes failed", port=p.port_right, code=e.code)
        if ar is not None:
            with p.lock:
                ar.attrs_pending -= 1
                _request_release(p.attribute_requests, ar)
        return False
    return _request_wait(p, p.attribute_requests, ar, timeout)
