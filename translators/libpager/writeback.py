"""What this libpager does with the advisory kernel's writeback hint (GNU Mach 666299d0:
a memory_object_data_unlock of length PAGE_SIZE + 1 once potentially dirty pages pass
the soft limit).  The Hurd half of that patch is lost; this is the choice made here.

A hint queues its pager for writeback; one writeback thread per translator process (one
disk behind it, as Linux has one flusher per backing device) takes the queued pagers in
the order their first hint came and writes each back in windows of DATA_WRITE_MAX pages:
pager_sync_some over each window holding a page write-unlocked since it was last written
(PM_UNLOCKED, set by data_unlock: the pages the kernel counts as potentially dirty),
waiting for the window's pages to be written before asking for the next.  So a hinted writeback has
one data_return in flight at a time, the thread count stays what the writers need, and
the disk is kept busy at its own pace; more hints for a pager already queued are only
counted (``writeback_hints_merged``).  A writeback that gets no answer from the kernel
within the pager's reply_deadline gives up on that window and goes on.

Sending the whole object's lock_request at once, without waiting (pager_sync(wait=False),
diskfs_sync_everything (0)'s way), would answer every hint with a burst of data_returns,
one thread each: the storm the hints are there to prevent.
"""

from __future__ import annotations

import collections
import threading

import structlog

from protocol.vm_param import PAGE_SIZE
from translators.libpager.pagemap import PM_UNLOCKED
from translators.libpager.pager import NORMAL, Pager
from translators.libpager.pager_sync import pager_sync_some

log = structlog.get_logger("libpager")

DATA_WRITE_MAX = 32  # pages asked back per window: what one data_return carries


class Writeback:
    """The process's writeback queue and its thread (started at the first hint)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._queue: collections.OrderedDict[int, Pager] = collections.OrderedDict()
        self._thread: threading.Thread | None = None

    def hint(self, p: Pager):
        """The kernel asked ``p``'s object to be written back: queue it (once)."""
        with self._lock:
            if id(p) in self._queue:
                p.count("writeback_hints_merged")
                return
            self._queue[id(p)] = p
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pager-writeback",
                                                daemon=True)
                self._thread.start()
            self._work.notify()

    def _run(self):
        while True:
            with self._lock:
                while not self._queue:
                    self._work.wait()
                _, p = self._queue.popitem(last=False)
            try:
                write_back(p)
            except Exception:  # noqa: BLE001 - keep serving the other pagers
                log.exception("hinted writeback failed", port=p.port_right)


def write_back(p: Pager) -> int:
    """One hinted writeback of ``p``: pager_sync_some, waiting, over each window of
    DATA_WRITE_MAX pages holding a page write-unlocked since it was last written
    (PM_UNLOCKED: what the kernel counts as potentially dirty; data_return clears it
    when the page is written).  Returns the windows asked."""
    P = PAGE_SIZE
    with p.lock:
        if p.pager_state != NORMAL:
            return 0
        pages = p.pagemap.indices(0, 1 << 62, PM_UNLOCKED)
    windows = sorted({i // DATA_WRITE_MAX for i in pages})
    for w in windows:
        if p.pager_state != NORMAL:
            break
        if not pager_sync_some(p, w * DATA_WRITE_MAX * P, DATA_WRITE_MAX * P, wait=True):
            p.count("writeback_timeouts")
    p.count("writebacks")
    p.count("writeback_windows", len(windows))
    return len(windows)


_writeback = Writeback()


def pager_writeback_hint(p: Pager):
    """Queue ``p`` for the process's hinted writeback (see the module docstring)."""
    _writeback.hint(p)
