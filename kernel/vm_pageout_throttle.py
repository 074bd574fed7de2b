"""The ``throttle`` pageout policy: Linux's dirty throttling at the writer
(mm/page-writeback.c, ``balance_dirty_pages``), which no Mach ever had.  The dirtying
thread pays for writeback instead of the pageout daemon discovering a mountain of dirty
pages under shortage.

Shortage is handled exactly as under ``classic`` (ClassicPageout's daemon and scan run
unchanged).  On top of it:

- What counts as dirty (``vm_page_dirty_throttled``): dirty resident pages of external
  objects (file pages: their pager is a file system) plus the laundry — pages sent in a
  data_return that the pager has not deallocated yet (internal and external: classic
  counts only the former in vm_page_laundry_count).  That is Linux's NR_FILE_DIRTY +
  NR_WRITEBACK: anonymous (internal) memory is not throttled, since its only writeback is
  the default pager under shortage, which the daemon already drives; laundry is counted
  because a page being written back still occupies memory and the disk has not taken it
  yet — without it a slow pager would let writers run free while its queue grows.
- Thresholds, as fractions of physical memory (Linux takes them of "dirtyable" memory,
  free plus page cache; here every frame can hold file data): ``bg_thresh`` =
  dirty_background_ratio % (10), ``thresh`` = dirty_ratio % (20).
- Background writeback (Linux's flusher threads, wb_workfn): above bg_thresh a second
  kernel thread, started by the daemon, sends data_returns of dirty external pages
  (oldest first: inactive queue, then active) without waiting for a free-page shortage;
  the pages stay resident, now clean (kernel_copy, as a lock_request that returns
  without flushing).  At most FLUSH_BATCH pages per round and FLUSH_LAUNDRY_MAX pages of
  laundry outstanding; it stops once the count is back at or below bg_thresh.
- The writer's pause (``dirty_pause``): a write fault that is about to dirty a clean page
  of an external object while the count is above thresh sleeps once, for
  ``min(max_pause, max_pause * (dirty - thresh) / span)`` with span = (thresh -
  bg_thresh) / 2.  Linux (since 3.2, "IO-less dirty throttling") throttles over
  [freerun, limit], freerun = (thresh + bg_thresh) / 2, reaching MAX_PAUSE = HZ/5
  (200 ms) at the limit; here the pause starts at thresh, as the issue asks, and grows
  linearly over a region of the same width, so it reaches max_pause at
  thresh + span (25 % of memory with the defaults).
- The count is read afresh at most every RATELIMIT_PAGES dirtying faults or RECOUNT_AGE
  seconds, as Linux's ratelimit_pages = 32 and per-CPU counter slack let the writer
  act on a count a little out of date (the count itself is kept by kernel.vm_page).
"""

from __future__ import annotations

import time

import structlog

from kernel.sched_prim import Sleep
from kernel.vm_page import PAGEOUT_EVENT
from kernel.vm_pageout import POLICIES, ClassicPageout, vm_pageout_page_list

log = structlog.get_logger("kernel")

FLUSH_EVENT = "vm_pageout_flusher"  # what wakes the background writeback thread
FLUSH_BATCH = 64  # pages per background writeback round
FLUSH_LAUNDRY_MAX = 128  # laundry outstanding beyond which the flusher waits
FLUSH_WAIT = 0.010  # seconds between rounds while over bg_thresh
FLUSH_IDLE = 0.5  # seconds the flusher sleeps (or until woken) below bg_thresh
RATELIMIT_PAGES = 32  # Linux ratelimit_pages
RECOUNT_AGE = 0.020  # seconds a count stays good


def vm_page_dirty_throttled(vm) -> int:
    """The dirty count the throttle works on: dirty resident pages of external objects
    plus the laundry outstanding (Linux's NR_FILE_DIRTY + NR_WRITEBACK)."""
    n = vm.mem.dirty_external  # kept by the pages' dirty bits (kernel.vm_page)
    pageout = vm.pageout
    if pageout is None:
        return n
    return n + pageout.laundry + pageout.laundry_external


def dirty_pause_seconds(dirty: int, bg_thresh: int, thresh: int, max_pause: float) -> float:
    """The writer's pause (balance_dirty_pages): 0 at or below ``thresh``, then
    proportional to the excess over a span of (thresh - bg_thresh) / 2 pages (the width
    of Linux's [freerun, limit] region), at most ``max_pause`` seconds."""
    if dirty <= thresh:
        return 0.0
    span = max(1, (thresh - bg_thresh) // 2)
    return min(max_pause, max_pause * (dirty - thresh) / span)


class ThrottlePageout(ClassicPageout):
    """classic pageout plus Linux's background writeback and writer pauses."""

    name = "throttle"

    def __init__(self, vm):
        super().__init__(vm)
        cfg = vm.config
        npages = vm.mem.npages
        self.bg_thresh = npages * cfg.dirty_background_ratio // 100
        self.thresh = npages * cfg.dirty_ratio // 100
        self.max_pause = cfg.dirty_pause_max_ms / 1000.0
        self._count = 0
        self._counted_at = float("-inf")
        self._dirtied = 0  # dirtying faults since the last count
        self.stats.update({"dirty_pauses": 0, "dirty_pause_ms": 0.0,
                           "background_writeback_pages": 0, "flusher_rounds": 0})

    # ------------------------------------------------------------ the count

    def nr_dirty(self, fresh: bool = False) -> int:
        """vm_page_dirty_throttled, recounted when ``fresh``, after RATELIMIT_PAGES
        dirtying faults or when older than RECOUNT_AGE seconds."""
        now = time.monotonic()
        if fresh or self._dirtied >= RATELIMIT_PAGES or now - self._counted_at > RECOUNT_AGE:
            self._count = vm_page_dirty_throttled(self.vm)
            self._counted_at, self._dirtied = now, 0
        return self._count

    # ------------------------------------------------------------ the writer

    def dirty_pause(self, obj, page) -> float:
        """balance_dirty_pages for a write fault about to dirty clean ``page`` of
        ``obj``: wakes the flusher above bg_thresh; returns the seconds the faulting
        thread must sleep (0: none), counting the pause."""
        if obj.internal or obj.privileged:
            return 0.0
        self._dirtied += 1
        dirty = self.nr_dirty()
        if dirty > self.bg_thresh:
            self.vm.k.sched.thread_wakeup(FLUSH_EVENT)
        pause = dirty_pause_seconds(dirty, self.bg_thresh, self.thresh, self.max_pause)
        if pause > 0:
            vs = self.vm.stats
            vs["dirty_pauses"] += 1
            vs["dirty_pause_ms"] += pause * 1000.0
            self.stats["dirty_pauses"] += 1
            self.stats["dirty_pause_ms"] += pause * 1000.0
        return pause

    # ------------------------------------------------------------ background writeback

    def daemon(self):
        """vm_pageout: the classic daemon, after starting the flusher thread."""
        self.vm.k.sched.spawn(self.flusher(), "vm_pageout_flusher")
        yield from super().daemon()

    def background_needed(self) -> bool:
        return self.nr_dirty(fresh=True) > self.bg_thresh

    def flusher(self):
        """Background writeback (Linux wb_workfn / wb_check_background_flush) as a kernel
        thread: while over bg_thresh, rounds of background_writeback."""
        while True:
            if not self.background_needed():
                yield Sleep(FLUSH_IDLE, FLUSH_EVENT)
                continue
            if self.laundry + self.laundry_external >= FLUSH_LAUNDRY_MAX:
                yield Sleep(FLUSH_WAIT, PAGEOUT_EVENT)
                continue
            sent = self.background_writeback(FLUSH_BATCH)
            yield Sleep(FLUSH_WAIT if sent else FLUSH_IDLE, FLUSH_EVENT)

    def background_writeback(self, limit: int) -> int:
        """One round: up to ``limit`` dirty external pages, oldest first (inactive queue,
        then active), returned to their pagers without flushing (the pages stay
        resident, clean) in data_returns of up to data_return_cluster contiguous pages.
        Returns the number of pages sent."""
        vm = self.vm
        mem = vm.mem
        # Each page sent costs a frame for its copy until the pager releases it: only
        # spare frames (above the free target) go to background writeback.
        limit = min(limit, mem.free_count - self.free_target)
        if limit <= 0:
            return 0
        by_object: dict = {}
        found = 0
        for queue in (mem.inactive, mem.active):
            for p in queue:
                if found >= limit:
                    break
                obj = p.object
                if (not p.dirty or p.busy or p.absent or p.error or obj is None
                        or obj.internal or obj.pager is None or not obj.pager.active
                        or not obj.pager_ready or not obj.alive):
                    continue
                by_object.setdefault(obj, []).append(p)
                found += 1
        sent = 0
        cluster = max(1, vm.config.data_return_cluster)
        for obj, pages in by_object.items():
            pages.sort(key=lambda q: q.offset)
            sent += vm_pageout_page_list(vm, obj, pages, flush=False, only_dirty=True,
                                         cluster=cluster)
        if sent:
            self.stats["flusher_rounds"] += 1
            self.stats["background_writeback_pages"] += sent
            vm.stats["background_writeback_pages"] += sent
            self._counted_at = float("-inf")  # laundry moved: recount next time
        return sent


POLICIES["throttle"] = ThrottlePageout
