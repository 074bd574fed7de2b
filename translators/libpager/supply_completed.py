"""memory_object_supply_completed: answers a data_supply that named a reply port.
libpager supplies without one; a stray answer is counted and logged."""

from __future__ import annotations

import structlog

from translators.libpager.pager import Pager, _pager_release_seqno, _pager_wait_for_seqno

log = structlog.get_logger("libpager")


def _pager_S_memory_object_supply_completed(p: Pager, seqno: int, control: int,
                                            offset: int, length: int, result: int,
                                            error_offset: int) -> bool:
    with p.lock:
        _pager_wait_for_seqno(p, seqno)
        _pager_release_seqno(p, seqno)
    p.count("supply_completed")
    if result:
        log.warning("supply_completed with error", port=p.port_right, offset=offset,
                    length=length, result=result, error_offset=error_offset)
    return False
