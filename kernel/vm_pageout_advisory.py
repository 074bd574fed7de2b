"""The ``advisory`` pageout policy (Sergio Lopez, GNU Mach branch
k0ro/advisory_pageout/master, commit 666299d0, 2011): the kernel tells external pagers
when too many of their pages may be dirty, and holds back writers past a hard limit.

- free target 15 + free/20, free min 10 + free/40 (plus the reserve); external limit
  free/10, external target free/4;
- pages of external objects are supplied write-locked (memory_object_data_supply), so
  the first write of each sends memory_object_data_unlock and counts the page in
  ``vm_page_dirty_count`` (``potentially_dirty``: write-unlocked since last cleaned);
- above ``advisory_soft_limit`` the unlock's length is PAGE_SIZE + 1: the hint that
  asks the pager to start writing back;
- above ``advisory_hard_limit`` the faulting thread sleeps on ``vm_page_too_dirty``
  until as many pages have left the count as there are sleepers, then retries;
  objects with copy strategy MEMORY_OBJECT_COPY_VMPRIV are exempt from both;
- a cleaned external page is write-locked again and leaves the count
  (vm_pageout_setup); a freed or flushed one leaves it too (vm_page_free);
- under shortage the scan first frees clean inactive external pages, when there are
  more external pages than the external limit, and launders internal pages only if
  still short: dirty external pages are left to their pagers (the hints).

The count is kept as the set of pages that were write-unlocked; the VM routines clear a
page's ``potentially_dirty`` flag when they clean it, and reset it when they free or
launder it, so the set is pruned (``_recount``) after every cleaning run the kernel
reports (something_changed), before every hard-limit decision that it could change,
and before a hint at most every RECOUNT_INTERVAL.  A sleeper also retries after TOO_DIRTY_RECHECK seconds:
pages flushed by a pager's lock_request leave the count without a report.
"""

from __future__ import annotations

import time

from kernel import vm_pageout as VP
from kernel.sched_prim import Sleep
from kernel.vm_page import vm_page_free
from protocol.defs.mach import VM_PROT_WRITE
from protocol.vm_param import PAGE_SIZE

MEMORY_OBJECT_COPY_VMPRIV = 4  # include/mach/memory_object.h on the advisory branch
TOO_DIRTY_EVENT = "vm_page_too_dirty"
TOO_DIRTY_RECHECK = 0.05  # seconds: a sleeper looks at the count again at least this often
RECOUNT_INTERVAL = 0.005  # seconds between recounts not forced by a cleaning run
DEFAULT_PAGES = 16384  # KernelConfig.physical_pages: what advisory_scale_limits scales from


def advisory_limits(config) -> tuple[int, int]:
    """(soft, hard) dirty page limits of a configuration, scaled to physical memory
    when ``advisory_scale_limits`` is set."""
    soft, hard = config.advisory_soft_limit, config.advisory_hard_limit
    if config.advisory_scale_limits:
        soft = max(1, soft * config.physical_pages // DEFAULT_PAGES)
        hard = max(soft, hard * config.physical_pages // DEFAULT_PAGES)
    return soft, hard


class AdvisoryPageout(VP.ClassicPageout):
    name = "advisory"

    def __init__(self, vm):
        super().__init__(vm)
        free = vm.mem.npages - self.free_reserved
        self.free_min = self.free_reserved + 10 + free // 40
        self.free_target = max(self.free_reserved + 15 + free // 20, self.free_min + 5)
        self.external_limit = free // 10  # VM_PAGE_EXTERNAL_LIMIT
        self.external_target = free // 4  # VM_PAGE_EXTERNAL_TARGET
        self.soft_limit, self.hard_limit = advisory_limits(vm.config)
        self._dirty: set = set()  # pages counted in vm_page_dirty_count
        self._recounted = 0.0
        self.too_dirty_count = 0  # vm_page_too_dirty: pages to clean before a wakeup
        self.stats.update({"unlock_hints": 0, "dirty_sleeps": 0, "dirty_sleeping": 0,
                           "dirty_sleep_seconds": 0.0, "dirty_peak": 0,
                           "freed_clean_external": 0, "relocked": 0})

    # ------------------------------------------------------------ the dirty count

    def _recount(self, force: bool = False):
        """Prune pages that left the count (cleaned, freed, laundered); a cleaned page
        still in its external object is write-locked again (vm_pageout_setup).  Pages
        leaving pay off vm_page_too_dirty; at 0 the sleepers are woken."""
        now = time.monotonic()
        if not force and now - self._recounted < RECOUNT_INTERVAL:
            return
        self._recounted = now
        keep, left = set(), 0
        for p in self._dirty:
            obj = p.object
            resident = obj is not None and not obj.internal and obj.resident.get(p.offset) is p
            if resident and p.potentially_dirty:
                keep.add(p)
                continue
            left += 1
            if resident and not p.dirty:
                p.page_lock |= VM_PROT_WRITE
                self.stats["relocked"] += 1
        self._dirty = keep
        self.potentially_dirty = len(keep)
        if left and self.too_dirty_count:
            self.too_dirty_count = max(0, self.too_dirty_count - left)
            if self.too_dirty_count == 0:
                self.vm.k.sched.thread_wakeup(TOO_DIRTY_EVENT)

    def too_dirty(self, obj) -> bool:
        """vm_fault_page's hard limit: must a write fault on a write-locked page of
        ``obj`` wait (vm_page_too_dirty_wait) before its data_unlock is sent?"""
        if obj.copy_strategy == MEMORY_OBJECT_COPY_VMPRIV or len(self._dirty) <= self.hard_limit:
            return False
        self._recount(force=True)  # exact: blocked writers retry rarely
        return self.potentially_dirty > self.hard_limit

    def vm_page_too_dirty_wait(self):
        """Generator: assert_wait(&vm_page_too_dirty) and block (the fault then starts
        over); woken when the pages owed are cleaned, or after TOO_DIRTY_RECHECK."""
        self.too_dirty_count += 1
        st = self.stats
        st["dirty_sleeps"] += 1
        st["dirty_sleeping"] += 1
        t0 = time.monotonic()
        try:
            yield Sleep(TOO_DIRTY_RECHECK, TOO_DIRTY_EVENT)
        finally:
            st["dirty_sleeping"] -= 1
            st["dirty_sleep_seconds"] += time.monotonic() - t0

    def write_unlock(self, page) -> int:
        """vm_fault_page sending memory_object_data_unlock for a write: the page
        counts as potentially dirty; returns the unlock's length, PAGE_SIZE + 1 (the
        write-back hint) above the soft limit unless the object is VMPRIV."""
        obj = page.object
        size = PAGE_SIZE
        if obj.copy_strategy != MEMORY_OBJECT_COPY_VMPRIV:
            if len(self._dirty) > self.soft_limit:
                self._recount()
            if self.potentially_dirty > self.soft_limit:
                size += 1
                self.stats["unlock_hints"] += 1
        if not obj.internal:
            page.potentially_dirty = True
            self._dirty.add(page)
            self.potentially_dirty = len(self._dirty)
            if self.potentially_dirty > self.stats["dirty_peak"]:
                self.stats["dirty_peak"] = self.potentially_dirty
        return size

    # ------------------------------------------------------------ hooks

    def page_supplied(self, page, asked):
        """memory_object_data_supply: an external page comes write-locked, so that its
        first write is seen."""
        VP.ClassicPageout.something_changed(self)
        if not page.object.internal and not page.page_lock:
            page.page_lock = VM_PROT_WRITE

    def something_changed(self):
        """Pages were cleaned (or freed): they leave the dirty count now, before any
        write can reach them unlocked."""
        self._recount(force=True)
        super().something_changed()

    # ------------------------------------------------------------ the scan

    def external_count(self) -> int:
        """vm_page_external_count: pages of external objects on the page queues."""
        return sum(1 for q in (self.vm.mem.active, self.vm.mem.inactive) for p in q
                   if p.object is not None and not p.object.internal)

    def free_clean_external(self, target: int) -> int:
        """vm_pageout_scan's first pass: free up to ``target`` clean inactive external
        pages, oldest first.  Returns how many were freed."""
        vm = self.vm
        freed = 0
        for p in vm.mem.inactive:
            if freed >= target:
                break
            obj = p.object
            if (obj is None or obj.internal or p.dirty or p.precious or p.absent
                    or p.busy or p.laundry or p.wire_count):
                continue
            vm_page_free(vm, p)
            freed += 1
        self.stats["freed_clean_external"] += freed
        return freed

    def scan(self):
        """vm_pageout_scan: clean external pages first when more than half of the
        shortage could come from them, then the classic scan (internal pages only)."""
        mem = self.vm.mem
        self.balance()
        current_target = self.free_target - mem.free_count
        freed = 0
        if current_target > 0:
            available = self.external_count() - self.external_limit
            if available > current_target // 2:
                freed = self.free_clean_external(min(current_target, available))
                if mem.free_count >= self.free_target:
                    return freed
        return freed + (yield from super().scan())

    def launder(self, page) -> bool:
        """Only internal pages are laundered: a dirty external page stays for its
        pager to write back (the advisory hint)."""
        if not page.object.internal:
            return False
        return super().launder(page)


VP.POLICIES["advisory"] = AdvisoryPageout
