"""The pageout daemon (GNU Mach vm/vm_pageout.c): how pages go back to their pager
(vm_pageout_setup, vm_pageout_page), and the daemon.  Its policy is the experiment; this
file holds the ``classic`` policy (GNU Mach as of 2011):

- free target 15 + free/80, free min 10 + free/100 (both plus the reserve), reserve 50;
- inactive target 2/3 of active + inactive;
- bursts of at most 10 pages, then a wait of 10 ms per page of the burst (75 ms when
  nothing is inactive);
- per inactive page: busy -> skip, referenced -> reactivate, clean and not precious ->
  free, else a one-page data_return to its pager (an anonymous object gets the default
  pager first, with memory_object_create); nothing bounds what is outstanding at external
  pagers.

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
from kernel.sched_prim import Sleep
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
BURST_MAX = 10
BURST_MIN = 5
BURST_WAIT = 0.010  # per page of a burst
EMPTY_WAIT = 0.075
STALL_RECHECK = 5.0  # seconds: a stalled daemon rescans at least this often anyway


def vm_pageout_setup(vm, run, move: bool):
    """vm_pageout_setup for the pages of one data_return: they go out in a new internal
    object (the laundry), moved out of their object when flushed, copied when the
    kernel keeps them.  They stay wired, counted as laundry, until the pager
    deallocates them.  None if no frame is left for a copy (the data still travels in
    the message)."""
    lobj = VMObject(len(run) * PAGE_SIZE, internal=True, label="laundry")
    mem = vm.mem
    for i, p in enumerate(run):
        if move:
            del p.object.resident[p.offset]
            q = p
            q.dirty = q.precious = False
            q.page_lock = q.unlock_request = 0
        else:
            q = vm_page_grab(vm, privileged=True)
            if q is None:
                for r in list(lobj.resident.values()):
                    vm_page_free(vm, r)
                return None
            mem.write(q, mem.data(p))
        vm_page_insert(q, lobj, i * PAGE_SIZE)
        q.laundry = True
        mem.vm_page_wire(q)
        if vm.pageout is not None:
            vm.pageout.laundry += 1
    vm.stats["laundered"] += len(run)
    vm.objects += 1
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
    name = "classic"

    def __init__(self, vm):
        self.vm = vm
        mem = vm.mem
        self.free_reserved = min(VM_PAGE_FREE_RESERVED, mem.npages // 8)
        free = mem.npages - self.free_reserved
        self.free_min = self.free_reserved + 10 + free // 100
        self.free_target = max(self.free_reserved + 15 + free // 80, self.free_min + 5)
        # Pages sent out and not yet released by their pager.  Freed at once here: the
        # data travels in the message, not in a frame the pager must deallocate.
        self.laundry = 0
        self.potentially_dirty = 0
        self.stats = {"scans": 0, "bursts": 0, "freed_clean": 0, "reactivated": 0,
                      "returned": 0, "no_default_pager": 0, "stalls": 0}
        # No default pager for dirty anonymous pages, nothing reclaimed: see stall().
        self.stalled = False
        self.changed = False
        self._blocked = False  # this scan met a page only a default pager could take

    # hooks the VM system calls
    def after_grab(self):
        mem = self.vm.mem
        if mem.free_count < self.free_min or (
                mem.free_count < self.free_target
                and len(mem.inactive) < self.inactive_target()):
            self.vm.k.sched.thread_wakeup(PAGEOUT_EVENT)

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

    def inactive_target(self) -> int:
        mem = self.vm.mem
        return (len(mem.active) + len(mem.inactive)) * 2 // 3

    def needed(self) -> bool:
        mem = self.vm.mem
        return mem.free_count < self.free_target

    def daemon(self):
        """vm_pageout_continue / vm_pageout_scan as a kernel thread."""
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
        seconds.  Threads already waiting for a free page are woken so that they wait
        with a bound from now on (vm_page_wait)."""
        self.stalled, self.changed = True, False
        self.stats["stalls"] += 1
        if self.stats["stalls"] == 1:
            log.warning("pageout stalled: no default pager for dirty anonymous pages",
                        free=self.vm.mem.free_count)
        self.vm.k.sched.thread_wakeup(FREE_EVENT)
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
        mem = self.vm.mem
        target = self.inactive_target()
        while len(mem.inactive) < target and mem.active:
            page = mem.active.first()
            mem.vm_page_deactivate(page)

    def scan(self):
        vm = self.vm
        mem = vm.mem
        self.balance()
        burst = freed = 0
        # Every inactive page at most once per scan: pages that cannot be laundered (no
        # default pager yet) go back to the active queue and must not be looked at again.
        budget = len(mem.inactive) + BURST_MAX
        while mem.free_count < self.free_target and burst < BURST_MAX:
            budget -= 1
            if budget < 0:
                yield Sleep(EMPTY_WAIT)
                return freed
            if not mem.inactive:
                self.balance()
                if not mem.inactive:
                    yield Sleep(EMPTY_WAIT)
                    return freed
            page = mem.inactive.first()
            if page.busy:
                mem.vm_page_activate(page)
                continue
            if page.referenced:
                page.referenced = False
                mem.vm_page_activate(page)
                self.stats["reactivated"] += 1
                continue
            if not (page.dirty or page.precious):
                vm_page_free(vm, page)
                self.stats["freed_clean"] += 1
                freed += 1
                continue
            if not self.launder(page):
                mem.vm_page_activate(page)
                continue
            burst += 1
        if burst:
            self.stats["bursts"] += 1
            yield Sleep(max(burst, BURST_MIN) * BURST_WAIT)
        return freed + burst

    def launder(self, page) -> bool:
        """Send a dirty or precious page to its pager (one page, or a run of contiguous
        dirty inactive pages when clustering is configured); the frame is freed."""
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
        if obj.internal:
            self.stats["returned_internal"] = self.stats.get("returned_internal", 0) + n
        return n > 0


POLICIES = {"classic": ClassicPageout}

# Policies in their own modules (built on ClassicPageout) add themselves to POLICIES
# when imported.
from kernel import vm_pageout_advisory, vm_pageout_modern, vm_pageout_throttle  # noqa: E402, F401
