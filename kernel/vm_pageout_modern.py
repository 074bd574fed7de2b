"""The ``modern`` pageout policy: GNU Mach since 1.8 (5d125845, 2016, "Rework pageout to
handle multiple segments": vm/vm_page.c, vm/vm_pageout.c), with the external laundry
count of a5ab72bc and the object cache of 98d64d1a (2013).  Memory is one segment here.

- Thresholds (vm_page_seg_compute_pageout_thresholds): min / low / high free pages are
  5 / 6 / 10 % of physical memory, at least 500 / 600 / 1,000.  GNU Mach refuses a
  segment of fewer than VM_PAGE_SEG_MIN_PAGES = 2,000 pages, of which those minimums are
  25 / 30 / 50 %; this kernel allows 64 pages, so below 2,000 pages the minimums shrink
  in proportion — 25 / 30 / 50 % of memory (256 / 307 / 512 of 1,024 pages) — and
  min < low < high always holds.
- Allocation (vm_page_seg_alloc_from_buddy, ``grab_allowed``): at or below low it starts
  the daemon (vm_pageout_start); at or below min an unprivileged allocation fails and
  pauses allocation (vm_page_alloc_paused), as does any allocation that leaves fewer
  than min free; while paused every unprivileged allocation fails, until the daemon
  finds free >= high (vm_page_check_usable) and wakes the threads in vm_page_wait.
- The daemon (vm_pageout, vm_pageout_scan): done when allocation is usable (free >= high,
  or nothing is pageable).  Else it refills the inactive queue so that at most a third of
  the pageable pages stay active (vm_page_refill_inactive: external pages first,
  reference bits cleared), then evicts (vm_page_evict): nothing while
  VM_PAGE_MAX_LAUNDRY = 5 pages are at the default pager (checked once, before the
  round: a round that starts with 4 there may add 5, so at most 9 are); else up to
  VM_PAGE_MAX_EVICTIONS = 5 attempts, each taking the oldest movable page of the
  inactive external, inactive internal, active external, active internal pages, in that
  order (internal ones only with a live default pager; a referenced inactive page is
  reactivated instead); a clean page is freed, a dirty or precious one goes to its pager.
  Then it waits for vm_pageout_resume — the default pager's laundry or the external
  laundry count reaching 0 — at most VM_PAGEOUT_TIMEOUT = 50 ms; it rescans at once when
  only clean pages were freed.
- The external laundry count (vm_page_external_laundry_count, a5ab72bc): pages sent to
  external pagers in this eviction round and not yet released; 0 at the start of each
  round, -1 (nobody waits for it) once allocation is usable.
- The object cache (98d64d1a): an object whose pager allows caching is cached at zero
  references if it has resident pages, with no count limit (object_cache_max is ignored)
  and its pages left as they are (deactivate_on_cache is ignored); an object without
  resident pages is terminated; a cached object emptied by an eviction is collected
  (vm_object_collect).

Departures: the laundry counted here is the daemon's own (GNU Mach counts every
vm_pageout_setup, lock_request returns and terminations included), since
kernel.vm_pageout's vm_pageout_setup does not tell a policy where a page came from.  A
dirty external page is not double-paged to the default pager while allocation is paused
(vm_page_evict_one's double_paging): it goes to its own pager.  When a round evicts
nothing and none of the daemon's pages are in the laundry ("unable to recycle any page",
after which GNU Mach's waiters wait forever) the daemon stalls as classic's does: page
waits become bounded by config.page_wait_timeout.
"""

from __future__ import annotations

import time

import structlog

from kernel import vm_pageout as VP
from kernel.sched_prim import Sleep
from kernel.vm_object import vm_object_pager_create, vm_object_terminate
from kernel.vm_page import FREE_EVENT, PAGEOUT_EVENT, vm_page_free
from protocol.vm_param import PAGE_SIZE

log = structlog.get_logger("kernel")

VM_PAGE_SEG_THRESHOLD_MIN_NUM = 5  # percent
VM_PAGE_SEG_THRESHOLD_MIN = 500
VM_PAGE_SEG_THRESHOLD_LOW_NUM = 6
VM_PAGE_SEG_THRESHOLD_LOW = 600
VM_PAGE_SEG_THRESHOLD_HIGH_NUM = 10
VM_PAGE_SEG_THRESHOLD_HIGH = 1000
VM_PAGE_SEG_MIN_PAGES = 2000
VM_PAGE_HIGH_ACTIVE_PAGE_DENOM = 3  # active pages kept to a third
VM_PAGE_MAX_LAUNDRY = 5
VM_PAGE_MAX_EVICTIONS = 5
VM_PAGEOUT_TIMEOUT = 0.050  # seconds
CONTINUE_EVENT = "vm_pageout_continue"  # what vm_pageout_resume wakes


def vm_page_seg_compute_pageout_thresholds(npages: int) -> tuple[int, int, int]:
    """vm_page_seg_compute_pageout_thresholds for a segment of ``npages``: (min, low,
    high) free pages.  Below VM_PAGE_SEG_MIN_PAGES the minimums are scaled down with the
    segment (GNU Mach panics there instead)."""
    scale = min(npages, VM_PAGE_SEG_MIN_PAGES)

    def threshold(percent: int, minimum: int) -> int:
        return max(npages * percent // 100, minimum * scale // VM_PAGE_SEG_MIN_PAGES)

    min_free = threshold(VM_PAGE_SEG_THRESHOLD_MIN_NUM, VM_PAGE_SEG_THRESHOLD_MIN)
    low = max(threshold(VM_PAGE_SEG_THRESHOLD_LOW_NUM, VM_PAGE_SEG_THRESHOLD_LOW), min_free + 1)
    high = max(threshold(VM_PAGE_SEG_THRESHOLD_HIGH_NUM, VM_PAGE_SEG_THRESHOLD_HIGH), low + 1)
    return min_free, low, high


def _movable(page) -> bool:
    """vm_page_can_move: a queued page the daemon may take now."""
    obj = page.object
    return (obj is not None and obj.alive and not page.busy and not page.wanted
            and not page.absent)


class ModernPageout(VP.ClassicPageout):
    """GNU Mach >= 1.8's pageout (see the module docstring)."""

    name = "modern"

    def __init__(self, vm):
        super().__init__(vm)
        self.min_free, self.low_free, self.high_free = \
            vm_page_seg_compute_pageout_thresholds(vm.mem.npages)
        # What vm_page_grab keeps from unprivileged allocations and what vm_page_free
        # compares with before waking vm_page_wait's sleepers: min, and all of memory
        # while allocation is paused (they sleep until it resumes, as on
        # &vm_page_alloc_paused).
        self.free_reserved = self.min_free
        self.free_min, self.free_target = self.min_free, self.high_free
        self.alloc_paused = False  # vm_page_alloc_paused
        self._paused_since = 0.0
        self.external_laundry_count = -1  # vm_page_external_laundry_count
        self._laundry: dict = {}  # page -> its object was internal: the daemon's laundry
        self.laundry_internal = 0  # of those, pages at the default pager
        self.daemon_laundry_external = 0  # and at external pagers (classic's laundry_external
        # counts every data_return's laundry, lock_request's too)
        self._exhausted: set = set()  # (external, active) pulls that found nothing this round
        self._resumed = False
        self._warned = False
        cache = vm.cache  # the 2013 object cache
        cache.max_objects = None
        cache.keep_empty = False
        cache.deactivate = False
        self.stats.update({
            "min_free": self.min_free, "low_free": self.low_free,
            "high_free": self.high_free, "rounds": 0, "evictions": 0, "refilled": 0,
            "laundry_internal": 0, "laundry_external": 0, "laundry_internal_peak": 0,
            "laundry_external_peak": 0, "laundry_pauses": 0, "paused_allocations": 0,
            "alloc_paused": False, "alloc_pauses": 0, "alloc_paused_seconds": 0.0,
            "returned_internal": 0, "daemon_timeouts": 0, "laundry_resumes": 0,
            "cached_objects": 0, "cache_collected": 0})

    # ------------------------------------------------------------ allocation

    def grab_allowed(self, privileged: bool, external: bool = False) -> bool:
        """vm_page_seg_alloc_from_buddy's checks before vm_page_grab takes a frame: False
        while allocation is paused, or when free is at or below min (which pauses it),
        for an unprivileged allocation; at or below low the daemon is started.
        ``external`` (the page is for an external object) does not matter here."""
        if self.alloc_paused and not privileged:
            self.stats["paused_allocations"] += 1
            return False
        free = self.vm.mem.free_count
        if free <= self.low_free:
            self.vm_pageout_start()
            if free <= self.min_free and not privileged:
                self._pause()
                self.stats["paused_allocations"] += 1
                return False
        return True

    def after_grab(self):
        """An allocation that leaves fewer than min pages free pauses allocation; at or
        below low the daemon is started."""
        free = self.vm.mem.free_count
        if free < self.min_free:
            self._pause()
        if free <= self.low_free:
            self.vm_pageout_start()

    def vm_pageout_start(self):
        """vm_pageout_start: wake the daemon sleeping on vm_pageout_requested."""
        self.vm.k.sched.thread_wakeup(PAGEOUT_EVENT)

    def _pause(self):
        if self.alloc_paused:
            return
        self.alloc_paused = True
        self.free_reserved = self.vm.mem.npages
        self._paused_since = time.monotonic()
        self.stats["alloc_paused"] = True
        self.stats["alloc_pauses"] += 1

    def vm_page_check_usable(self) -> bool:
        """vm_page_check_usable: is the segment usable for unprivileged allocations
        (free >= high, or no pageable page at all)?  If so the external laundry count
        stops being kept (-1), a paused allocation resumes and its sleepers are woken."""
        mem = self.vm.mem
        if (len(mem.active) or len(mem.inactive)) and mem.free_count < self.high_free:
            return False
        self.external_laundry_count = -1
        if self.alloc_paused:
            self.alloc_paused = False
            self.free_reserved = self.min_free
            st = self.stats
            st["alloc_paused"] = False
            st["alloc_paused_seconds"] += time.monotonic() - self._paused_since
            self.vm.k.sched.thread_wakeup(FREE_EVENT)
        return True

    # ------------------------------------------------------------ laundry

    def _launder_track(self, page, internal: bool):
        """vm_pageout_setup's laundry accounting for a page the daemon sent."""
        self._laundry[page] = internal
        st = self.stats
        if internal:
            self.laundry_internal += 1
            st["laundry_internal"] = self.laundry_internal
            st["laundry_internal_peak"] = max(st["laundry_internal_peak"], self.laundry_internal)
        else:
            self.daemon_laundry_external += 1
            if self.external_laundry_count >= 0:
                self.external_laundry_count += 1
            st["laundry_external"] = self.daemon_laundry_external
            st["laundry_external_peak"] = max(st["laundry_external_peak"], self.daemon_laundry_external)

    def page_released(self, page):
        """vm_page_release's laundry accounting (vm_page_free calls it): a page of the
        daemon's laundry is back; the default pager's laundry or the external laundry
        count reaching 0 resumes the daemon (vm_pageout_resume)."""
        internal = self._laundry.pop(page, None)
        if internal is None:
            return
        st = self.stats
        if internal:
            self.laundry_internal -= 1
            st["laundry_internal"] = self.laundry_internal
            if self.laundry_internal == 0:
                self.vm_pageout_resume()
            return
        self.daemon_laundry_external -= 1
        st["laundry_external"] = self.daemon_laundry_external
        if self.external_laundry_count > 0:
            self.external_laundry_count -= 1
            if self.external_laundry_count == 0:
                self.vm_pageout_resume()

    def vm_pageout_resume(self):
        """vm_pageout_resume: wake the daemon waiting for its laundry."""
        self._resumed = True
        self.vm.k.sched.thread_wakeup(CONTINUE_EVENT)

    # ------------------------------------------------------------ the queues

    def vm_page_refill_inactive(self) -> int:
        """vm_page_refill_inactive: move the oldest movable active pages, external ones
        first, to the inactive queue (clearing their reference bit) until at most a third
        of the active and inactive pages are active.  Returns the pages moved."""
        mem = self.vm.mem
        high_active = (len(mem.active) + len(mem.inactive)) // VM_PAGE_HIGH_ACTIVE_PAGE_DENOM
        excess = len(mem.active) - high_active
        moved = 0
        for external in (True, False):
            if moved >= excess:
                break
            for p in mem.active:
                if moved >= excess:
                    break
                if p.object is None or p.object.internal == external or not _movable(p):
                    continue
                mem.vm_page_deactivate(p)
                moved += 1
        self.stats["refilled"] += moved
        return moved

    def _pull(self, external: bool, active: bool):
        """vm_page_pull_active_page / vm_page_pull_inactive_page: the oldest movable page
        of that kind on that queue, or None.  Pages of the kind that cannot move go to
        the tail of their queue, as in GNU Mach."""
        key = (external, active)
        if key in self._exhausted:
            return None
        mem = self.vm.mem
        queue = mem.active if active else mem.inactive
        stuck, found = [], None
        for p in queue:
            obj = p.object
            if obj is None or obj.internal == external:
                continue
            if _movable(p):
                found = p
                break
            stuck.append(p)
        for p in stuck:
            queue.remove(p)
            queue.append(p)
        if found is None:
            self._exhausted.add(key)
        return found

    # ------------------------------------------------------------ eviction

    def vm_page_evict_one(self, external: bool, active: bool) -> bool:
        """vm_page_evict_one: evict the oldest page of one kind (external or internal)
        from one queue.  Internal pages need a live default pager.  A referenced inactive
        page is reactivated and the next one tried; a clean page is freed, a dirty or
        precious one flushed to its pager.  Returns whether a page was evicted."""
        if not external and not self.default_pager_ready():
            return False
        vm = self.vm
        mem = vm.mem
        while True:
            page = self._pull(external, active)
            if page is None:
                return False
            if not active and page.referenced:
                mem.vm_page_activate(page)
                self._exhausted.discard((external, True))
                self.stats["reactivated"] += 1
                continue
            obj = page.object
            if (page.dirty or page.precious) and not page.error:
                self.vm_pageout_page(page)
            else:  # clean, or in error: vm_pageout_page would free it too
                vm_page_free(vm, page)
                self.stats["freed_clean"] += 1
            self.vm_object_collect(obj)
            return True

    def vm_pageout_page(self, page):
        """vm_pageout_page(page, initial = FALSE, flush = TRUE): ``page`` goes to its pager
        (an anonymous object is first given to the default pager, vm_object_pager_create)
        in one data_return, with the contiguous dirty pages after it when
        data_return_cluster allows; the pages sent are the daemon's laundry until their
        pager releases them."""
        vm = self.vm
        obj = page.object
        if obj.pager is None:
            vm_object_pager_create(vm, obj, vm.default_pager)
        run = [page]
        cluster = max(1, vm.config.data_return_cluster)
        while len(run) < cluster:
            q = obj.resident.get(page.offset + len(run) * PAGE_SIZE)
            if q is None or q.busy or q.absent or q.error or not (q.dirty or q.precious):
                break
            run.append(q)
        n = VP.vm_pageout_page_list(vm, obj, run, flush=True, only_dirty=False,
                                    cluster=cluster)
        vm.mem.stats["pageouts"] += n
        self.stats["returned"] += n
        if obj.internal:
            self.stats["returned_internal"] += n
        for p in run:
            if p.object is not None and p.object is not obj:  # in its laundry object
                self._launder_track(p, obj.internal)

    def vm_object_collect(self, obj):
        """vm_object_collect: a cached object left without resident pages is
        terminated."""
        if obj.cached and obj.alive and obj.ref_count == 0 and not obj.resident:
            vm = self.vm
            vm.cache.remove(obj)
            vm_object_terminate(vm, obj)
            self.stats["cache_collected"] += 1

    def vm_page_evict_once(self) -> bool:
        """vm_page_evict_once: inactive before active pages, external before internal."""
        return (self.vm_page_evict_one(True, False) or self.vm_page_evict_one(False, False)
                or self.vm_page_evict_one(True, True) or self.vm_page_evict_one(False, True))

    def vm_page_evict(self) -> tuple[bool, bool]:
        """vm_page_evict: one round of at most VM_PAGE_MAX_EVICTIONS evictions, none while
        VM_PAGE_MAX_LAUNDRY pages are at the default pager.  Returns (done,
        should_wait): done when allocation is usable again; should_wait unless clean
        pages were freed and nothing went to the laundry (then rescan at once)."""
        st = self.stats
        st["rounds"] += 1
        self.external_laundry_count = 0
        if self.laundry_internal >= VM_PAGE_MAX_LAUNDRY:
            st["laundry_pauses"] += 1
            return False, True
        self._exhausted = set()
        evicted = any_evicted = False
        for _ in range(VM_PAGE_MAX_EVICTIONS):
            evicted = self.vm_page_evict_once()
            if not evicted:
                break
            any_evicted = True
            st["evictions"] += 1
        if self.laundry_internal == 0 and self.external_laundry_count == 0 and evicted:
            self.stalled = False
            return False, False
        if any_evicted or self._laundry:
            self.stalled = False
        elif not self.stalled:
            self._unable_to_recycle()
        return self.vm_page_check_usable(), True

    def _unable_to_recycle(self):
        """Nothing evicted, nothing in the laundry ("unable to recycle any page"): stall,
        so that page waits are bounded from now on (vm_page_wait); the sleepers are
        woken to wait again with that bound."""
        self.stalled = True
        self.stats["stalls"] += 1
        mem = self.vm.mem
        if not self._warned:
            self._warned = True
            log.warning("pageout: unable to recycle any page", free=mem.free_count,
                        active=len(mem.active), inactive=len(mem.inactive),
                        default_pager=self.vm.default_pager is not None)
        self.vm.k.sched.thread_wakeup(FREE_EVENT)

    # ------------------------------------------------------------ the daemon

    def vm_pageout_scan(self) -> tuple[bool, bool]:
        """vm_pageout_scan: (done, should_wait) — done at once when allocation is usable
        (vm_page_balance has one segment to look at), else refill the inactive queue
        and evict."""
        self.stats["scans"] += 1
        self.stats["cached_objects"] = len(self.vm.cache)
        if self.vm_page_check_usable():
            return True, False
        self.vm_page_refill_inactive()
        return self.vm_page_evict()

    def daemon(self):
        """vm_pageout as a kernel thread: scan; when done, sleep until an allocation
        starts the daemon again; else wait for vm_pageout_resume at most
        VM_PAGEOUT_TIMEOUT, or (clean pages freed) scan again after letting the kernel's
        loop run."""
        while True:
            done, should_wait = self.vm_pageout_scan()
            if done:
                self.stalled = False
                yield PAGEOUT_EVENT  # thread_sleep(&vm_pageout_requested)
            elif should_wait:
                yield from self.vm_pageout_wait()
            else:
                yield Sleep(0)

    def vm_pageout_wait(self):
        """The daemon's wait on vm_pageout_continue with a VM_PAGEOUT_TIMEOUT timeout;
        counts whether the laundry resumed it or the timeout did."""
        self._resumed = False
        yield Sleep(VM_PAGEOUT_TIMEOUT, CONTINUE_EVENT)
        self.stats["laundry_resumes" if self._resumed else "daemon_timeouts"] += 1

    # ------------------------------------------------------------ counters

    def statistics(self) -> dict:
        """The policy's counters as vm_statistics reports them: the classic ones, the
        thresholds, laundry (the daemon's, internal and external, now and at peak),
        paused allocations (refused, episodes, seconds, paused now), eviction rounds and
        evictions, the daemon's timeouts and laundry resumes, the object cache."""
        s = {**super().statistics(), **self.stats}
        s["cached_objects"] = len(self.vm.cache)
        if self.alloc_paused:
            s["alloc_paused_seconds"] += time.monotonic() - self._paused_since
        return s


VP.POLICIES["modern"] = ModernPageout
