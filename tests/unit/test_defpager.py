"""The default pager without a kernel VM: the swap file's slot allocator and the
memory_object_default / memory_object handlers through the real PagerDemuxer, with
libpager's kernel calls recorded (tests/unit/test_libpager.Kernel).  One smoke test
starts the real process against a real kernel (registration, netname, SIGTERM)."""

from __future__ import annotations

import errno
import signal
import threading

import pytest

from protocol import message as M
from protocol.defs import mach as V
from protocol.defs import memory_object as MO
from protocol.defs.fs import ENOSPC
from protocol.vm_param import PAGE_SIZE
from tests.conftest import wait_for
from tests.unit.test_libpager import Kernel
from translators import defpager as D
from translators import libpager as PG
from translators.libports import PortBucket, PortInfo, ports_create_class

pytestmark = pytest.mark.timeout(30)

P = PAGE_SIZE
ROOT, OBJ, CONTROL, NAME = 100, 200, 300, 301


def page(b, n=1):
    return bytes([b]) * P * n


@pytest.fixture
def swap(tmp_path):
    s = D.SwapFile(tmp_path / "swap", 8 * P)
    yield s
    s.close()


class Rig:
    def __init__(self, swap):
        self.bucket = PortBucket()
        self.kernel = Kernel()
        self.dp = D.DefaultPager(self.bucket, swap, kernel=self.kernel)
        root = PortInfo(ports_create_class(name="default-pager"), self.bucket, ROOT,
                        data=self.dp)
        self.bucket._enter(root)
        self.demux = PG.PagerDemuxer(self.bucket, self.dp.handlers())

    def send(self, routine, *args, port):
        body, descs, ool = routine.encode_request(list(args))
        self.demux.serve(M.Message(msgh_id=routine.msgh_id, local_port=port, descs=descs,
                                   body=body, ool=ool, sender=M.KERNEL_SENDER))

    def create(self, obj=OBJ, size=16 * P, control=CONTROL, name=NAME):
        self.send(MO.memory_object_create, obj, size, control, name, P, port=ROOT)
        p = self.dp.objects[obj]
        self.kernel.pager = p
        return p

    def ret(self, offset, data, obj=OBJ, control=CONTROL):
        self.send(MO.memory_object_data_return, control, offset, data, True, False,
                  port=obj)

    def request(self, offset, obj=OBJ, control=CONTROL):
        self.kernel.calls.clear()
        self.send(MO.memory_object_data_request, control, offset, P, V.VM_PROT_READ,
                  port=obj)
        return [c for c in self.kernel.calls if c[0] != "deallocate"]


# ---------------------------------------------------------------- swap file

def test_slots_come_from_the_free_list_first(swap):
    assert [swap.alloc() for _ in range(3)] == [0, 1, 2]
    swap.release(1)
    swap.release(0)
    assert swap.alloc() == 0 and swap.alloc() == 1 and swap.alloc() == 3
    snap = swap.snapshot()
    assert snap["slots_used"] == 4 and snap["high_water"] == 4 and snap["slots_total"] == 8


def test_swap_full_and_double_free(swap):
    slots = [swap.alloc() for _ in range(8)]
    with pytest.raises(OSError) as e:
        swap.alloc()
    assert e.value.errno == errno.ENOSPC and swap.snapshot()["swap_full"] == 1
    swap.release(slots[5])
    with pytest.raises(ValueError):
        swap.release(slots[5])
    with pytest.raises(ValueError):
        swap.release(100)
    assert swap.alloc() == slots[5]


def test_swap_bytes_round_trip(swap):
    s = swap.alloc()
    data = bytes(range(256)) * (P // 256)
    swap.write(s, data)
    assert swap.read(s) == data
    with pytest.raises(ValueError):
        swap.write(s, b"short")
    snap = swap.snapshot()
    assert snap["bytes_written"] == P and snap["bytes_read"] == P


def test_swap_file_is_bounded_and_sparse(tmp_path):
    s = D.SwapFile(tmp_path / "sw", 10 * P + 123)
    try:
        assert s.nslots == 10 and (tmp_path / "sw").stat().st_size == 10 * P
    finally:
        s.close(unlink=True)
    assert not (tmp_path / "sw").exists()
    with pytest.raises(ValueError):
        D.SwapFile(tmp_path / "tiny", 100)


# ---------------------------------------------------------------- the handlers

def test_create_makes_a_ready_pager_on_the_new_port(swap):
    r = Rig(swap)
    p = r.create()
    assert p.pager_state == PG.NORMAL and (p.memobjcntl, p.memobjname) == (CONTROL, NAME)
    assert r.bucket.lookup(OBJ).data is p
    # No init / ready exchange, and the rights it brought are kept.
    assert r.kernel.calls == []
    assert r.dp.snapshot()["objects"] == 1


def test_pages_round_trip_through_swap(swap):
    r = Rig(swap)
    r.create()
    r.ret(0, page(1) + page(2))
    r.send(MO.memory_object_data_initialize, CONTROL, 5 * P, page(5), port=OBJ)
    assert r.dp.snapshot()["pages_in_swap"] == 3
    for off, b in ((0, 1), (P, 2), (5 * P, 5)):
        assert r.request(off) == [("data_supply", CONTROL, off, page(b), V.VM_PROT_NONE,
                                   False, 0)]
    snap = r.dp.snapshot()
    assert snap["bytes_written"] == 3 * P and snap["bytes_read"] == 3 * P


def test_never_written_page_is_data_unavailable(swap):
    r = Rig(swap)
    r.create()
    r.ret(0, page(1))
    assert r.request(3 * P) == [("data_unavailable", CONTROL, 3 * P, P)]


def test_rewriting_an_offset_reuses_its_slot(swap):
    r = Rig(swap)
    p = r.create()
    r.ret(2 * P, page(1))
    slot = p.ops.slots[2 * P]
    r.ret(2 * P, page(9))
    assert p.ops.slots[2 * P] == slot and swap.snapshot()["slots_used"] == 1
    assert r.request(2 * P)[0][3] == page(9)


def test_objects_have_separate_slots(swap):
    r = Rig(swap)
    r.create(OBJ, control=CONTROL)
    r.create(OBJ + 1, control=CONTROL + 10, name=NAME + 10)
    r.ret(0, page(1), OBJ, CONTROL)
    r.ret(0, page(2), OBJ + 1, CONTROL + 10)
    assert r.request(0, OBJ, CONTROL)[0][3] == page(1)
    assert r.request(0, OBJ + 1, CONTROL + 10)[0][3] == page(2)


def test_terminate_frees_the_slots_and_the_port(swap):
    r = Rig(swap)
    r.create()
    r.ret(0, page(1, 4))
    assert swap.snapshot()["slots_used"] == 4
    r.kernel.calls.clear()
    r.send(MO.memory_object_terminate, CONTROL, NAME, port=OBJ)
    assert swap.snapshot()["slots_used"] == 0
    assert r.kernel.calls == [("destroy", CONTROL), ("destroy", NAME)]
    assert r.bucket.lookup(OBJ) is None and OBJ not in r.dp.objects
    assert r.dp.snapshot()["objects_terminated"] == 1
    # Freed slots serve the next object.
    r.create(OBJ + 1, control=CONTROL + 10, name=NAME + 10)
    r.ret(0, page(3), OBJ + 1, CONTROL + 10)
    assert swap.snapshot()["high_water"] == 4


def test_swap_full_fails_the_write_and_later_the_read(swap):
    r = Rig(swap)
    p = r.create()
    r.ret(0, page(1, 8))  # fills all 8 slots
    r.ret(8 * P, page(2))
    assert p.stats["write_errors"] == 1 and swap.snapshot()["swap_full"] == 1
    assert r.request(8 * P) == [("data_error", CONTROL, 8 * P, P, ENOSPC)]
    assert r.request(7 * P)[0][0] == "data_supply"


def test_create_with_a_bad_page_size_gives_the_rights_back(swap):
    r = Rig(swap)
    r.send(MO.memory_object_create, OBJ, P, CONTROL, NAME, 8192, port=ROOT)
    assert OBJ not in r.dp.objects
    assert r.kernel.calls == [("destroy", OBJ), ("deallocate", CONTROL),
                              ("deallocate", NAME)]


def test_create_sent_to_an_object_port_is_refused(swap):
    r = Rig(swap)
    r.create()
    r.send(MO.memory_object_create, OBJ + 1, P, CONTROL, NAME, P, port=OBJ)
    assert OBJ + 1 not in r.dp.objects and r.demux.stats["errors"] == 1


# ---------------------------------------------------------------- the process

@pytest.mark.timeout(60)
def test_a_stalled_handler_is_reported_once_with_its_stack(swap):
    from structlog.testing import capture_logs

    r = Rig(swap)
    r.demux = D.WatchedDemuxer(r.bucket, r.dp.handlers())
    p = r.create()
    r.ret(0, page(7))
    gate, entered = threading.Event(), threading.Event()
    read = swap.read

    def slow_read(slot):
        entered.set()
        gate.wait(20)
        return read(slot)

    swap.read = slow_read
    t = threading.Thread(target=r.request, args=(0,))
    t.start()
    try:
        assert entered.wait(10)
        assert r.demux.report_stalls(after=60) == 0  # not stalled yet
        with capture_logs() as logs:
            assert r.demux.report_stalls(after=0) == 1
            assert r.demux.report_stalls(after=0) == 1  # still stalled, logged once
        [rec] = [x for x in logs if x["event"] == "handler stalled"]
        assert rec["routine"] == "memory_object_data_request" and rec["port"] == OBJ
        assert rec["pager_seqno"] == p.seqno and "slow_read" in rec["stack"]
    finally:
        gate.set()
        t.join(10)
    assert r.demux.report_stalls(after=0) == 0 and not r.demux.inflight
    assert ("data_supply", CONTROL, 0, page(7)) in [c[:4] for c in r.kernel.calls]


def test_defpager_process_registers_and_stops_cleanly(kernel, procs, run_dir, tasks):
    from protocol.defs import netname as NS

    p = procs.python(["-m", "translators.defpager", "--run-dir", str(run_dir),
                      "--swap-size", "4", "--threads", "workers"], name="defpager")
    ready = run_dir / "defpager.ready"
    wait_for(lambda: ready.exists() or p.p.poll() is not None, 30, what="defpager ready")
    assert p.p.poll() is None, p.output()
    assert ready.read_text().strip() == str(p.pid)
    assert (run_dir / "swap").stat().st_size == 4 * 1024 * 1024
    rt = tasks.new("client")
    port = NS.netname_look_up(rt.name_server, "", "defpager", rt=rt)
    assert port
    # The kernel knows it as the default pager (a null port only asks).
    current = V.vm_set_default_memory_manager(rt.host_priv, 0, rt=rt)
    assert current
    p.kill(signal.SIGTERM)
    assert p.p.wait(20) == 0, p.output()
    assert not ready.exists() and not (run_dir / "swap").exists()
    log = (run_dir / "defpager.log").read_text()
    assert "default pager ready" in log and "default pager stopping" in log


@pytest.mark.timeout(120)
def test_anonymous_memory_larger_than_physical_goes_through_swap(procs, run_dir):
    """End to end with the real kernel VM: 3x physical memory written, paged out to the
    default pager, read back intact."""
    from protocol import runtime
    from protocol.runtime import TaskRuntime

    (run_dir / "k.toml").write_text("[kernel]\nphysical_pages = 64\n")
    k = procs.python(["-m", "kernel", "--run-dir", str(run_dir), "--config",
                      str(run_dir / "k.toml")], name="kernel")
    wait_for(lambda: (run_dir / "kernel.ready").exists() or k.p.poll() is not None, 30,
             what="kernel ready")
    assert k.p.poll() is None, k.output()
    d = procs.python(["-m", "translators.defpager", "--run-dir", str(run_dir),
                      "--swap-size", "4", "--stats-interval", "0"], name="defpager")
    wait_for(lambda: (run_dir / "defpager.ready").exists() or d.p.poll() is not None, 30,
             what="defpager ready")
    assert d.p.poll() is None, d.output()
    rt = TaskRuntime(runtime.kernel_endpoint(run_dir), "client")
    try:
        n = 192
        addr = V.vm_allocate(rt.task_self, 0, n * P, True, rt=rt)
        for i in range(n):
            V.vm_write(rt.task_self, addr + i * P, bytes([i % 251 + 1]) * P, rt=rt)
        bad = [i for i in range(n)
               if bytes(V.vm_read(rt.task_self, addr + i * P, P, rt=rt))
               != bytes([i % 251 + 1]) * P]
        assert bad == []
        st = V.vm_statistics(rt.task_self, rt=rt)
        assert st["pageouts"] > 0 and st["pageins"] > 0
        V.vm_deallocate(rt.task_self, addr, n * P, rt=rt)
    finally:
        rt.close()
    d.kill(signal.SIGTERM)
    assert d.p.wait(20) == 0, d.output()
    log = (run_dir / "defpager.log").read_text()
    assert '"objects_created": 1' in log and '"bytes_written": 0' not in log
