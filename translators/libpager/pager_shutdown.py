"""pager_shutdown (Hurd libpager/pager-shutdown.c): write everything back, drop the
kernel's copies, stop serving and destroy the pager's port."""

from __future__ import annotations

from translators import libports as LP
from translators.libpager.pager import SHUTDOWN, Pager, _pager_free_structure, release_rights
from translators.libpager.pager_flush import pager_flush
from translators.libpager.pager_sync import pager_sync


def pager_shutdown(p: Pager, timeout: float | None = None):
    """Sync and flush (waiting), then SHUTDOWN and ports_destroy_right.  The caller's
    reference stays (drop it with pager_deref)."""
    pager_sync(p, True, timeout)
    pager_flush(p, True, timeout)
    with p.lock:
        p.pager_state = SHUTDOWN
        control, name, owed = p.memobjcntl, p.memobjname, p.control_refs_owed
        _pager_free_structure(p)
    release_rights(p, control, name, owed)
    LP.ports_destroy_right(p.pi)
