"""memory_object_init (Hurd libpager/object-init.c): record the control and name ports
and answer memory_object_ready."""

from __future__ import annotations

import structlog

from protocol.vm_param import PAGE_SIZE
from translators.libpager.pager import (
    NORMAL,
    NOTINIT,
    Pager,
    _pager_release_seqno,
    _pager_wait_for_seqno,
)

log = structlog.get_logger("libpager")


def _pager_S_memory_object_init(p: Pager, seqno: int, control: int, name: int,
                                page_size: int) -> bool:
    """Returns True when the pager kept the control and name rights (a first init)."""
    with p.lock:
        _pager_wait_for_seqno(p, seqno)
        kept = False
        if page_size != PAGE_SIZE:
            log.error("init: bad page size", port=p.port_right, page_size=page_size)
        elif p.pager_state != NOTINIT:
            log.error("init: pager dup init", port=p.port_right, state=p.pager_state)
        else:
            p.memobjcntl, p.memobjname = control, name
            p.pager_state = NORMAL
            kept = True
            may_cache, copy_strategy = p.may_cache, p.copy_strategy
        _pager_release_seqno(p, seqno)
    if kept:
        p.count("inits")
        p.kernel.ready(control, may_cache, copy_strategy)
    else:
        p.count("dropped")
    return kept
