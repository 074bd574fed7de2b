"""The throttle pageout policy's decisions on an in-process kernel (a real
``kernel.main.Kernel`` with its real VM, as in test_kernel_ipc): the thresholds, the
pause length, the writer's pause in vm_fault, and background writeback starting at
dirty_background_ratio — data_returns queued on a real pager port."""

from __future__ import annotations

import shutil
import tempfile
import time

import pytest

from kernel.config import KernelConfig
from kernel.ipc_port import ipc_port_make_send
from kernel.main import Kernel
from kernel.vm_fault import vm_fault
from kernel.vm_object import vm_object_allocate, vm_object_enter
from kernel.vm_page import vm_page_grab, vm_page_insert
from kernel.vm_pageout import ClassicPageout
from kernel.vm_pageout_throttle import (
    ThrottlePageout,
    dirty_pause_seconds,
    vm_page_dirty_throttled,
)
from kernel.vm_user import vm_statistics
from protocol.defs.mach import VM_PROT_READ, VM_PROT_WRITE
from protocol.defs.memory_object import memory_object_data_return
from protocol.vm_param import PAGE_SIZE
from tests.unit.test_kernel_ipc import KTask, RecordingKernel

pytestmark = pytest.mark.timeout(30)

NPAGES = 1000  # bg_thresh 100, thresh 200 with the default ratios


@pytest.fixture
def make_kernel():
    made = []

    def make(**settings):
        d = tempfile.mkdtemp(prefix="mk", dir="/tmp")
        cfg = KernelConfig.load(**{"physical_pages": NPAGES, "pageout_policy": "throttle",
                                   **settings})
        kern = ConfiguredKernel(f"ipc://{d}/k.sock", cfg)
        made.append((kern, d))
        return kern

    yield make
    for kern, d in made:
        for t in list(kern.tasks.values()):
            kern.task_destroy(t, "test over")
        kern.close()
        shutil.rmtree(d, ignore_errors=True)


class ConfiguredKernel(RecordingKernel):
    """RecordingKernel with a configuration."""

    def __init__(self, endpoint, cfg):
        Kernel.__init__(self, endpoint, cfg)
        self.out = {}


class Pager:
    """A task holding a memory object port, and the kernel's object for it (made ready
    as if the pager had answered memory_object_init)."""

    def __init__(self, k, npages):
        self.k = k
        self.task = KTask(k, "pager")
        self.name = self.task.port()
        self.port = self.task.space.lookup(self.name).object
        ipc_port_make_send(self.port)
        self.obj = vm_object_enter(k.vm, self.port, npages * PAGE_SIZE)
        self.obj.pager_ready = True

    def page(self, i, dirty=True):
        vm = self.k.vm
        p = vm_page_grab(vm)
        vm_page_insert(p, self.obj, i * PAGE_SIZE)
        vm.mem.write(p, bytes([i % 251]) * PAGE_SIZE)
        p.dirty = dirty
        vm.mem.vm_page_activate(p)
        return p

    def mapped_by(self, name, npages):
        """A new task with the object mapped (as vm_map would): (KTask, address)."""
        t = KTask(self.k, name)
        ipc_port_make_send(self.port)
        self.obj.ref_count += 1
        return t, t.task.map.vm_map_enter(None, npages * PAGE_SIZE, self.obj, 0)

    def data_returns(self):
        """The data_returns queued at the pager port."""
        return [kmsg for kmsg in self.port.mqueue.messages
                if kmsg.msgh_id == memory_object_data_return.msgh_id]


def test_pause_length_is_proportional_to_the_excess_and_capped():
    bg, th, mx = 100, 200, 0.2
    assert dirty_pause_seconds(0, bg, th, mx) == 0
    assert dirty_pause_seconds(th, bg, th, mx) == 0  # at the limit: no pause yet
    span = (th - bg) // 2
    assert dirty_pause_seconds(th + 1, bg, th, mx) == pytest.approx(mx / span)
    assert dirty_pause_seconds(th + span // 2, bg, th, mx) == pytest.approx(mx / 2)
    assert dirty_pause_seconds(th + span, bg, th, mx) == pytest.approx(mx)
    assert dirty_pause_seconds(10 * th, bg, th, mx) == mx  # never more than max_pause
    a, b = dirty_pause_seconds(th + 10, bg, th, mx), dirty_pause_seconds(th + 20, bg, th, mx)
    assert b == pytest.approx(2 * a)


def test_thresholds_follow_the_config(make_kernel):
    k = make_kernel(dirty_background_ratio=5, dirty_ratio=30, dirty_pause_max_ms=50)
    po = k.vm.pageout
    assert isinstance(po, ThrottlePageout)
    assert (po.bg_thresh, po.thresh, po.max_pause) == (50, 300, 0.05)
    k2 = make_kernel()
    assert (k2.vm.pageout.bg_thresh, k2.vm.pageout.thresh) == (100, 200)
    assert k2.vm.pageout.max_pause == 0.2


@pytest.mark.parametrize("bad", [{"dirty_ratio": 0}, {"dirty_ratio": 101},
                                 {"dirty_background_ratio": 20, "dirty_ratio": 20},
                                 {"dirty_background_ratio": -1},
                                 {"dirty_pause_max_ms": 0}, {"dirty_pause_max_ms": 10001}])
def test_config_rejects_bad_ratios(bad):
    with pytest.raises(ValueError):
        KernelConfig.load(**bad)


def test_dirty_count_is_external_dirty_pages_plus_laundry(make_kernel):
    k = make_kernel()
    pg = Pager(k, 64)
    for i in range(10):
        pg.page(i, dirty=i < 7)
    anon = vm_page_grab(k.vm)  # a dirty anonymous page is not counted
    vm_page_insert(anon, vm_object_allocate(k.vm, PAGE_SIZE), 0)
    anon.dirty = True
    assert vm_page_dirty_throttled(k.vm) == 7
    k.vm.pageout.laundry += 3
    assert vm_page_dirty_throttled(k.vm) == 10
    k.vm.pageout.laundry -= 3
    assert vm_statistics(k.vm)["dirty_throttled"] == 7


def test_writer_pauses_only_above_dirty_ratio(make_kernel):
    k = make_kernel()
    po = k.vm.pageout
    pg = Pager(k, 400)
    for i in range(po.thresh):  # exactly at dirty_ratio
        pg.page(i)
    clean = pg.page(po.thresh, dirty=False)
    assert po.dirty_pause(pg.obj, clean) == 0
    for i in range(po.thresh + 1, po.thresh + 26):
        pg.page(i)
    assert po.nr_dirty(fresh=True) == po.thresh + 25
    span = (po.thresh - po.bg_thresh) // 2
    pause = po.dirty_pause(pg.obj, clean)
    assert pause == pytest.approx(po.max_pause * 25 / span)
    s = vm_statistics(k.vm)
    assert s["dirty_pauses"] == 1 and s["dirty_pause_ms"] == pytest.approx(pause * 1000)


def _fault(k, task, addr, prot):
    result = {}

    def run():
        result["v"] = yield from vm_fault(k, task, addr, prot)

    t = k.sched.spawn(run(), "fault")
    return t, result


def test_write_fault_sleeps_then_completes_and_read_fault_does_not(make_kernel):
    k = make_kernel()
    po = k.vm.pageout
    pg = Pager(k, 400)
    for i in range(po.thresh + 50):  # 50 over: the full span, max pause
        pg.page(i)
    target = pg.page(399, dirty=False)
    writer, addr = pg.mapped_by("writer", 400)
    t, _ = _fault(k, writer.task, addr + 399 * PAGE_SIZE, VM_PROT_READ)
    assert t.done  # a read never pauses
    start = time.monotonic()
    t, result = _fault(k, writer.task, addr + 399 * PAGE_SIZE, VM_PROT_WRITE)
    assert not t.done and k.sched.timers  # asleep: the writer pays
    deadline = k.sched.next_deadline()
    assert deadline - start == pytest.approx(po.max_pause, abs=0.05)
    while not t.done and time.monotonic() < start + 10:
        time.sleep(max(0.0, k.sched.next_deadline() - time.monotonic()))
        k.sched.run()
    assert t.done and result["v"] == (pg.obj, target)  # one pause, then the fault ends
    assert k.vm.stats["dirty_pauses"] == 1


def test_classic_never_pauses_a_writer(make_kernel):
    k = make_kernel(pageout_policy="classic")
    assert type(k.vm.pageout) is ClassicPageout
    pg = Pager(k, 600)
    for i in range(500):
        pg.page(i)
    target = pg.page(599, dirty=False)
    writer, addr = pg.mapped_by("writer", 600)
    t, result = _fault(k, writer.task, addr + 599 * PAGE_SIZE, VM_PROT_WRITE)
    assert t.done and result["v"] == (pg.obj, target)
    assert vm_statistics(k.vm)["dirty_pauses"] == 0


def test_background_writeback_starts_at_the_background_ratio(make_kernel):
    k = make_kernel()
    po = k.vm.pageout
    pg = Pager(k, 400)
    for i in range(po.bg_thresh):  # at the ratio, not over it
        pg.page(i)
    assert not po.background_needed()
    t = k.sched.spawn(po.flusher(), "flusher")
    assert not t.done and not pg.data_returns()
    pg.page(po.bg_thresh)  # one over
    assert po.background_needed()
    k.sched.thread_wakeup("vm_pageout_flusher")
    k.sched.run()
    sent = pg.data_returns()
    assert sent, "no background writeback above dirty_background_ratio"
    # Pages went back without a shortage, one page per data_return (the classic
    # cluster), and stay resident, now clean.
    assert k.vm.mem.free_count > po.free_target
    assert len(sent) == k.vm.stats["background_writeback_pages"] <= 64
    assert len(pg.obj.resident) == po.bg_thresh + 1
    assert sum(1 for p in pg.obj.resident.values() if p.dirty) == po.bg_thresh + 1 - len(sent)
    # Written pages are laundry until the pager releases them: still counted.
    assert vm_page_dirty_throttled(k.vm) == po.bg_thresh + 1


def test_background_writeback_clusters_and_keeps_spare_frames(make_kernel):
    k = make_kernel(data_return_cluster=8)
    po = k.vm.pageout
    pg = Pager(k, 200)
    for i in range(po.bg_thresh + 20):
        pg.page(i)
    n = po.background_writeback(32)
    assert n == 32 and len(pg.data_returns()) == 4  # 4 runs of 8 contiguous pages
    # With no spare frames above the free target, nothing is copied out.
    k2 = make_kernel()
    po2 = k2.vm.pageout
    pg2 = Pager(k2, NPAGES)
    i = 0
    while k2.vm.mem.free_count > po2.free_target:
        pg2.page(i)
        i += 1
    assert po2.background_writeback(32) == 0


def test_an_unknown_pageout_policy_is_a_clear_config_error():
    """KernelConfig.load names the registered policies instead of the kernel's KeyError
    at start."""
    with pytest.raises(ValueError, match="pageout_policy must be one of advisory, classic"):
        KernelConfig.load(pageout_policy="clasic")
