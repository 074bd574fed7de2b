"""libpager without a kernel: the pagemap state machine and every handler's effects.

Messages are encoded with the real memory_object routine definitions and served by the
real PagerDemuxer (libports' demuxer underneath); only the calls libpager makes to the
kernel go to ``Kernel``, which records them and checks, on every call, that the calling
thread does not hold the pager's lock.
"""

from __future__ import annotations

import errno
import threading

import pytest

from protocol import message as M
from protocol.defs import mach as V
from protocol.defs import memory_object as MO
from protocol.defs.fs import EIO, ENOSPC
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE
from tests.conftest import wait_for
from translators import libpager as PG
from translators.libpager import pagemap as PMAP
from translators.libpager import writeback as WB
from translators.libports import EOPNOTSUPP, PortBucket, PortInfo, ports_create_class

pytestmark = pytest.mark.timeout(30)

P = PAGE_SIZE
PORT, CONTROL, NAME = 500, 600, 601
WAIT = 10.0  # generous deadline for thread hand-offs (never reached when correct)


class Kernel:
    """The KernelCalls seam: records (call, args...) and every lock violation."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.violations: list[str] = []
        self.pager = None
        self.on_lock_request = None
        self.cond = threading.Condition()

    def _rec(self, *call):
        if self.pager is not None and self.pager.interlock_held():
            self.violations.append(call[0])
        with self.cond:
            self.calls.append(call)
            self.cond.notify_all()

    def ready(self, control, may_cache, copy_strategy):
        self._rec("ready", control, may_cache, copy_strategy)

    def data_supply(self, control, offset, data, lock_value, precious, reply_to=0):
        self._rec("data_supply", control, offset, bytes(data), lock_value, precious,
                  reply_to)

    def data_unavailable(self, control, offset, size):
        self._rec("data_unavailable", control, offset, size)

    def data_error(self, control, offset, size, error):
        self._rec("data_error", control, offset, size, error)

    def lock_request(self, control, offset, size, should_return, should_flush, lock_value,
                     reply_to=0):
        self._rec("lock_request", control, offset, size, should_return, should_flush,
                  lock_value, reply_to)
        if self.on_lock_request is not None:
            self.on_lock_request(offset, size)

    def change_attributes(self, control, may_cache, copy_strategy, reply_to=0):
        self._rec("change_attributes", control, may_cache, copy_strategy, reply_to)

    def destroy_object(self, control, reason):
        self._rec("destroy_object", control, reason)

    def deallocate(self, name):
        self._rec("deallocate", name)

    def vm_deallocate(self, address, size):
        self._rec("vm_deallocate", address, size)

    def mod_refs(self, name, delta):
        self._rec("mod_refs", name, delta)

    def released(self, name) -> int:
        """User references to ``name`` given back, by deallocate or mod_refs."""
        return sum(1 if c[0] == "deallocate" else -c[2] for c in self.calls
                   if c[0] in ("deallocate", "mod_refs") and c[1] == name)

    def destroy(self, name):
        self._rec("destroy", name)

    def of(self, kind):
        return [c for c in self.calls if c[0] == kind]

    def wait_for(self, kind, n=1):
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.of(kind)) >= n, WAIT)
        assert ok, f"no {kind} call; calls: {self.calls}"
        return self.of(kind)


class Ops(PG.PagerOps):
    """A file of ``size`` bytes in a dict; optional hooks to block or fail."""

    def __init__(self, size=64 * P, write_lock=False):
        self.size = size
        self.store: dict[int, bytes] = {}
        self.write_lock = write_lock
        self.reads: list[int] = []
        self.writes: list[tuple[int, int]] = []  # (offset, length) per call
        self.unlocks: list[tuple[int, int]] = []
        self.evicted: list[tuple[int, int]] = []
        self.cleared = 0
        self.read_error = None
        self.write_error = None
        self.unlock_error = None
        self.write_gate: threading.Event | None = None
        self.writing = threading.Event()

    def read_page(self, pager, offset, length):
        self.reads.append(offset)
        if self.read_error:
            raise self.read_error
        return self.store.get(offset, bytes(length)), self.write_lock

    def _store(self, offset, data):
        self.writing.set()
        if self.write_gate is not None:
            assert self.write_gate.wait(WAIT)
        if self.write_error:
            raise self.write_error
        for i in range(0, len(data), P):
            self.store[offset + i] = bytes(data[i:i + P])

    def write_page(self, pager, offset, data):
        assert len(data) == P
        self.writes.append((offset, len(data)))
        self._store(offset, data)

    def unlock_page(self, pager, offset, length):
        self.unlocks.append((offset, length))
        if self.unlock_error:
            raise self.unlock_error

    def report_extent(self, pager):
        return self.size

    def notify_evict(self, pager, offset, length):
        self.evicted.append((offset, length))

    def clear_user_data(self, pager):
        self.cleared += 1


class MultiOps(Ops):
    def write_pages(self, pager, offset, data):
        self.writes.append((offset, len(data)))
        self._store(offset, data)


class Rig:
    """One pager in a kernel-less bucket, served by a PagerDemuxer."""

    def __init__(self, ops, init=True, **kw):
        self.bucket = PortBucket()
        self.kernel = Kernel()
        self.ops = ops
        self.pager = PG.pager_import(ops, self.bucket, PORT, True,
                                     V.MEMORY_OBJECT_COPY_DELAY, kernel=self.kernel, **kw)
        self.kernel.pager = self.pager
        self.demux = PG.PagerDemuxer(self.bucket)
        if init:
            self.send(MO.memory_object_init, CONTROL, NAME, P)

    def send(self, routine, *args, port=PORT, seqno=0, ool_addrs=()):
        """Serve the message; ``ool_addrs``: where the kernel would have mapped its
        out-of-line data in our map."""
        body, descs, ool = routine.encode_request(list(args))
        msg = M.Message(msgh_id=routine.msgh_id, local_port=port,
                        local_disp=routine.dest_disp, descs=descs, body=body, ool=ool,
                        seqno=seqno, sender=M.KERNEL_SENDER, ool_addrs=list(ool_addrs))
        return self.demux.serve(msg)

    def in_thread(self, routine, *args, **kw):
        t = threading.Thread(target=self.send, args=(routine, *args), kwargs=kw,
                             daemon=True)
        t.start()
        return t

    def pm(self, offset):
        return self.pager.pagemap[offset // P]


def page(byte, n=1):
    return bytes([byte]) * (P * n)


@pytest.fixture
def rigs():
    made = []

    def make(ops=None, **kw):
        r = Rig(ops if ops is not None else Ops(), **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        assert r.kernel.violations == [], f"kernel called with the pager lock held: " \
                                          f"{r.kernel.violations}"


# ---------------------------------------------------------------- pagemap

def test_pagemap_flags_and_error_fields():
    assert (PG.PM_WRITEWAIT, PG.PM_INIT, PG.PM_INCORE, PG.PM_PAGINGOUT, PG.PM_PAGEINWAIT,
            PG.PM_INVALID) == (0x200, 0x100, 0x80, 0x40, 0x20, 0x10)
    e = PMAP.SET_PM_ERROR(PG.PM_INCORE, PMAP.PAGE_EIO)
    assert PMAP.PM_ERROR(e) == PMAP.PAGE_EIO and e & PG.PM_INCORE
    e = PMAP.SET_PM_NEXTERROR(e, PMAP.PAGE_ENOSPC)
    assert PMAP.PM_NEXTERROR(e) == PMAP.PAGE_ENOSPC and PMAP.PM_ERROR(e) == PMAP.PAGE_EIO
    e = PMAP.SET_PM_ERROR(PMAP.SET_PM_NEXTERROR(e, 0), 0)
    assert e == PG.PM_INCORE
    assert PMAP.page_error(ENOSPC) == PMAP.PAGE_ENOSPC
    assert PMAP.page_error(PMAP.EDQUOT) == PMAP.PAGE_EDQUOT
    assert PMAP.page_error(12345) == PMAP.PAGE_EIO and PMAP.page_error(0) == 0
    assert PMAP.page_error_code(PMAP.PAGE_ENOSPC) == ENOSPC
    assert PMAP.flag_names(PG.PM_INCORE | PG.PM_PAGINGOUT) == ["incore", "pagingout"]


def test_pagemap_is_sparse():
    pm = PG.PageMap()
    assert pm[10**12] == 0 and len(pm) == 0
    pm.set(3, PG.PM_INCORE)
    pm.set(3, PG.PM_PAGINGOUT)
    pm.set(5, PG.PM_INCORE)
    assert pm[3] == PG.PM_INCORE | PG.PM_PAGINGOUT
    assert pm.any(0, 4, PG.PM_PAGINGOUT) and not pm.any(4, 10, PG.PM_PAGINGOUT)
    assert pm.count(PG.PM_INCORE) == 2
    pm.clear(3, PG.PM_INCORE | PG.PM_PAGINGOUT)
    assert len(pm) == 1  # zero entries are dropped
    pm.reset()
    assert len(pm) == 0


# ---------------------------------------------------------------- init / demux

def test_init_records_control_and_answers_ready(rigs):
    r = rigs()
    p = r.pager
    assert p.pager_state == PG.NORMAL
    assert (p.memobjcntl, p.memobjname) == (CONTROL, NAME)
    assert r.kernel.calls == [("ready", CONTROL, True, V.MEMORY_OBJECT_COPY_DELAY)]


def test_duplicate_init_is_refused_and_its_rights_released(rigs):
    r = rigs()
    r.send(MO.memory_object_init, 700, 701, P)
    assert r.pager.memobjcntl == CONTROL
    assert r.kernel.of("ready") == [("ready", CONTROL, True, V.MEMORY_OBJECT_COPY_DELAY)]
    assert r.kernel.of("deallocate") == [("deallocate", 700)]


def test_bad_page_size_init_gets_no_ready(rigs):
    r = rigs(init=False)
    r.send(MO.memory_object_init, CONTROL, NAME, 8192)
    assert r.pager.pager_state == PG.NOTINIT and r.kernel.of("ready") == []


def test_every_message_but_init_drops_its_control_reference(rigs):
    r = rigs()
    r.send(MO.memory_object_data_request, CONTROL, 0, P, V.VM_PROT_READ)
    r.send(MO.memory_object_data_return, CONTROL, 0, page(1), True, False)
    r.send(MO.memory_object_data_unlock, CONTROL, 0, P, V.VM_PROT_WRITE)
    r.send(MO.memory_object_lock_completed, CONTROL, 0, P)
    r.send(MO.memory_object_supply_completed, CONTROL, 0, P, 0, 0)
    r.send(MO.memory_object_change_completed, True, 2)  # carries no control
    # owed, given back in one batch (one mach_port_mod_refs, not an RPC per message)
    assert r.kernel.of("deallocate") == [] and r.pager.control_refs_owed == 5
    for _ in range(PG.demuxer.CONTROL_REFS_BATCH - 5):
        r.send(MO.memory_object_data_request, CONTROL, 0, P, V.VM_PROT_READ)
    assert r.kernel.of("mod_refs") == [("mod_refs", CONTROL, -PG.demuxer.CONTROL_REFS_BATCH)]
    assert r.pager.control_refs_owed == 0


def test_message_to_a_port_that_is_not_a_pager_is_eopnotsupp():
    r = Rig(Ops())
    other = PortInfo(ports_create_class(name="file"), r.bucket, 900, data=object())
    r.bucket._enter(other)
    r.send(MO.memory_object_data_request, CONTROL, 0, P, 1, port=900)
    assert r.demux.stats["errors"] == 1
    assert not r.kernel.of("data_supply")


def test_pager_demux_maps_every_memory_object_routine():
    d = PG.pager_demux()
    for rt in (MO.memory_object_init, MO.memory_object_terminate,
               MO.memory_object_data_request, MO.memory_object_data_unlock,
               MO.memory_object_data_return, MO.memory_object_lock_completed,
               MO.memory_object_supply_completed, MO.memory_object_change_completed):
        assert d.handles(rt.msgh_id), rt


# ---------------------------------------------------------------- data_request

def test_data_request_supplies_the_page_unlocked_and_not_precious(rigs):
    ops = Ops()
    ops.store[3 * P] = page(7)
    r = rigs(ops)
    r.send(MO.memory_object_data_request, CONTROL, 3 * P, P, V.VM_PROT_READ)
    assert r.kernel.of("data_supply") == [
        ("data_supply", CONTROL, 3 * P, page(7), V.VM_PROT_NONE, False, 0)]
    assert r.pm(3 * P) & PG.PM_INCORE
    assert r.pager.stats["data_requests"] == 1 and r.pager.stats["data_supplies"] == 1


def test_data_request_write_locked_and_precious(rigs):
    r = rigs(Ops(write_lock=True), notify_on_evict=True)
    r.send(MO.memory_object_data_request, CONTROL, 0, P, V.VM_PROT_READ)
    (_, _, _, data, lock, precious, _), = r.kernel.of("data_supply")
    assert data == bytes(P) and lock == V.VM_PROT_WRITE and precious is True


def test_precious_without_eviction_notices(rigs):
    r = rigs(precious=True)
    r.send(MO.memory_object_data_request, CONTROL, 0, P, V.VM_PROT_READ)
    assert r.kernel.of("data_supply")[0][5] is True


def test_short_read_is_zero_padded(rigs):
    ops = Ops()
    ops.store[0] = b"abc"
    r = rigs(ops)
    r.send(MO.memory_object_data_request, CONTROL, 0, P, V.VM_PROT_READ)
    assert r.kernel.of("data_supply")[0][3] == b"abc" + bytes(P - 3)


def test_read_error_becomes_data_error(rigs):
    ops = Ops()
    ops.read_error = OSError(errno.ENOSPC, "full")
    r = rigs(ops)
    r.send(MO.memory_object_data_request, CONTROL, P, P, V.VM_PROT_READ)
    assert r.kernel.of("data_error") == [("data_error", CONTROL, P, P, ENOSPC)]
    assert not r.pm(P) & PG.PM_INCORE and PG.pager_get_error(r.pager, P) == ENOSPC
    ops.read_error = RuntimeError("anything else")
    r.send(MO.memory_object_data_request, CONTROL, 2 * P, P, V.VM_PROT_READ)
    assert r.kernel.of("data_error")[-1] == ("data_error", CONTROL, 2 * P, P, EIO)
    assert r.pager.stats["read_errors"] == 2


def test_page_error_is_known_before_the_kernel_is_told(rigs):
    """A faulting thread woken by data_error may ask pager_get_error at once: the
    pagemap must already hold the error when data_error goes out."""
    ops = Ops()
    ops.read_error = OSError(errno.ENOSPC, "full")
    r = rigs(ops)
    seen = []
    r.kernel.data_error = lambda control, offset, size, error: seen.append(
        PG.pager_get_error(r.pager, offset))
    r.send(MO.memory_object_data_request, CONTROL, P, P, V.VM_PROT_READ)
    assert seen == [ENOSPC]


def test_read_page_none_is_data_unavailable(rigs):
    class Holes(Ops):
        def read_page(self, pager, offset, length):
            return None

    r = rigs(Holes())
    r.send(MO.memory_object_data_request, CONTROL, 5 * P, P, V.VM_PROT_READ)
    assert r.kernel.of("data_unavailable") == [("data_unavailable", CONTROL, 5 * P, P)]
    assert not r.kernel.of("data_supply")


def test_misaligned_request_and_wrong_control(rigs):
    r = rigs()
    r.send(MO.memory_object_data_request, CONTROL, 100, P, V.VM_PROT_READ)
    assert r.kernel.of("data_error")[0][:3] == ("data_error", CONTROL, 100)
    r.send(MO.memory_object_data_request, 999, 0, P, V.VM_PROT_READ)
    assert r.ops.reads == [] and ("deallocate", 999) in r.kernel.calls


def test_data_request_while_paging_out_is_supplied_by_the_writer(rigs):
    ops = Ops()
    ops.write_gate = threading.Event()
    r = rigs(ops)
    writer = r.in_thread(MO.memory_object_data_return, CONTROL, 2 * P, page(9), True,
                         False)
    assert ops.writing.wait(WAIT)
    assert r.pm(2 * P) & PG.PM_PAGINGOUT
    r.send(MO.memory_object_data_request, CONTROL, 2 * P, P, V.VM_PROT_READ)
    # Not read from the store (its contents are not right yet), not supplied yet.
    assert ops.reads == [] and r.kernel.of("data_supply") == []
    assert r.pm(2 * P) & PG.PM_PAGEINWAIT
    assert r.pager.stats["pagein_waits"] == 1
    ops.write_gate.set()
    writer.join(WAIT)
    assert not writer.is_alive()
    assert r.kernel.of("data_supply") == [
        ("data_supply", CONTROL, 2 * P, page(9), V.VM_PROT_NONE, False, 0)]
    e = r.pm(2 * P)
    assert e & PG.PM_INCORE and e & PG.PM_INIT
    assert not e & (PG.PM_PAGINGOUT | PG.PM_PAGEINWAIT | PG.PM_WRITEWAIT)


# ---------------------------------------------------------------- data_return

def test_five_page_run_is_one_write_pages_call(rigs):
    ops = MultiOps()
    r = rigs(ops)
    data = b"".join(page(i + 1) for i in range(5))
    r.send(MO.memory_object_data_return, CONTROL, 4 * P, data, True, False)
    assert ops.writes == [(4 * P, 5 * P)]
    assert [ops.store[(4 + i) * P] for i in range(5)] == [page(i + 1) for i in range(5)]
    st = r.pager.stats
    assert (st["write_calls"], st["pages_written"], st["pages_returned"]) == (1, 5, 5)
    for i in range(5):
        e = r.pm((4 + i) * P)
        assert e & PG.PM_INIT and not e & (PG.PM_PAGINGOUT | PG.PM_INCORE)


def test_five_page_run_without_multi_page_write_is_five_write_page_calls(rigs):
    ops = Ops()
    r = rigs(ops)
    data = b"".join(page(i + 1) for i in range(5))
    r.send(MO.memory_object_data_return, CONTROL, 4 * P, data, True, False)
    assert ops.writes == [((4 + i) * P, P) for i in range(5)]
    assert r.pager.stats["write_calls"] == 5 and r.pager.stats["pages_written"] == 5


def test_kernel_copy_keeps_the_page_in_core(rigs):
    r = rigs()
    r.send(MO.memory_object_data_request, CONTROL, 0, P, V.VM_PROT_READ)
    r.send(MO.memory_object_data_return, CONTROL, 0, page(3), True, True)
    assert r.pm(0) & PG.PM_INCORE
    r.send(MO.memory_object_data_return, CONTROL, 0, page(4), True, False)
    assert not r.pm(0) & PG.PM_INCORE and r.ops.store[0] == page(4)


def test_write_error_marks_pages_invalid_and_later_reads_fail(rigs):
    ops = MultiOps()
    ops.write_error = OSError(errno.ENOSPC, "disk full")
    r = rigs(ops)
    r.send(MO.memory_object_data_return, CONTROL, 0, page(1, 2), True, False)
    for off in (0, P):
        e = r.pm(off)
        assert e & PG.PM_INVALID and PMAP.PM_ERROR(e) == PMAP.PAGE_ENOSPC
        assert not e & PG.PM_PAGINGOUT
    assert r.pager.stats["write_errors"] == 2 and r.pager.stats["pages_written"] == 0
    r.send(MO.memory_object_data_request, CONTROL, P, P, V.VM_PROT_READ)
    assert ops.reads == []
    assert r.kernel.of("data_error") == [("data_error", CONTROL, P, P, ENOSPC)]
    # A later successful write makes the page valid again.
    ops.write_error = None
    r.send(MO.memory_object_data_return, CONTROL, P, page(2), True, False)
    assert not r.pm(P) & PG.PM_INVALID and PG.pager_get_error(r.pager, P) == 0


def test_second_return_of_a_page_waits_for_the_first_write(rigs):
    ops = Ops()
    ops.write_gate = threading.Event()
    r = rigs(ops)
    first = r.in_thread(MO.memory_object_data_return, CONTROL, 0, page(1), True, False)
    assert ops.writing.wait(WAIT)
    second = r.in_thread(MO.memory_object_data_return, CONTROL, 0, page(2), True, False)
    wait_for(lambda: r.pm(0) & PG.PM_WRITEWAIT, WAIT, what="second return waiting")
    assert ops.writes == [(0, P)]  # the second has not started writing
    ops.write_gate.set()
    first.join(WAIT)
    second.join(WAIT)
    assert ops.writes == [(0, P), (0, P)] and ops.store[0] == page(2)
    assert r.pager.stats["write_waits"] >= 1 and r.pm(0) & PG.PM_INIT


def test_clean_precious_return_is_not_written_but_notified(rigs):
    ops = Ops()
    r = rigs(ops, notify_on_evict=True)
    r.send(MO.memory_object_data_request, CONTROL, 0, P, V.VM_PROT_READ)
    r.send(MO.memory_object_data_request, CONTROL, P, P, V.VM_PROT_READ)
    r.send(MO.memory_object_data_return, CONTROL, 0, page(0, 2), False, False)
    assert ops.writes == [] and ops.evicted == [(0, 2 * P)]
    assert not r.pm(0) & PG.PM_INCORE and r.pager.stats["evictions"] == 2
    assert r.pager.stats["clean_returns"] == 1


def test_clean_return_without_notices_or_with_kernel_copy(rigs):
    ops = Ops()
    r = rigs(ops)
    r.send(MO.memory_object_data_return, CONTROL, 0, page(0), False, False)
    assert ops.writes == [] and ops.evicted == []
    r2 = rigs(Ops(), notify_on_evict=True)
    r2.send(MO.memory_object_data_return, CONTROL, 0, page(0), False, True)
    assert r2.ops.evicted == []


def test_dirty_return_with_notices_notifies_after_writing(rigs):
    ops = MultiOps()
    r = rigs(ops, notify_on_evict=True)
    r.send(MO.memory_object_data_return, CONTROL, P, page(5, 3), True, False)
    assert ops.writes == [(P, 3 * P)] and ops.evicted == [(P, 3 * P)]


def test_write_clean_writes_clean_returns(rigs):
    ops = Ops()
    r = rigs(ops, precious=True, write_clean=True)
    r.send(MO.memory_object_data_return, CONTROL, 0, page(6), False, False)
    assert ops.store[0] == page(6)


# ---------------------------------------------------------------- data_unlock

def test_data_unlock_allocates_and_lowers_the_lock(rigs):
    ops = Ops()
    r = rigs(ops)
    r.send(MO.memory_object_data_unlock, CONTROL, 2 * P, P, V.VM_PROT_WRITE)
    assert ops.unlocks == [(2 * P, P)]
    assert r.kernel.of("lock_request") == [
        ("lock_request", CONTROL, 2 * P, P, V.MEMORY_OBJECT_RETURN_NONE, False,
         V.VM_PROT_NONE, 0)]
    assert r.pager.stats["unlocks"] == 1


def test_advisory_unlock_hint_unlocks_then_starts_a_writeback(rigs):
    """A length of PAGE_SIZE + 1 (the advisory kernel's hint, 666299d0): the page is
    unlocked as for PAGE_SIZE, then the process's writeback thread asks back, one
    window of DATA_WRITE_MAX pages at a time and waiting for each (RETURN_ALL, no
    flush, lock unchanged, reply to us), the windows holding pages write-unlocked since
    they were last written; a written page leaves that set."""
    W = WB.DATA_WRITE_MAX * P
    ops = Ops(size=3 * W)
    r = rigs(ops)
    r.send(MO.memory_object_data_unlock, CONTROL, 2 * W + P, P, V.VM_PROT_WRITE)  # no hint
    r.send(MO.memory_object_data_unlock, CONTROL, 2 * P, P + 1, V.VM_PROT_WRITE)
    assert ops.unlocks == [(2 * W + P, P), (2 * P, P)]
    calls = r.kernel.wait_for("lock_request", 3)
    assert calls[1:] == [
        ("lock_request", CONTROL, 2 * P, P, V.MEMORY_OBJECT_RETURN_NONE, False,
         V.VM_PROT_NONE, 0),
        ("lock_request", CONTROL, 0, W, V.MEMORY_OBJECT_RETURN_ALL, False,
         V.VM_PROT_NO_CHANGE, PORT)]
    # The kernel returns the dirty page; the next window is asked only once this one
    # is done; window 1 has no unlocked page and is skipped.
    r.send(MO.memory_object_data_return, CONTROL, 2 * P, page(5), True, False)
    assert not r.pager.pagemap[2] & PMAP.PM_UNLOCKED
    assert len(r.kernel.of("lock_request")) == 3
    r.send(MO.memory_object_lock_completed, CONTROL, 0, W)
    calls = r.kernel.wait_for("lock_request", 4)
    assert calls[3] == ("lock_request", CONTROL, 2 * W, W, V.MEMORY_OBJECT_RETURN_ALL,
                        False, V.VM_PROT_NO_CHANGE, PORT)
    r.send(MO.memory_object_lock_completed, CONTROL, 2 * W, W)
    st = r.pager.stats
    wait_for(lambda: st["writebacks"] == 1 and st["writeback_windows"] == 2, WAIT,
             what="the writeback done")
    assert st["writeback_hints"] == 1 and st["dropped"] == 0
    assert ops.store[2 * P] == page(5)


def test_advisory_hints_for_a_queued_pager_are_merged(rigs):
    """Hints for a pager already waiting for the writeback thread add nothing."""
    ops = Ops(size=4 * P)
    r = rigs(ops)
    r.send(MO.memory_object_data_unlock, CONTROL, 0, P + 1, V.VM_PROT_WRITE)
    r.kernel.wait_for("lock_request", 2)  # the unlock, the first window (under way)
    for _ in range(3):  # queued behind it, once
        r.send(MO.memory_object_data_unlock, CONTROL, 0, P + 1, V.VM_PROT_WRITE)
    assert r.pager.stats["writeback_hints_merged"] == 2
    r.send(MO.memory_object_lock_completed, CONTROL, 0, WB.DATA_WRITE_MAX * P)
    r.kernel.wait_for("lock_request", 6)
    r.send(MO.memory_object_lock_completed, CONTROL, 0, WB.DATA_WRITE_MAX * P)
    wait_for(lambda: r.pager.stats["writebacks"] == 2, WAIT, what="two writebacks")


def test_failed_unlock_flushes_write_locked_and_fails_next_write_request(rigs):
    ops = Ops()
    ops.unlock_error = MachError(ENOSPC)
    r = rigs(ops)
    r.send(MO.memory_object_data_unlock, CONTROL, 0, P, V.VM_PROT_WRITE)
    assert r.kernel.of("lock_request") == [
        ("lock_request", CONTROL, 0, P, V.MEMORY_OBJECT_RETURN_NONE, True,
         V.VM_PROT_WRITE, 0)]
    assert PMAP.PM_NEXTERROR(r.pm(0)) == PMAP.PAGE_ENOSPC
    r.send(MO.memory_object_data_request, CONTROL, 0, P, V.VM_PROT_READ | V.VM_PROT_WRITE)
    assert r.kernel.of("data_error") == [("data_error", CONTROL, 0, P, ENOSPC)]
    # Reported once: the next request reads the page again.
    r.send(MO.memory_object_data_request, CONTROL, 0, P, V.VM_PROT_READ)
    assert len(r.kernel.of("data_supply")) == 1


# ---------------------------------------------------------------- sync & co.

def test_pager_sync_waits_for_lock_completed(rigs):
    r = rigs(Ops(size=10 * P + 1))
    assert PG.pager_sync(r.pager, wait=True, timeout=0.05) is False  # nobody answered
    r.kernel.calls.clear()
    done = threading.Event()
    result = []
    t = threading.Thread(target=lambda: (result.append(PG.pager_sync(r.pager)), done.set()),
                         daemon=True)
    t.start()
    (call,) = r.kernel.wait_for("lock_request")
    # Whole pages over the extent, return all, no flush, lock unchanged, reply to us.
    assert call == ("lock_request", CONTROL, 0, 11 * P, V.MEMORY_OBJECT_RETURN_ALL, False,
                    V.VM_PROT_NO_CHANGE, PORT)
    assert not done.is_set()
    r.send(MO.memory_object_lock_completed, CONTROL, 0, 11 * P)
    assert done.wait(WAIT) and result == [True]
    assert r.pager.lock_requests == []


def test_pager_sync_waits_for_data_returns_in_flight(rigs):
    ops = MultiOps()
    ops.write_gate = threading.Event()
    r = rigs(ops)
    done = threading.Event()
    t = threading.Thread(target=lambda: (PG.pager_sync_some(r.pager, 0, 4 * P),
                                         done.set()), daemon=True)
    t.start()
    r.kernel.wait_for("lock_request")
    writer = r.in_thread(MO.memory_object_data_return, CONTROL, P, page(8, 2), True, True)
    assert ops.writing.wait(WAIT)
    r.send(MO.memory_object_lock_completed, CONTROL, 0, 4 * P)
    (lr,) = r.pager.lock_requests
    assert lr.locks_pending == 0 and lr.pending_writes == 1
    assert not done.is_set()
    ops.write_gate.set()
    assert done.wait(WAIT)
    writer.join(WAIT)
    assert ops.store[P] == page(8)


def test_lock_is_not_held_during_lock_request(rigs):
    """The classic deadlock: while the kernel handles our lock_request it waits for a
    busy page whose data_request another thread of ours is serving; that handler needs
    the pager's lock."""
    ops = Ops()
    r = rigs(ops)
    served = []

    def kernel_waits_for_busy_page(offset, size):
        t = r.in_thread(MO.memory_object_data_request, CONTROL, 0, P, V.VM_PROT_READ)
        t.join(WAIT)
        served.append(not t.is_alive())

    r.kernel.on_lock_request = kernel_waits_for_busy_page
    PG.pager_sync(r.pager, wait=False)
    assert served == [True]
    assert r.kernel.of("data_supply")


def test_flush_and_return_requests(rigs):
    r = rigs(Ops(size=2 * P))
    r.send(MO.memory_object_data_request, CONTROL, 0, P, V.VM_PROT_READ)
    assert r.pm(0) & PG.PM_INCORE
    PG.pager_flush(r.pager, wait=False)
    PG.pager_return_some(r.pager, P, P, wait=False)
    assert r.kernel.of("lock_request") == [
        ("lock_request", CONTROL, 0, 2 * P, V.MEMORY_OBJECT_RETURN_NONE, True,
         V.VM_PROT_NO_CHANGE, 0),
        ("lock_request", CONTROL, P, P, V.MEMORY_OBJECT_RETURN_ALL, True,
         V.VM_PROT_NO_CHANGE, 0)]
    assert not r.pm(0) & PG.PM_INCORE


def test_sync_before_init_does_nothing(rigs):
    r = rigs(init=False)
    assert PG.pager_sync(r.pager) is True and r.kernel.calls == []


def test_change_attributes_waits_for_change_completed(rigs):
    r = rigs()
    done = threading.Event()
    t = threading.Thread(target=lambda: (
        PG.pager_change_attributes(r.pager, False, V.MEMORY_OBJECT_COPY_NONE, wait=True),
        done.set()), daemon=True)
    t.start()
    (call,) = r.kernel.wait_for("change_attributes")
    assert call == ("change_attributes", CONTROL, False, V.MEMORY_OBJECT_COPY_NONE, PORT)
    assert not done.is_set()
    r.send(MO.memory_object_change_completed, False, V.MEMORY_OBJECT_COPY_NONE)
    assert done.wait(WAIT)
    assert (r.pager.may_cache, r.pager.copy_strategy) == (False, V.MEMORY_OBJECT_COPY_NONE)


def test_change_attributes_before_init_goes_into_ready(rigs):
    r = rigs(init=False)
    PG.pager_change_attributes(r.pager, False, V.MEMORY_OBJECT_COPY_NONE)
    r.send(MO.memory_object_init, CONTROL, NAME, P)
    assert r.kernel.calls == [("ready", CONTROL, False, V.MEMORY_OBJECT_COPY_NONE)]


# ---------------------------------------------------------------- ordering, terminate

def test_messages_take_their_turn_by_sequence_number(rigs):
    """Under the multithread model a later message may reach a thread first: the
    data_request (seqno 2) must wait for init (seqno 1), not be refused as NOTINIT."""
    r = rigs(init=False)
    t = r.in_thread(MO.memory_object_data_request, CONTROL, 0, P, V.VM_PROT_READ, seqno=2)
    r.send(MO.memory_object_init, CONTROL, NAME, P, seqno=1)
    t.join(WAIT)
    assert not t.is_alive()
    assert [c[0] for c in r.kernel.calls] == ["ready", "data_supply"]
    assert r.pager.control_refs_owed == 1
    assert r.pager.seqno == 2


def test_non_pager_message_on_a_pager_port_takes_its_turn(rigs):
    r = rigs()
    r.send(MO.memory_object_data_request, CONTROL, 0, 4096, 1, seqno=1)
    body = M.packb([])  # a malformed lock_completed: bad arguments, no handler runs
    r.demux.serve(M.Message(msgh_id=MO.memory_object_lock_completed.msgh_id,
                            local_port=PORT, body=body, seqno=2))
    assert r.pager.seqno == 2


def test_terminate_forgets_the_object_and_destroys_the_rights(rigs):
    r = rigs()
    r.send(MO.memory_object_data_request, CONTROL, 0, P, V.VM_PROT_READ)
    r.kernel.calls.clear()
    r.send(MO.memory_object_terminate, CONTROL, NAME)
    p = r.pager
    assert p.pager_state == PG.NOTINIT and p.memobjcntl == 0 and len(p.pagemap) == 0
    assert r.kernel.calls == [("destroy", CONTROL), ("destroy", NAME)]
    # The kernel may use the object again later: a new init is accepted.
    r.send(MO.memory_object_init, 610, 611, P)
    assert p.pager_state == PG.NORMAL and p.memobjcntl == 610


def test_terminate_waits_for_handlers_using_the_pagemap(rigs):
    ops = Ops()
    ops.write_gate = threading.Event()
    r = rigs(ops)
    writer = r.in_thread(MO.memory_object_data_return, CONTROL, 0, page(1), True, False)
    assert ops.writing.wait(WAIT)
    term = r.in_thread(MO.memory_object_terminate, CONTROL, NAME)
    wait_for(lambda: r.pager.termwaiting, WAIT, what="terminate waiting")
    assert r.pager.pager_state == PG.NORMAL
    ops.write_gate.set()
    writer.join(WAIT)
    term.join(WAIT)
    assert r.pager.pager_state == PG.NOTINIT and ops.store[0] == page(1)


def test_shutdown_syncs_flushes_and_destroys_the_port(rigs):
    r = rigs(Ops(size=P))

    def answer(offset, size):  # the kernel answers each synchronous request
        threading.Thread(target=r.send, args=(MO.memory_object_lock_completed, CONTROL,
                                              offset, size), daemon=True).start()

    r.kernel.on_lock_request = answer
    PG.pager_shutdown(r.pager, timeout=WAIT)
    reqs = r.kernel.of("lock_request")
    assert [(c[4], c[5]) for c in reqs] == [(V.MEMORY_OBJECT_RETURN_ALL, False),
                                            (V.MEMORY_OBJECT_RETURN_NONE, True)]
    assert r.pager.pager_state == PG.SHUTDOWN
    assert r.bucket.lookup(PORT) is None
    assert r.kernel.released(CONTROL) >= 1


def test_last_reference_clears_user_data(rigs):
    r = rigs()
    PG.pager_deref(r.pager)
    assert r.ops.cleared == 1 and r.bucket.lookup(PORT) is None
    assert r.kernel.released(CONTROL) == 1


def test_bucket_stats_sum_pagers(rigs):
    r = rigs()
    r.send(MO.memory_object_data_request, CONTROL, 0, P, V.VM_PROT_READ)
    st = PG.pager_bucket_stats(r.bucket)
    assert st["pagers"] == 1 and st["data_requests"] == 1 and st["inits"] == 1
    snap = PG.pager_stats(r.pager)
    assert snap["pages_incore"] == 1 and snap["state"] == PG.NORMAL


def test_eopnotsupp_is_libports_value():
    assert EOPNOTSUPP == (0x10 << 26) | 45


def test_owed_control_references_are_given_back_with_the_pager(rigs):
    r = rigs()
    for _ in range(3):
        r.send(MO.memory_object_data_request, CONTROL, 0, P, V.VM_PROT_READ)
    assert r.pager.control_refs_owed == 3
    PG.pager_deref(r.pager)
    assert r.kernel.released(CONTROL) == 4  # init's reference and the three owed
