"""memory_object_change_completed (Hurd libpager/chg-compl.c): the kernel applied a
synchronous pager_change_attributes."""

from __future__ import annotations

import structlog

from translators.libpager.pager import Pager, _pager_release_seqno, _pager_wait_for_seqno

log = structlog.get_logger("libpager")


def _pager_S_memory_object_change_completed(p: Pager, seqno: int, may_cache: bool,
                                            copy_strategy: int) -> bool:
    with p.lock:
        _pager_wait_for_seqno(p, seqno)
        p.count("change_completed")
        for ar in p.attribute_requests:
            if (ar.may_cache == may_cache and ar.copy_strategy == copy_strategy
                    and ar.attrs_pending):
                ar.attrs_pending -= 1
                if not ar.attrs_pending:
                    p.wakeup.notify_all()
                break
        else:
            log.warning("change_completed for no request", port=p.port_right,
                        may_cache=may_cache, copy_strategy=copy_strategy)
        _pager_release_seqno(p, seqno)
    return False
