"""Physical memory: page frames holding real bytes, the page queues, and the resident
page routines (GNU Mach vm/vm_page.h, vm/vm_page.c, vm/vm_resident.c).

Frames live in one anonymous mapping (untouched frames cost no RSS).  A page is on at most
one of the free, active and inactive queues: the active and inactive queues are doubly
linked through the pages themselves (``pageq``, as in Mach: O(1) insert, remove and
take-oldest, no memory beyond two links a page); the free queue is a deque.  Wired pages
and pages in transit are on none.

``VMResident`` is the machine's memory and vm_resident.c's counters
(``vm_page_free_wanted``, ``vm_page_external_count``); ``vm_page_grab``,
``vm_page_free``, ``vm_page_wait`` and the other vm_page_* functions take the VM system
(``kernel.vm_init``) first, for the pageout policy's reserve and hooks and the kernel's
scheduler.

``vm_page_external_count`` is kept as GNU Mach kept it in 2011: not at all (it stays 0,
so the external limit and target never act) unless ``external_page_count`` is set in
the kernel config; then a page grabbed for an external object is counted
(``extcounted``) until it is freed or the pageout scan finds it clean, and counted again
when the scan finds it dirty (vm_resident.c and vm_pageout.c at 6af53cb9).
"""

from __future__ import annotations

import mmap
import time
from collections import deque

from kernel.sched_prim import THREAD_AWAKENED, Sleep
from protocol.defs.mach import VM_PROT_ALL
from protocol.kern_return import KernReturn, MachError
from protocol.vm_param import PAGE_SIZE

Q_NONE, Q_FREE, Q_ACTIVE, Q_INACTIVE = 0, 1, 2, 3

FREE_EVENT = "vm_page_free_count"  # what vm_page_wait sleeps on (&vm_page_free_count)
PAGEOUT_EVENT = "vm_pageout"  # what wakes the pageout daemon (&vm_page_free_wanted)


def _flag(bit: int, doc: str):
    def get(self):
        return bool(self.flags & bit)

    def set_(self, value):
        if value:
            self.flags |= bit
        else:
            self.flags &= ~bit

    return property(get, set_, doc=doc)


def _field(shift: int, doc: str):
    """A 3-bit protection field of ``flags`` (vm_page.h's ``page_lock:3``)."""
    mask = VM_PROT_ALL << shift

    def get(self):
        return (self.flags & mask) >> shift

    def set_(self, value):
        self.flags = (self.flags & ~mask) | ((value & VM_PROT_ALL) << shift)

    return property(get, set_, doc=doc)


_DIRTY = 0x004


def _dirty_get(self):
    return bool(self.flags & _DIRTY)


def _dirty_set(self, value):
    # The machine's dirty counts follow the bit, so vm_statistics need not walk frames.
    f = self.flags
    if value:
        if not f & _DIRTY:
            self.flags = f | _DIRTY
            _count_dirty(self, 1)
    elif f & _DIRTY:
        self.flags = f & ~_DIRTY
        _count_dirty(self, -1)


def _count_dirty(page, delta: int):
    pool = page.pool
    pool.dirty_count += delta
    obj = page.object
    if obj is not None and not obj.internal:
        pool.dirty_external += delta


class _Unpooled:
    """The counts of pages made outside a VMResident (tests)."""

    dirty_count = dirty_external = 0


class VMPage:
    """struct vm_page: the frame's identity (object, offset), its flags, its locks.

    The boolean flags and the two 3-bit protections share one int (``flags``), as
    vm_page.h packs them in bitfields, to keep a page small: with hundreds of thousands
    of frames, every slot costs megabytes."""

    __slots__ = ("frame", "object", "offset", "queue", "flags", "wire_count", "q_prev",
                 "q_next")

    busy = _flag(0x001, "in transit: being filled, cleaned or locked")
    absent = _flag(0x002, "asked of the pager, no data yet")
    dirty = property(_dirty_get, _dirty_set, doc="modified since it was last cleaned "
                     "(counted in the machine's dirty_count)")
    precious = _flag(0x008, "the pager wants it back even when clean")
    error = _flag(0x010, "the pager reported an error for it")
    wanted = _flag(0x020, "someone waits for it (PAGE_WAKEUP)")
    laundry = _flag(0x040, "in a data_return the pager has not released")
    referenced = _flag(0x080, "touched since last deactivated")
    potentially_dirty = _flag(0x100, "advisory pageout: write-unlocked since last cleaned")
    external = _flag(0x200, "grabbed for an external object (external_page_count on)")
    extcounted = _flag(0x400, "counted in vm_page_external_count")
    page_lock = _field(16, "accesses the pager forbids (VM_PROT_*)")
    unlock_request = _field(19, "accesses asked of the pager with data_unlock")
    pool = _Unpooled  # the VMResident whose dirty_count counts this page (its subclass's)

    def __init__(self, frame: int):
        self.frame = frame
        self.object = None
        self.offset = 0
        self.queue = Q_FREE
        self.flags = 0
        self.wire_count = 0
        self.q_prev = self.q_next = None

    def reset(self):
        if self.flags & _DIRTY:
            _count_dirty(self, -1)  # while it still knows its object
        self.object = None
        self.offset = 0
        self.flags = 0  # page_lock and unlock_request too
        self.wire_count = 0

    def __repr__(self):
        flags = "".join(c for c, f in (("B", self.busy), ("A", self.absent), ("D", self.dirty),
                                        ("P", self.precious), ("E", self.error),
                                        ("L", self.laundry)) if f)
        return f"<page {self.frame} obj {getattr(self.object, 'id', None)} +{self.offset:#x} {flags}>"


class PageQueue:
    """queue_head_t of pages (vm_page_queue_active / _inactive), linked through the
    pages' q_prev / q_next."""

    __slots__ = ("head", "tail", "count")

    def __init__(self):
        self.head = self.tail = None
        self.count = 0

    def __len__(self):
        return self.count

    def __bool__(self):
        return self.count > 0

    def append(self, page: VMPage):
        page.q_prev, page.q_next = self.tail, None
        if self.tail is None:
            self.head = page
        else:
            self.tail.q_next = page
        self.tail = page
        self.count += 1

    def remove(self, page: VMPage):
        prev, nxt = page.q_prev, page.q_next
        if prev is None:
            self.head = nxt
        else:
            prev.q_next = nxt
        if nxt is None:
            self.tail = prev
        else:
            nxt.q_prev = prev
        page.q_prev = page.q_next = None
        self.count -= 1

    def appendleft(self, page: VMPage):
        """queue_enter_first."""
        page.q_prev, page.q_next = None, self.head
        if self.head is None:
            self.tail = page
        else:
            self.head.q_prev = page
        self.head = page
        self.count += 1

    def first(self) -> VMPage | None:
        return self.head

    def __iter__(self):
        p = self.head
        while p is not None:
            nxt = p.q_next
            yield p
            p = nxt


class VMResident:
    """The machine's physical pages and the page queues."""

    def __init__(self, npages: int):
        if npages < 64:
            raise ValueError("at least 64 physical pages")
        self.npages = npages
        # Anonymous mmap: zero pages until touched, so RSS follows the frames in use.
        self.memory = mmap.mmap(-1, npages * PAGE_SIZE)
        self.view = memoryview(self.memory)
        # Pages of this machine count themselves in its dirty counts (vm_statistics'),
        # through a class of their own: a slot per frame would cost 2 MiB at 256k pages.
        self.dirty_count = 0  # pages with the dirty bit
        self.dirty_external = 0  # of those, pages of external objects
        page_class = type("VMPage", (VMPage,), {"__slots__": (), "pool": self})
        self.pages = [page_class(i) for i in range(npages)]
        # The free queue only ever gives out its oldest page and takes pages at its end:
        # a deque (8 bytes a page) rather than an OrderedDict (about 100).
        self.free: deque[VMPage] = deque(self.pages)
        self.active = PageQueue()
        self.inactive = PageQueue()
        self.wired = 0
        self.free_wanted = 0  # vm_page_free_wanted: threads waiting in vm_page_wait
        self.external_count = 0  # vm_page_external_count (see the module's docstring)
        self.stats = {"zero_fill_count": 0, "reactivations": 0, "pageins": 0, "pageouts": 0,
                      "faults": 0, "cow_faults": 0, "lookups": 0, "hits": 0}

    # ------------------------------------------------------------ bytes

    def data(self, page: VMPage) -> memoryview:
        i = page.frame * PAGE_SIZE
        return self.view[i:i + PAGE_SIZE]

    def read(self, page: VMPage) -> bytes:
        i = page.frame * PAGE_SIZE
        return bytes(self.memory[i:i + PAGE_SIZE])

    def write(self, page: VMPage, data, at: int = 0):
        i = page.frame * PAGE_SIZE + at
        self.memory[i:i + len(data)] = data

    def zero(self, page: VMPage):
        i = page.frame * PAGE_SIZE
        self.memory[i:i + PAGE_SIZE] = bytes(PAGE_SIZE)

    # ------------------------------------------------------------ queues

    def _unqueue(self, page: VMPage):
        q = page.queue
        if q == Q_ACTIVE:
            self.active.remove(page)
        elif q == Q_INACTIVE:
            self.inactive.remove(page)
        elif q == Q_FREE:
            self.free.remove(page)  # rare: pages leave the free queue by vm_page_alloc_pa
        page.queue = Q_NONE

    def vm_page_alloc_pa(self) -> VMPage | None:
        """Take a free frame (the caller inserts it in an object), or None."""
        if not self.free:
            return None
        page = self.free.popleft()
        page.queue = Q_NONE
        return page

    def vm_page_free_pa(self, page: VMPage):
        """Return a frame to the free queue (the caller removed it from its object)."""
        self._unqueue(page)
        if page.wire_count:
            self.wired -= 1
        page.reset()
        page.queue = Q_FREE
        self.free.append(page)

    def vm_page_activate(self, page: VMPage):
        if page.wire_count:
            return
        if page.queue == Q_INACTIVE:
            self.stats["reactivations"] += 1
        if page.queue != Q_ACTIVE:
            self._unqueue(page)
            page.queue = Q_ACTIVE
            self.active.append(page)

    def vm_page_deactivate(self, page: VMPage, first: bool = False):
        """vm_page_deactivate: to the tail of the inactive queue (its head with
        ``first``: vm_pageout_setup's queue_enter_first for a page to double-page)."""
        if page.wire_count:
            return
        page.referenced = False
        if page.queue != Q_INACTIVE or first:
            self._unqueue(page)
            page.queue = Q_INACTIVE
            if first:
                self.inactive.appendleft(page)
            else:
                self.inactive.append(page)

    def vm_page_wire(self, page: VMPage):
        if page.wire_count == 0:
            self._unqueue(page)
            self.wired += 1
        page.wire_count += 1

    def vm_page_unwire(self, page: VMPage):
        page.wire_count -= 1
        if page.wire_count == 0:
            self.wired -= 1
            self.vm_page_activate(page)

    @property
    def free_count(self) -> int:
        return len(self.free)

    def counts(self) -> dict:
        """Every page is in exactly one of: free, active, inactive, wired, in transit
        (busy pages off the queues while the kernel works on them)."""
        free, active, inactive = len(self.free), len(self.active), len(self.inactive)
        transit = self.npages - free - active - inactive - self.wired
        return {"free": free, "active": active, "inactive": inactive, "wired": self.wired,
                "transit": transit}


# ------------------------------------------------------------ resident page routines

def vm_page_insert(page: VMPage, obj, offset: int):
    """vm_page_insert: the page (a free frame just grabbed, in no object) holds
    ``obj``'s data at ``offset``."""
    if page.flags & _DIRTY:
        _count_dirty(page, -1)
        page.object, page.offset = obj, offset
        _count_dirty(page, 1)
    else:
        page.object, page.offset = obj, offset
    obj.resident[offset] = page


def vm_page_free(vm, page: VMPage):
    """vm_page_free: out of its object and off the queues, its laundry and external
    counts given back, its waiters woken; then vm_page_release."""
    obj = page.object
    if obj is not None and obj.resident.get(page.offset) is page:
        del obj.resident[page.offset]
    pageout = vm.pageout
    if pageout is not None:
        if page.laundry:
            pageout.laundry -= 1
        pageout.page_released(page)
        if pageout.stalled:
            pageout.something_changed()
    if page.wanted:
        vm.k.sched.thread_wakeup(page)
    vm_page_release(vm, page, page.external and page.extcounted)


def vm_page_release(vm, page: VMPage, external: bool):
    """vm_page_release: the frame back on the free list (out of vm_page_external_count
    if ``external``).  While threads wait for a page (vm_page_free_wanted) and the free
    count is at least the reserve, the one that has waited longest is woken, one per
    page freed — waking them all would let a greedy thread starve the others."""
    mem = vm.mem
    mem.vm_page_free_pa(page)
    if external:
        mem.external_count -= 1
    if mem.free_wanted > 0 and mem.free_count >= vm_page_free_reserved(vm):
        mem.free_wanted -= 1
        vm.k.sched.thread_wakeup_one(FREE_EVENT)


def vm_page_free_reserved(vm) -> int:
    """vm_page_free_reserved: frames only privileged allocations may take."""
    return vm.pageout.free_reserved if vm.pageout is not None else 0


def vm_page_grab(vm, privileged: bool = False, external: bool = False) -> VMPage | None:
    """vm_page_grab: a free frame, or None when the pageout policy refuses it (classic:
    only the reserve is left, or ``external`` and vm_page_external_count is above
    VM_PAGE_EXTERNAL_LIMIT; privileged allocations — pageout, the default pager's
    objects — may take anything) or no frame is left.  ``external``: the frame is for an
    external object (callers pass ``not obj.internal``); counted in
    vm_page_external_count when the kernel config's external_page_count is set."""
    mem = vm.mem
    pageout = vm.pageout
    if not mem.free or (pageout is not None
                        and not pageout.grab_allowed(privileged, external)):
        return None
    page = mem.vm_page_alloc_pa()
    if external and vm.config.external_page_count:
        page.external = page.extcounted = True
        mem.external_count += 1
    if pageout is not None:
        pageout.after_grab()
    return page


def vm_page_wait(vm, since: float | None = None):
    """vm_page_wait (a kernel-thread generator), after a refused vm_page_grab: count the
    thread in vm_page_free_wanted (the first one wakes the pageout daemon, which keeps
    freeing pages while anyone waits) and sleep until vm_page_release wakes it.  Mach
    sleeps only while free < free target or the external count is over its limit; a
    refused grab implies that here.

    While the daemon is stalled (dirty anonymous pages and no default pager: nothing
    will be freed unless something changes) the wait is bounded: raises
    MachError(KERN_RESOURCE_SHORTAGE) once config.page_wait_timeout seconds have passed
    since ``since`` (when the caller first found no page; None: now).  GNU Mach would
    wait forever.  A thread that leaves the wait without vm_page_release's wakeup
    (timed out, woken by the stall, gone) takes itself out of vm_page_free_wanted."""
    vm.stats["page_waits"] += 1
    mem = vm.mem
    sched = vm.k.sched
    pageout = vm.pageout
    wait = FREE_EVENT
    if pageout is not None and pageout.stalled:
        now = time.monotonic()
        left = (now if since is None else since) + vm.config.page_wait_timeout - now
        if left <= 0:
            vm.stats["page_wait_failures"] += 1
            raise MachError(KernReturn.KERN_RESOURCE_SHORTAGE)
        wait = Sleep(left, FREE_EVENT)
    mem.free_wanted += 1
    if mem.free_wanted == 1:
        sched.thread_wakeup(PAGEOUT_EVENT)
    counted_off = False
    try:
        yield wait
        me = sched.current
        counted_off = me is not None and me.wait_result == THREAD_AWAKENED
    finally:
        if not counted_off and mem.free_wanted > 0:
            mem.free_wanted -= 1


def vm_page_wakeup(vm, page: VMPage):
    """PAGE_WAKEUP_DONE: the page is no longer busy; whoever waits for it runs."""
    page.busy = False
    if page.wanted:
        page.wanted = False
        vm.k.sched.thread_wakeup(page)
