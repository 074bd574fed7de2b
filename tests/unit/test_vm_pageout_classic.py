"""The classic pageout policy's decisions (kernel.vm_pageout, GNU Mach vm_pageout.c at
6af53cb9) on an in-process kernel with no process behind it (a real
``kernel.main.Kernel``, as in test_kernel_ipc): its thresholds, when the scan pauses and
for how long, burst_wait adapting both ways, laundry counted only for pages going to the
default pager, double paging below reserve - 25, vm_page_free_wanted with one waiter
woken per freed page, the external page count off and on, object termination one page
per data_return, and the counters in vm_statistics and launch status.  The pagers are
tasks of that kernel: data_returns queue at their ports, and a pager lets its laundry
go by receiving the message and vm_deallocating the region, as libpager does."""

from __future__ import annotations

import time

import pytest

from kernel.ipc_port import ipc_port_make_send
from kernel.sched_prim import (
    THREAD_AWAKENED,
    THREAD_RESTART,
    THREAD_TIMED_OUT,
    Scheduler,
    Sleep,
)
from kernel.vm_object import VMObject, vm_object_deallocate, vm_object_pager_create
from kernel.vm_page import PAGEOUT_EVENT, vm_page_free, vm_page_grab, vm_page_insert, vm_page_wait
from kernel.vm_pageout import ClassicPageout
from kernel.vm_pageout_throttle import vm_page_dirty_throttled
from kernel.vm_user import vm_statistics
from lab import status
from protocol import message as M
from protocol.defs import mach as MD
from protocol.defs.memory_object import (
    memory_object_create,
    memory_object_data_return,
    memory_object_terminate,
)
from protocol.kern_return import KernReturn as K
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE
from tests.unit.test_kernel_ipc import KTask
from tests.unit.test_vm_pageout_throttle import Pager, make_kernel  # noqa: F401

pytestmark = pytest.mark.timeout(60)

NPAGES = 1024  # reserve 50; free target 77, free min 69; external limit 487, target 243


@pytest.fixture
def new_kernel(make_kernel):  # noqa: F811 (test_vm_pageout_throttle's fixture)
    """Kernels without processes under the classic policy, NPAGES pages."""
    return lambda **cfg: make_kernel(**{"pageout_policy": "classic",
                                        "physical_pages": NPAGES, **cfg})


# ------------------------------------------------------------ helpers

def hold_until(k, free: int) -> list:
    """Privileged grabs (pages off every queue, as the kernel's own) until ``free``
    frames are left."""
    held = []
    while k.vm.mem.free_count > free:
        held.append(vm_page_grab(k.vm, privileged=True))
    return held


def inactive_pages(pg, n, start=0, dirty=True):
    """``n`` pages of the pager's object, on the inactive queue in offset order."""
    pages = [pg.page(i, dirty=dirty) for i in range(start, start + n)]
    for p in pages:
        pg.k.vm.mem.vm_page_deactivate(p)
    return pages


def scan_once(po):
    """Run one vm_pageout_scan to its pause; returns the Sleep it paused with (None: it
    found nothing to do), the pause's continuation run."""
    gen = po.scan()
    try:
        wait = next(gen)
    except StopIteration:
        return None
    with pytest.raises(StopIteration):
        next(gen)
    return wait


class DefaultPager:
    """A task registered as the default pager (vm_set_default_memory_manager)."""

    def __init__(self, k):
        self.k = k
        self.task = KTask(k, "defpager")
        self.name = self.task.port()
        self.port = self.task.space.lookup(self.name).object
        ipc_port_make_send(self.port)
        k.vm.default_pager = self.port

    def take_all(self) -> int:
        """Receive every memory_object_create, then every data_return on the new pager
        ports, vm_deallocating each one's pages (the default pager writing them to
        swap).  Returns the number of data_returns taken."""
        ports = []
        for hdr in take(self.task, self.name):
            assert hdr[M.A_ID] == memory_object_create.msgh_id
            ports.append(hdr[M.A_DESCS][0])  # the new memory object's receive right
        return sum(len(take(self.task, name)) for name in ports)


def take(t, name) -> list:
    """A pager's side: receive every message queued on ``name`` and vm_deallocate each
    out-of-line region the kernel mapped for it.  Returns the headers."""
    out = []
    while True:
        r = t.receive(name, timeout=0)
        if r is None or r[0] != "msg":
            return out
        _, hdr, frames = r
        addrs = hdr[M.A_OOL_ADDRS] if len(hdr) > M.A_OOL_ADDRS else ()
        for addr, frame in zip(addrs, frames[1:]):
            if addr:
                t.ok(MD.vm_deallocate, addr, len(frame))
        out.append(hdr)


def anon_pages(k, n):
    """An anonymous object with ``n`` dirty inactive pages."""
    obj = VMObject(n * PAGE_SIZE, internal=True)
    k.vm.objects += 1
    for i in range(n):
        p = vm_page_grab(k.vm)
        vm_page_insert(p, obj, i * PAGE_SIZE)
        k.vm.mem.write(p, bytes([i % 251 + 1]) * PAGE_SIZE)
        p.dirty = True
        k.vm.mem.vm_page_deactivate(p)
    return obj


# ------------------------------------------------------------ thresholds

def test_thresholds_are_6af53cb9s(new_kernel):
    k = new_kernel()
    po = k.vm.pageout
    assert type(po) is ClassicPageout
    free = NPAGES - 50
    assert po.free_reserved == 50
    assert po.free_min == 50 + 10 + free // 100 == 69
    assert po.free_target == 50 + 15 + free // 80 == 77
    assert (po.external_limit, po.external_target) == (free // 2, free // 4) == (487, 243)
    assert (po.reserved_internal, po.reserved_really) == (25, 10)
    assert (po.burst_max, po.burst_min, po.burst_wait, po.empty_wait, po.pause_max) == (
        10, 5, 10, 75, 10)


# ------------------------------------------------------------ the pause

def test_a_burst_of_external_pages_pauses_and_is_not_laundry(new_kernel):
    k = new_kernel()
    po, mem = k.vm.pageout, k.vm.mem
    pg = Pager(k, 200)
    pages = inactive_pages(pg, 200)
    hold_until(k, po.free_target - 5)
    wait = scan_once(po)
    # burst max pages sent, one per data_return; then max(laundry 0, burst 10) x 10 ms
    assert isinstance(wait, Sleep) and wait.event is None
    assert wait.seconds == pytest.approx(0.100)
    returns = pg.data_returns()
    assert len(returns) == 10 and k.vm.stats["data_return_pages"] == 10
    assert [p.object.label for p in pages[:10]] == ["laundry"] * 10
    # external pages are not laundry: active (pageable), dirty, not wired, not counted
    assert all(p.queue == 2 and p.dirty and not p.wire_count and not p.laundry
               for p in pages[:10])
    assert (po.laundry, po.laundry_external, po.returns_in_flight) == (0, 10, 10)
    assert po.stats["pauses"] == 1 and po.pause_count == 1 and po.burst_wait == 10
    assert po.stats["evictions"] == 10
    # throttle's dirty count still sees them
    assert vm_page_dirty_throttled(k.vm) == 190 + 10
    # the pager lets them go: vm_deallocate of each data_return's region frees them
    free0 = mem.free_count
    taken = [h[M.A_ID] for h in take(pg.task, pg.name)]
    assert taken.count(memory_object_data_return.msgh_id) == 10
    assert (po.laundry_external, po.returns_in_flight) == (0, 0)
    assert mem.free_count == free0 + 10


def test_nothing_inactive_pauses_empty_wait(new_kernel):
    k = new_kernel()
    po = k.vm.pageout
    hold_until(k, po.free_target - 1)  # short, and not one page on any queue
    wait = scan_once(po)
    assert wait.seconds == pytest.approx(0.075)
    assert po.pause_ms(0, True) == 75 and po.pause_ms(9, True) == 90
    assert po.pause_ms(3, False) == 30


def test_internal_laundry_pauses_grows_burst_wait_and_is_released(new_kernel):
    k = new_kernel()
    po, mem = k.vm.pageout, k.vm.mem
    dp = DefaultPager(k)
    obj = anon_pages(k, 60)
    hold_until(k, po.free_target - 15)
    wait = scan_once(po)
    # ten anonymous pages to the default pager: wired, counted as laundry
    assert wait.seconds == pytest.approx(0.100)
    assert (po.laundry, po.laundry_external, po.returns_in_flight) == (10, 0, 10)
    assert k.vm.stats["memory_object_create"] == 1
    assert mem.wired == 10 and len(obj.resident) == 50
    # laundry 10 > burst min: the pause was too short
    assert po.burst_wait == 11 and po.pause_count == 0
    # laundry >= burst max: the next scan pauses at once, max(10, 0) x 11 ms
    sent = k.vm.stats["memory_object_data_return"]
    wait = scan_once(po)
    assert wait.seconds == pytest.approx(0.110)
    assert k.vm.stats["memory_object_data_return"] == sent and po.burst_wait == 12
    # the default pager takes them: the laundry goes, its frames are free again
    free0 = mem.free_count
    assert dp.take_all() == 10
    assert (po.laundry, po.returns_in_flight, mem.wired) == (0, 0, 0)
    assert mem.free_count == free0 + 10


def test_very_low_memory_pauses_while_laundry_is_outstanding(new_kernel):
    k = new_kernel()
    po = k.vm.pageout
    DefaultPager(k)
    anon_pages(k, 1)
    ext = Pager(k, 10)
    inactive_pages(ext, 5)
    hold_until(k, po.reserved_really - 1)  # 9 free
    assert not po.must_pause(0, False)  # no laundry yet: a page may go out
    po.launder(k.vm.mem.inactive.first())  # the anonymous page: laundry 1
    assert po.laundry == 1
    assert po.must_pause(0, False)
    wait = scan_once(po)
    assert wait.seconds == pytest.approx(0.010)  # max(laundry 1, burst 0) x 10 ms
    assert not ext.data_returns()


def test_only_external_pages_going_out_decays_burst_wait_to_1_ms(new_kernel):
    """The 2011 storm mechanism: external pages are not laundry, so the laundry stays 0
    and every 11th pause shrinks burst_wait by 3/4, down to 1 ms."""
    k = new_kernel()
    po = k.vm.pageout
    pg = Pager(k, 700)
    inactive_pages(pg, 700)
    hold_until(k, po.free_target - 5)
    seen = []
    for _ in range(60):
        bw = po.burst_wait
        wait = scan_once(po)
        assert po.laundry == 0
        assert wait.seconds == pytest.approx(10 * bw / 1000.0), (len(seen), bw)
        seen.append(bw)
    assert [seen.count(bw) for bw in (10, 7, 5, 3, 2)] == [11] * 5
    assert seen[55:] == [1] * 5 and po.burst_wait == 1
    assert len(pg.data_returns()) == 600 and po.laundry_external == 600


# ------------------------------------------------------------ double paging

def test_double_paging_below_reserve_minus_25(new_kernel):
    k = new_kernel()
    po, mem = k.vm.pageout, k.vm.mem
    DefaultPager(k)
    pg = Pager(k, 3)
    pages = inactive_pages(pg, 3)
    hold_until(k, po.reserved_internal - 5)  # 20 free: external pagers presumed wedged
    wait = scan_once(po)
    # each page: a data_return to its pager, and its laundry copy, put at the head of
    # the inactive queue, at once to the default pager (wired, counted)
    assert len(pg.data_returns()) == 3 and po.stats["double_paged"] == 3
    assert k.vm.stats["memory_object_create"] == 3
    assert k.vm.stats["memory_object_data_return"] == 6
    assert (po.laundry, po.laundry_external, po.returns_in_flight) == (3, 3, 6)
    assert all(p.laundry and p.wire_count for p in pages)
    assert wait.seconds == pytest.approx(0.075)  # max(3, 6) x 10 ms, nothing inactive left
    assert mem.wired == 3


def test_no_double_paging_above_reserve_minus_25(new_kernel):
    k = new_kernel()
    po = k.vm.pageout
    DefaultPager(k)
    pg = Pager(k, 1)
    (page,) = inactive_pages(pg, 1)
    hold_until(k, po.reserved_internal + 5)
    scan_once(po)
    assert len(pg.data_returns()) == 1 and po.stats["double_paged"] == 0
    assert k.vm.stats["memory_object_create"] == 0 and po.laundry == 0
    assert page.object.label == "laundry" and not page.wire_count


# ------------------------------------------------------------ vm_page_free_wanted

def test_one_waiter_woken_per_freed_page_in_order(new_kernel):
    k = new_kernel()
    vm, mem, po = k.vm, k.vm.mem, k.vm.pageout
    held = hold_until(k, po.free_reserved - 3)  # unprivileged grabs refused
    daemon_woken = []

    def daemon():
        yield PAGEOUT_EVENT
        daemon_woken.append(mem.free_wanted)

    got = []

    def waiter(tag):
        while vm_page_grab(vm) is None:
            yield from vm_page_wait(vm)
        got.append(tag)

    k.sched.spawn(daemon(), "daemon")
    k.sched.spawn(waiter("a"), "a")
    k.sched.run()
    assert daemon_woken == [1]  # the first waiter woke the daemon
    for tag in "bc":
        k.sched.spawn(waiter(tag), tag)
    assert mem.free_wanted == 3
    assert not po.done()  # the daemon keeps going while someone waits
    for _ in range(2):  # still below the reserve: nobody woken
        vm_page_free(vm, held.pop())
        k.sched.run()
    assert got == [] and mem.free_wanted == 3
    for n, want in ((1, ["a"]), (2, ["a", "b"]), (3, ["a", "b", "c"])):
        vm_page_free(vm, held.pop())  # free == reserve: one waiter, the oldest
        assert mem.free_wanted == 3 - n
        k.sched.run()
        assert got == want
    assert mem.free_count == po.free_reserved - 1


def test_a_waiter_leaving_without_a_page_leaves_free_wanted(new_kernel):
    k = new_kernel(page_wait_timeout=0.2)
    vm, mem, po = k.vm, k.vm.mem, k.vm.pageout
    hold_until(k, po.free_reserved - 1)
    errors = []

    def waiter():
        since = time.monotonic()  # as vm_fault: the bound counts from the first refusal
        try:
            while vm_page_grab(vm) is None:
                yield from vm_page_wait(vm, since)
        except MachError as e:
            errors.append(e.code)

    t = k.sched.spawn(waiter(), "waiter")
    assert mem.free_wanted == 1
    # the daemon stalls (no default pager): the waiter is woken to wait with a bound
    stall = k.sched.spawn(po.stall(), "stall")
    k.sched.run()
    assert po.stalled and isinstance(t.waiting, str) and mem.free_wanted == 1
    deadline = time.monotonic() + 30
    while not t.done and time.monotonic() < deadline:
        time.sleep(0.02)
        k.sched.run()
    assert errors == [K.KERN_RESOURCE_SHORTAGE] and mem.free_wanted == 0
    stall.gen.close()


# ------------------------------------------------------------ the external page count

def test_external_count_off_the_limit_never_acts(new_kernel):
    k = new_kernel()
    vm, po = k.vm, k.vm.pageout
    obj = VMObject(NPAGES * PAGE_SIZE, internal=False)
    n = 0
    while (p := vm_page_grab(vm, external=True)) is not None:
        vm_page_insert(p, obj, n * PAGE_SIZE)
        n += 1
    assert n > po.external_limit and vm.mem.free_count == po.free_reserved - 1
    assert vm.mem.external_count == 0 and not any(p.external for p in obj.resident.values())
    assert vm_statistics(vm)["external_count"] == 0


def test_external_count_on_grab_refused_above_the_limit(new_kernel):
    k = new_kernel(external_page_count=True)
    vm, mem, po = k.vm, k.vm.mem, k.vm.pageout
    obj = VMObject(NPAGES * PAGE_SIZE, internal=False)
    pages = []
    while (p := vm_page_grab(vm, external=True)) is not None:
        vm_page_insert(p, obj, len(pages) * PAGE_SIZE)
        pages.append(p)
    # refused once the count is above VM_PAGE_EXTERNAL_LIMIT, far above the reserve
    assert len(pages) == mem.external_count == po.external_limit + 1
    assert mem.free_count > po.free_target
    assert all(p.external and p.extcounted for p in pages)
    assert vm_page_grab(vm) is not None  # an internal page still comes
    assert vm_page_grab(vm, privileged=True, external=True) is not None
    assert mem.external_count == po.external_limit + 2
    vm_page_free(vm, pages.pop())
    vm_page_free(vm, pages.pop())
    assert mem.external_count == po.external_limit
    assert vm_page_grab(vm, external=True) is not None


def test_external_count_on_target_scan_when_pages_are_not_wanted(new_kernel):
    k = new_kernel(external_page_count=True)
    vm, mem, po = k.vm, k.vm.mem, k.vm.pageout
    anon = anon_pages(k, 20)  # dirty internal pages: left alone when pages are not wanted
    obj = VMObject(NPAGES * PAGE_SIZE, internal=False)
    pages = []
    for i in range(300):
        p = vm_page_grab(vm, external=True)
        vm_page_insert(p, obj, i * PAGE_SIZE)
        mem.vm_page_deactivate(p)
        pages.append(p)
    assert mem.free_count >= po.free_target and mem.external_count == 300
    assert not po.done()  # 300 > external target 243
    free0 = mem.free_count
    assert scan_once(po) is None  # done without a pause
    # clean external pages leave the count and go to the tail of the inactive queue
    assert mem.external_count == po.external_target
    assert po.stats["cleaned_external"] == 300 - po.external_target
    assert mem.free_count == free0 and len(anon.resident) == 20
    assert list(mem.inactive)[-1] is pages[300 - po.external_target - 1]
    assert not any(p.extcounted for p in pages[:57]) and all(p.extcounted for p in pages[57:])


def test_external_count_on_dirty_external_pages_go_out_when_not_wanted(new_kernel):
    k = new_kernel(external_page_count=True)
    vm, mem, po = k.vm, k.vm.mem, k.vm.pageout
    DefaultPager(k)
    anon = anon_pages(k, 20)
    pg = Pager(k, 300)
    pages = []
    for i in range(300):
        p = vm_page_grab(vm, external=True)
        vm_page_insert(p, pg.obj, i * PAGE_SIZE)
        p.dirty = True
        mem.vm_page_deactivate(p)
        pages.append(p)
    wait = scan_once(po)
    assert wait.seconds == pytest.approx(0.100)
    assert len(pg.data_returns()) == 10 and k.vm.stats["memory_object_create"] == 0
    assert len(anon.resident) == 20 and po.laundry == 0
    assert mem.external_count == 300  # the pages still count until freed


# ------------------------------------------------------------ termination

@pytest.mark.parametrize("cluster, expect", [(1, [1] * 5), (4, [4, 1])])
def test_termination_returns_one_page_per_data_return(new_kernel, cluster, expect):
    k = new_kernel(data_return_cluster=cluster)
    pg = Pager(k, 8)
    for i in range(5):
        pg.page(i)
    pg.page(6, dirty=False)
    vm_object_deallocate(k.vm, pg.obj)
    sizes = [sum(len(f) for f in kmsg.ool) // PAGE_SIZE for kmsg in pg.data_returns()]
    assert sizes == expect
    ids = [kmsg.msgh_id for kmsg in pg.port.mqueue.messages]
    assert ids[-1] == memory_object_terminate.msgh_id and not pg.obj.resident


def test_a_temporary_object_terminates_without_pageout(new_kernel):
    k = new_kernel()
    DefaultPager(k)
    obj = anon_pages(k, 4)
    vm_object_pager_create(k.vm, obj, k.vm.default_pager)
    free0 = k.vm.mem.free_count
    vm_object_deallocate(k.vm, obj)
    assert k.vm.stats["memory_object_data_return"] == 0
    assert k.vm.mem.free_count == free0 + 4


# ------------------------------------------------------------ counters

def test_counters_in_vm_statistics_and_launch_status(new_kernel):
    k = new_kernel()
    po = k.vm.pageout
    pg = Pager(k, 50)
    inactive_pages(pg, 50)
    hold_until(k, po.free_target - 5)
    scan_once(po)
    s = vm_statistics(k.vm)
    for key, want in (("policy", "classic"), ("laundry_internal", 0), ("laundry_count", 0),
                      ("laundry_external", 10), ("returns_in_flight", 10),
                      ("external_count", 0), ("free_wanted", 0), ("burst_wait_ms", 10),
                      ("pauses", 1), ("paused_allocations", 0), ("evictions", 10),
                      ("potentially_dirty", 0), ("dirty_sleeping", 0), ("dirty_sleeps", 0),
                      ("dirty_sleep_seconds", 0.0), ("external_limit", 487)):
        assert s[key] == want, key
    result = {"kernel": {"pid": 1, "uptime": 0, "rss": 0}, "endpoint": "ipc://x",
              "tasks": [], "ports": [], "all_ports": False, "stats": {}, "vm": s,
              "processes": []}
    text = status.render(result)
    assert "pageout policy classic: potentially dirty 0, writers sleeping" in text
    assert ("laundry internal 0, external 10 (10 data_returns in flight), external pages 0"
            " (limit 487, target 243), free wanted 0, burst wait 10 ms, pauses 1, "
            "evictions 10") in text


# ------------------------------------------------------------ sched_prim

def test_thread_wakeup_one_is_fifo_and_wait_results_say_why():
    sched = Scheduler()
    woke = []

    def sleeper(tag, seconds=None):
        yield "ev" if seconds is None else Sleep(seconds, "ev")
        woke.append((tag, sched.current.wait_result))

    for tag in "abc":
        sched.spawn(sleeper(tag), tag)
    assert sched.thread_wakeup_one("ev") == 1
    sched.run()
    assert woke == [("a", THREAD_AWAKENED)]
    assert sched.thread_wakeup_prim("ev", result=THREAD_RESTART) == 2
    sched.run()
    assert woke[1:] == [("b", THREAD_RESTART), ("c", THREAD_RESTART)]
    assert sched.thread_wakeup_one("ev") == 0 and "ev" not in sched.waitq
    # a sleep that timed out is not woken again, nor counted as a waiter
    sched.spawn(sleeper("t", 0.0), "t")
    sched.spawn(sleeper("d"), "d")
    time.sleep(0.01)
    sched.run()
    assert woke[-1] == ("t", THREAD_TIMED_OUT)
    assert sched.thread_wakeup_one("ev") == 1
    sched.run()
    assert woke[-1] == ("d", THREAD_AWAKENED)


def test_a_stale_timer_does_not_cut_a_later_wait_short():
    sched = Scheduler()
    woke = []

    def t():
        yield Sleep(0.05, "ev")  # woken by the event long before its timer
        yield Sleep(30, "ev")  # the old timer must not end this one
        woke.append(sched.current.wait_result)

    th = sched.spawn(t(), "t")
    sched.thread_wakeup("ev")
    sched.run()
    time.sleep(0.1)
    sched.run()
    assert not th.done and woke == []
    sched.thread_wakeup("ev")
    sched.run()
    assert woke == [THREAD_AWAKENED]
