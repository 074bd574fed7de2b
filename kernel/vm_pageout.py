"""The pageout daemon (GNU Mach vm/vm_pageout.c): how pages go back to their pager
(vm_pageout_setup, vm_pageout_page), and the daemon.  Its policy is the experiment; this
file holds the ``classic`` policy, GNU Mach's vm_pageout.c at commit 6af53cb9 (2011):

- reserve 50 pages (below it only privileged allocations); free target 15 + free/80,
  free min 10 + free/100 (both plus the reserve, target at least min + 5), "free" being
  the pages after the reserve at boot; inactive target 2/3 of active + inactive;
- the laundry: a page sent to an INTERNAL object's pager (the default pager) is wired and
  counted in vm_page_laundry_count until the pager deallocates it; a page of an
  EXTERNAL object goes out in the new internal object active, pageable and uncounted —
  nothing bounds what is outstanding at external pagers.  If such a pager keeps the
  page, it can be paged out again, to the default pager (double paging);
- the scan (vm_pageout_scan), until free >= free target, vm_page_external_count <=
  VM_PAGE_EXTERNAL_TARGET and nobody waits for a page (vm_page_free_wanted == 0): per
  inactive page, busy -> back to the active queue (Mach leaves it off the queues),
  referenced -> reactivate, clean -> free, else a one-page data_return to its pager
  (an anonymous object gets the default pager first, with memory_object_create).  When
  pages are not wanted (only the external count is over its target) only external
  pages are looked at and clean ones go to the tail of the queue.  Below reserve - 25
  a dirty external page is double-paged at once, the external pager presumed wedged:
  the laundry bit puts its laundry page at the head of the inactive queue, and the scan
  sends it to the default pager next;
- the pause: when nothing is inactive, or the burst reached 10 pages, or the laundry 10
  pages, or free < reserve - 40 with laundry outstanding, for max(laundry, burst) x
  burst_wait ms (at least 75 when nothing is inactive); then vm_pageout_scan_continue
  adapts burst_wait (10 ms at boot): +1 ms when the laundry is still above 5, x 3/4
  (at least 1 ms) after 10 pauses without.  With only external pages going out the
  laundry stays 0 and burst_wait decays to 1 ms: the 2011 behaviour, and the storm's
  mechanism;
- VM_PAGE_EXTERNAL_LIMIT (free/2: vm_page_grab refuses unprivileged external grabs
  above it) and VM_PAGE_EXTERNAL_TARGET (free/4) act on vm_page_external_count, which
  2011 never maintained (it stays 0 unless the config's ``external_page_count`` is set;
  see kernel.vm_page).

Emulation: the scan looks at each page at most about once between pauses; when it has
nothing left to look at (every inactive page seen, or no external page while only
external pages are wanted) it pauses as when nothing is inactive — where Mach would spin.

When a scan reclaims nothing because dirty anonymous pages have no default pager to go
to, the daemon stalls (as vm_pageout's waits do): it sleeps until something changes — a
default pager registers, a page is freed, a clean page becomes reclaimable — rescanning
at most every STALL_RECHECK seconds; threads waiting for a free page meanwhile get
KERN_RESOURCE_SHORTAGE after page_wait_timeout (vm_page_wait).
"""

from __future__ import annotations

import time

import structlog

from kernel import memory_object_user as MOU
from kernel.ipc_right import PORT_SEND, release_right
from kernel.sched_prim import THREAD_RESTART, Sleep
from kernel.vm_object import VMObject, pages_of, vm_object_pager_create
from kernel.vm_page import (
    FREE_EVENT,
    PAGEOUT_EVENT,
    vm_page_free,
    vm_page_grab,
    vm_page_insert,
)
from protocol.vm_param import PAGE_SIZE

log = structlog.get_logger("kernel")

DATA_WRITE_MAX = 32  # pages in one data_return (memory_object.c)
VM_PAGE_FREE_RESERVED = 50
VM_PAGEOUT_BURST_MAX = 10  # pages
VM_PAGEOUT_BURST_MIN = 5  # pages
VM_PAGEOUT_BURST_WAIT = 10  # ms per page, at boot
VM_PAGEOUT_EMPTY_WAIT = 75  # ms
VM_PAGEOUT_PAUSE_MAX = 10  # pauses
STALL_RECHECK = 5.0  # seconds: a stalled daemon rescans at least this often anyway


def vm_pageout_reserved_internal(reserve: int) -> int:
    """VM_PAGEOUT_RESERVED_INTERNAL: below this many free pages a dirty external page
    is double-paged to the default pager."""
    return max(0, reserve - 25)


def vm_pageout_reserved_really(reserve: int) -> int:
    """VM_PAGEOUT_RESERVED_REALLY: below this many free pages the scan pauses while
    laundry is outstanding."""
    return max(0, reserve - 40)


def vm_pageout_setup(vm, run, move: bool):
    """vm_pageout_setup for the pages of one data_return: they go out in a new internal
    object (the laundry), moved out of their object when flushed, copied when the
    kernel keeps them.  Each page there is dirty; if it came from an internal object
    it is wired and counted in vm_page_laundry_count until the pager deallocates it,
    else it is active and pageable (a page the scan marked ``laundry`` goes to the head
    of the inactive queue instead, to be double-paged at once).  None if no frame is
    left for a copy (the data still travels in the message)."""
    old = run[0].object
    lobj = VMObject(len(run) * PAGE_SIZE, internal=True, label="laundry")
    mem = vm.mem
    pageout = vm.pageout
    for i, p in enumerate(run):
        if move:
            del p.object.resident[p.offset]
            q = p
            q.precious = False
            q.page_lock = q.unlock_request = 0
        else:
            q = vm_page_grab(vm, privileged=True)
            if q is None:
                for r in list(lobj.resident.values()):
                    vm_page_free(vm, r)
                return None
            mem.write(q, mem.data(p))
        q.dirty = True
        vm_page_insert(q, lobj, i * PAGE_SIZE)
        if q.laundry:
            q.laundry = False
            mem.vm_page_deactivate(q, first=True)
        elif old.internal:
            q.laundry = True
            mem.vm_page_wire(q)
            if pageout is not None:
                pageout.laundry += 1
        else:
            mem.vm_page_activate(q)
    vm.stats["laundered"] += len(run)
    vm.objects += 1
    if pageout is not None:
        pageout.laundry_sent(lobj, external=not old.internal)
    return lobj


def vm_pageout_pages(vm, obj, offset, size, flush: bool, only_dirty: bool,
                     cluster: int = DATA_WRITE_MAX) -> int:
    """vm_pageout_page for the dirty (and, unless only_dirty, precious) resident pages
    of a range (``size`` None: to the last page), contiguous pages batched into
    data_returns of up to ``cluster`` pages (as memory_object_lock_request's
    PAGEOUT_PAGES); flushed pages are freed, the others are cleaned.  Returns the
    number of pages sent."""
    if size is None:
        size = max([o for o in obj.resident] + [0]) + PAGE_SIZE
    return vm_pageout_page_list(vm, obj, list(pages_of(obj, offset, size)), flush,
                                only_dirty, cluster)


def vm_pageout_page_list(vm, obj, pages, flush: bool, only_dirty: bool,
                         cluster: int = DATA_WRITE_MAX) -> int:
    """vm_pageout_pages for a list of ``obj``'s resident pages in offset order."""
    mem = vm.mem
    run_off, run = None, []
    sent = 0

    def flush_run():
        nonlocal run_off, run, sent
        if run:
            data = b"".join(mem.read(p) for p in run)
            dirty = any(p.dirty for p in run)
            laundry = vm_pageout_setup(vm, run, move=flush)
            MOU.memory_object_data_return(vm.k, obj, run_off, data, dirty,
                                          kernel_copy=not flush, laundry=laundry)
            sent += len(run)
            if not flush:
                for p in run:
                    p.dirty = False
                    p.potentially_dirty = False
                    mem.vm_page_deactivate(p)
                if vm.pageout is not None:
                    vm.pageout.something_changed()  # clean pages to reclaim
        run_off, run = None, []

    for p in pages:
        if p.busy or p.absent or p.error:
            continue
        if not (p.dirty or (p.precious and not only_dirty)):
            continue
        if run and (p.offset != run_off + len(run) * PAGE_SIZE or len(run) >= cluster):
            flush_run()
        if not run:
            run_off = p.offset
        run.append(p)
    flush_run()
    return sent


class ClassicPageout:
    """The classic policy's state (vm_pageout.c's globals) and its daemon."""

    name = "classic"

    def __init__(self, vm):
        self.vm = vm
        mem = vm.mem
        self.free_reserved = min(VM_PAGE_FREE_RESERVED, mem.npages // 8)
        free = mem.npages - self.free_reserved
        self.free_min = self.free_reserved + 10 + free // 100
        self.free_target = max(self.free_reserved + 15 + free // 80, self.free_min + 5)
        self.external_limit = free // 2  # VM_PAGE_EXTERNAL_LIMIT
        self.external_target = free // 4  # VM_PAGE_EXTERNAL_TARGET
        self.reserved_internal = vm_pageout_reserved_internal(self.free_reserved)
        self.reserved_really = vm_pageout_reserved_really(self.free_reserved)
        self.burst_max = VM_PAGEOUT_BURST_MAX
        self.burst_min = VM_PAGEOUT_BURST_MIN
        self.burst_wait = VM_PAGEOUT_BURST_WAIT  # ms per page, adapted after each pause
        self.empty_wait = VM_PAGEOUT_EMPTY_WAIT
        self.pause_max = VM_PAGEOUT_PAUSE_MAX
        self.pause_count = 0
        self.last_pause_ms = 0
        self.laundry = 0  # vm_page_laundry_count: internal pages at the default pager
        self.laundry_external = 0  # pages of live laundry objects from external objects
        self.returns_in_flight = 0  # data_returns whose laundry the pager still holds
        self._laundry_objects: dict[int, int] = {}  # live laundry object id -> external pages
        self.potentially_dirty = 0
        self.stats = {"scans": 0, "bursts": 0, "pauses": 0, "freed_clean": 0,
                      "reactivated": 0, "returned": 0, "evictions": 0, "double_paged": 0,
                      "cleaned_external": 0, "no_default_pager": 0, "stalls": 0}
        # No default pager for dirty anonymous pages, nothing reclaimed: see stall().
        self.stalled = False
        self.changed = False
        self._blocked = False  # this scan met a page only a default pager could take

    # hooks the VM system calls
    def grab_allowed(self, privileged: bool, external: bool) -> bool:
        """vm_page_grab's test: may this allocation take a free frame?  Only privileged
        threads (pageout, the default pager) dip into the reserve or take an external
        page while vm_page_external_count is above VM_PAGE_EXTERNAL_LIMIT."""
        if privileged:
            return True
        mem = self.vm.mem
        if mem.free_count < self.free_reserved:
            return False
        return not (external and mem.external_count > self.external_limit)

    def after_grab(self):
        """vm_page_grab's wakeup of the daemon: below free min, or below the free target
        with fewer inactive pages than the inactive target."""
        mem = self.vm.mem
        if mem.free_count < self.free_min or (
                mem.free_count < self.free_target
                and len(mem.inactive) < self.inactive_target()):
            self.vm.k.sched.thread_wakeup(PAGEOUT_EVENT)

    def laundry_sent(self, lobj, external: bool):
        """vm_pageout_setup made ``lobj`` for a data_return: in flight until the pager
        releases it (laundry_released)."""
        n = len(lobj.resident) if external else 0
        self._laundry_objects[lobj.id] = n
        self.laundry_external += n
        self.returns_in_flight += 1

    def laundry_released(self, obj):
        """vm_object_terminate of any object: if it was a data_return's laundry, the
        pager has let it go."""
        n = self._laundry_objects.pop(obj.id, None)
        if n is not None:
            self.laundry_external -= n
            self.returns_in_flight -= 1

    def page_supplied(self, page, asked):
        self.something_changed()

    def something_changed(self):
        """A page was freed or became reclaimable: a stalled daemon looks again."""
        if self.stalled:
            self.changed = True
            self.vm.k.sched.thread_wakeup(PAGEOUT_EVENT)

    def default_pager_ready(self) -> bool:
        """Is there a live default pager?  A dead one is forgotten (the kernel's send
        right released), so that the next vm_set_default_memory_manager hands back no
        right rather than a dead name."""
        vm = self.vm
        dp = vm.default_pager
        if dp is None:
            return False
        if dp.active:
            return True
        vm.default_pager = None
        release_right(vm.k, dp, PORT_SEND)
        vm.stats["default_pager_died"] += 1
        log.warning("default pager gone")
        return False

    def page_unlocked(self, page):
        pass

    def page_released(self, page):
        """vm_page_free of ``page`` (its frame is going back): nothing under classic
        (see ModernPageout)."""

    def dirty_pause(self, obj, page) -> float:
        """A write fault is about to dirty clean ``page``: seconds the faulting thread
        must sleep first.  0 under classic (see ThrottlePageout)."""
        return 0.0

    def too_dirty(self, obj) -> bool:
        """Must a write fault on a write-locked page of ``obj`` wait before its
        data_unlock?  Never under classic (see kernel.vm_pageout_advisory)."""
        return False

    def write_unlock(self, page) -> int:
        """A write fault sends data_unlock for ``page``: the unlock's length."""
        return PAGE_SIZE

    # ------------------------------------------------------------ counters

    def statistics(self) -> dict:
        """The policy's counters for vm_statistics (subclasses extend them).  Counters
        a policy does not keep (the advisory's dirty sleeps, the modern one's paused
        allocations) are 0, or what a subclass keeps under that name in ``stats``."""
        mem = self.vm.mem
        st = self.stats
        return {
            "policy": self.name, "free_reserved": self.free_reserved,
            "free_min": self.free_min, "free_target": self.free_target,
            "external_limit": self.external_limit, "external_target": self.external_target,
            "laundry_count": self.laundry, "laundry_internal": self.laundry,
            "laundry_external": self.laundry_external,
            "returns_in_flight": self.returns_in_flight,
            "external_count": mem.external_count, "free_wanted": mem.free_wanted,
            "burst_wait_ms": self.burst_wait, "pauses": st["pauses"],
            "evictions": st["evictions"], "double_paged": st["double_paged"],
            "potentially_dirty": self.potentially_dirty,
            "paused_allocations": st.get("paused_allocations", 0),
            "dirty_sleeping": st.get("dirty_sleeping", 0),
            "dirty_sleeps": st.get("dirty_sleeps", 0),
            "dirty_sleep_seconds": st.get("dirty_sleep_seconds", 0.0),
            "unlock_hints": st.get("unlock_hints", 0),
        }

    # ------------------------------------------------------------ the daemon

    def inactive_target(self) -> int:
        """VM_PAGE_INACTIVE_TARGET: 2/3 of active + inactive."""
        mem = self.vm.mem
        return (len(mem.active) + len(mem.inactive)) * 2 // 3

    def done(self) -> bool:
        """vm_pageout_scan's end: free pages at the target, external pages at theirs,
        and nobody waiting for a page."""
        mem = self.vm.mem
        return (mem.free_count >= self.free_target
                and mem.external_count <= self.external_target and mem.free_wanted == 0)

    def needed(self) -> bool:
        return not self.done()

    def daemon(self):
        """vm_pageout_continue as a kernel thread: scan while needed, sleep until woken
        (vm_page_grab, vm_page_wait) or for at most half a second."""
        while True:
            if not self.needed():
                yield Sleep(0.5, PAGEOUT_EVENT)
                continue
            self.stats["scans"] += 1
            self._blocked = False
            progress = yield from self.scan()
            if (not progress and self._blocked and self.needed()
                    and not self.default_pager_ready()):
                yield from self.stall()

    def stall(self):
        """Nothing reclaimable and no default pager: sleep until a default pager
        registers (vm_set_default_memory_manager wakes PAGEOUT_EVENT) or a page is
        freed or becomes reclaimable (something_changed), at most STALL_RECHECK
        seconds.  Threads already waiting for a free page are woken (THREAD_RESTART) so
        that they wait with a bound from now on (vm_page_wait)."""
        self.stalled, self.changed = True, False
        self.stats["stalls"] += 1
        if self.stats["stalls"] == 1:
            log.warning("pageout stalled: no default pager for dirty anonymous pages",
                        free=self.vm.mem.free_count)
        self.vm.k.sched.thread_wakeup_prim(FREE_EVENT, result=THREAD_RESTART)
        deadline = time.monotonic() + STALL_RECHECK
        try:
            while not (self.changed or self.default_pager_ready()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                yield Sleep(left, PAGEOUT_EVENT)
        finally:
            self.stalled = False

    def balance(self):
        """Move pages from the head of the active queue to the inactive queue up to the
        inactive target."""
        mem = self.vm.mem
        target = self.inactive_target()
        while len(mem.inactive) < target and mem.active:
            page = mem.active.first()
            mem.vm_page_deactivate(page)

    def pause_ms(self, burst: int, empty: bool) -> int:
        """The pause's length: max(laundry, burst) x burst_wait ms, at least
        empty_wait when nothing is inactive."""
        msecs = max(self.laundry, burst) * self.burst_wait
        if empty and msecs < self.empty_wait:
            msecs = self.empty_wait
        return msecs

    def must_pause(self, burst: int, empty: bool) -> bool:
        """vm_pageout_scan's pause test: nothing inactive; flow control (the burst or
        the laundry at burst max); or memory so low that sending pages out could use
        it up while the default pager has work."""
        return (empty or burst >= self.burst_max or self.laundry >= self.burst_max
                or (self.vm.mem.free_count < self.reserved_really and self.laundry > 0))

    def pause(self, burst: int, empty: bool):
        """Generator: the pause (a timed sleep nothing cuts short), then
        vm_pageout_scan_continue."""
        msecs = self.pause_ms(burst, empty)
        self.last_pause_ms = msecs
        self.stats["pauses"] += 1
        if burst:
            self.stats["bursts"] += 1
        yield Sleep(msecs / 1000.0)
        self.scan_continue()

    def scan_continue(self):
        """vm_pageout_scan_continue: laundry still above burst min means the pause was
        too short (+1 ms a page); pause_max pauses without that, it may be too long
        (x 3/4, at least 1 ms)."""
        if self.laundry > self.burst_min:
            self.burst_wait += 1
            self.pause_count = 0
        else:
            self.pause_count += 1
            if self.pause_count > self.pause_max:
                self.burst_wait = max(1, self.burst_wait * 3 // 4)
                self.pause_count = 0

    def first_external(self):
        """The oldest inactive page of an external object (vm_page.external), or None."""
        for p in self.vm.mem.inactive:
            if p.external:
                return p
        return None

    def scan(self):
        """vm_pageout_scan, up to its first pause (the next scan starts afresh, as the
        pause's continuation does).  Returns the pages freed plus data_returns sent."""
        vm = self.vm
        mem = vm.mem
        burst = freed = 0
        budget = len(mem.active) + len(mem.inactive) + self.burst_max
        while True:
            self.balance()
            if self.done():
                return freed + burst
            free = mem.free_count
            want_pages = free < self.free_target or mem.free_wanted > 0
            page = None
            if mem.inactive and budget > 0:
                page = mem.inactive.first() if want_pages else self.first_external()
            if self.must_pause(burst, page is None):
                yield from self.pause(burst, page is None)
                return freed + burst
            budget -= 1
            verdict = self.scan_page(page, want_pages, free)
            if verdict == "freed":
                freed += 1
            elif verdict == "sent":
                burst += 1

    def scan_page(self, page, want_pages: bool, free: int) -> str | None:
        """One inactive page of vm_pageout_scan: "freed", "sent" (a data_return), or
        None (reactivated, skipped, requeued)."""
        vm = self.vm
        mem = vm.mem
        st = self.stats
        if page.busy:
            mem.vm_page_activate(page)
            return None
        if page.referenced:
            page.referenced = False
            mem.vm_page_activate(page)
            st["reactivated"] += 1
            return None
        if page.external:
            # Dirty external pages count against the external limit, clean ones do not.
            if page.dirty and not page.extcounted:
                page.extcounted = True
                mem.external_count += 1
            elif not page.dirty and page.extcounted:
                page.extcounted = False
                mem.external_count -= 1
        if not want_pages and not page.dirty:
            mem.inactive.remove(page)
            mem.inactive.append(page)
            st["cleaned_external"] += 1
            return None
        if not (page.dirty or page.precious):
            vm_page_free(vm, page)
            st["freed_clean"] += 1
            st["evictions"] += 1
            return "freed"
        obj = page.object
        double = free < self.reserved_internal and not obj.internal
        if double:
            page.laundry = True  # vm_pageout_setup: to the head of inactive, again
        if not self.launder(page):
            page.laundry = False
            mem.vm_page_activate(page)
            return None
        if double:
            st["double_paged"] += 1
        return "sent"

    def launder(self, page) -> bool:
        """vm_pageout_page for a dirty or precious inactive page: one data_return of it
        (or of a run of contiguous dirty inactive pages when clustering is configured)
        to its pager, creating the default pager's object for an anonymous one first;
        the pages move to the laundry (vm_pageout_setup).  False if there is no pager to
        send it to."""
        vm = self.vm
        obj = page.object
        if obj.pager is None:
            if not self.default_pager_ready():
                self.stats["no_default_pager"] += 1
                self._blocked = True
                return False
            vm_object_pager_create(vm, obj, vm.default_pager)
        cluster = max(1, vm.config.data_return_cluster)
        start = page.offset
        if cluster > 1:
            while (start - PAGE_SIZE) in obj.resident and page.offset - start < (cluster - 1) * PAGE_SIZE:
                q = obj.resident[start - PAGE_SIZE]
                if q.busy or q.absent or not (q.dirty or q.precious) or q.queue != page.queue:
                    break
                start -= PAGE_SIZE
        n = vm_pageout_pages(vm, obj, start, cluster * PAGE_SIZE, flush=True,
                             only_dirty=False, cluster=cluster)
        vm.mem.stats["pageouts"] += n
        self.stats["returned"] += n
        self.stats["evictions"] += n
        if obj.internal:
            self.stats["returned_internal"] = self.stats.get("returned_internal", 0) + n
        return n > 0


POLICIES = {"classic": ClassicPageout}

# Policies in their own modules (built on ClassicPageout) add themselves to POLICIES
# when imported.
from kernel import vm_pageout_advisory, vm_pageout_modern, vm_pageout_throttle  # noqa: E402, F401
