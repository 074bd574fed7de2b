"""The pageout daemon (GNU Mach vm/vm_pageout.c).  Its policy is the experiment; this
file holds the ``classic`` policy (GNU Mach as of 2011):

- free target 15 + free/80, free min 10 + free/100 (both plus the reserve), reserve 50;
- inactive target 2/3 of active + inactive;
- bursts of at most 10 pages, then a wait of 10 ms per page of the burst (75 ms when
  nothing is inactive);
- per inactive page: busy -> skip, referenced -> reactivate, clean and not precious ->
  free, else a one-page data_return to its pager (an anonymous object gets the default
  pager first, with memory_object_create); nothing bounds what is outstanding at external
  pagers.
"""

from __future__ import annotations

from kernel import memory_object as MOK
from kernel.sched_prim import Sleep
from kernel.vm_init import PAGEOUT_EVENT
from protocol.vm_param import PAGE_SIZE

VM_PAGE_FREE_RESERVED = 50
BURST_MAX = 10
BURST_MIN = 5
BURST_WAIT = 0.010  # per page of a burst
EMPTY_WAIT = 0.075


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
                      "returned": 0, "no_default_pager": 0}

    # hooks the VM system calls
    def after_grab(self):
        mem = self.vm.mem
        if mem.free_count < self.free_min or (
                mem.free_count < self.free_target
                and len(mem.inactive) < self.inactive_target()):
            self.vm.k.sched.thread_wakeup(PAGEOUT_EVENT)

    def page_supplied(self, page, asked):
        pass

    def page_unlocked(self, page):
        pass

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
            yield from self.scan()

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
        burst = 0
        # Every inactive page at most once per scan: pages that cannot be laundered (no
        # default pager yet) go back to the active queue and must not be looked at again.
        budget = len(mem.inactive) + BURST_MAX
        while mem.free_count < self.free_target and burst < BURST_MAX:
            budget -= 1
            if budget < 0:
                yield Sleep(EMPTY_WAIT)
                return
            if not mem.inactive:
                self.balance()
                if not mem.inactive:
                    yield Sleep(EMPTY_WAIT)
                    return
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
                vm.page_free(page)
                self.stats["freed_clean"] += 1
                continue
            if not self.launder(page):
                mem.vm_page_activate(page)
                continue
            burst += 1
        if burst:
            self.stats["bursts"] += 1
            yield Sleep(max(burst, BURST_MIN) * BURST_WAIT)

    def launder(self, page) -> bool:
        """Send a dirty or precious page to its pager (one page, or a run of contiguous
        dirty inactive pages when clustering is configured); the frame is freed."""
        vm = self.vm
        obj = page.object
        if obj.pager is None:
            if vm.default_pager is None or not vm.default_pager.active:
                self.stats["no_default_pager"] += 1
                return False
            MOK.memory_object_create(vm.k, obj, vm.default_pager)
        cluster = max(1, vm.config.data_return_cluster)
        start = page.offset
        if cluster > 1:
            while (start - PAGE_SIZE) in obj.resident and page.offset - start < (cluster - 1) * PAGE_SIZE:
                q = obj.resident[start - PAGE_SIZE]
                if q.busy or q.absent or not (q.dirty or q.precious) or q.queue != page.queue:
                    break
                start -= PAGE_SIZE
        n = vm.return_pages(obj, start, cluster * PAGE_SIZE, flush=True, only_dirty=False,
                            cluster=cluster)
        vm.mem.stats["pageouts"] += n
        self.stats["returned"] += n
        if obj.internal:
            self.stats["returned_internal"] = self.stats.get("returned_internal", 0) + n
        return n > 0


POLICIES = {"classic": ClassicPageout}
