"""Who gives back a data_return's pages, and when (libpager/data-return.c munmaps them
after the write): the handler takes the message's out-of-line region over from the
server loop and vm_deallocates it itself — a dirty run only once it is written
(successfully or not), a clean or refused run at once — exactly once, and leaves the
message nothing for the server loop to give back.  Then the runtime's half: a message
received with keep_ool keeps its regions until release_ool, take_ool takes them.

No kernel: libpager's calls go to the recording Kernel of test_libpager."""

from __future__ import annotations

import threading

import pytest

from protocol import message as M
from protocol import runtime as R
from protocol.defs import memory_object as MO
from protocol.defs.fs import ENOSPC
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE
from tests.unit.test_libpager import CONTROL, PORT, WAIT, MultiOps, Ops, Rig, page
from translators import libpager as PG

pytestmark = pytest.mark.timeout(30)

P = PAGE_SIZE
ADDR = 0x7000_0000  # where the kernel mapped the run in the pager's map


@pytest.fixture
def rigs():
    """Pagers in kernel-less buckets (test_libpager's Rig); none may call the kernel
    with its lock held."""
    made = []

    def make(ops=None, **kw):
        made.append(Rig(ops if ops is not None else Ops(), **kw))
        return made[-1]

    yield make
    for r in made:
        assert r.kernel.violations == []


def data_return_msg(offset, data, dirty=True, kernel_copy=False, control=CONTROL):
    """A data_return as the server loop received it: its data mapped at ADDR."""
    r = MO.memory_object_data_return
    body, descs, ool = r.encode_request([control, offset, data, dirty, kernel_copy])
    return M.Message(msgh_id=r.msgh_id, local_port=PORT, local_disp=r.dest_disp,
                     descs=descs, body=body, ool=ool, sender=M.KERNEL_SENDER,
                     ool_addrs=[ADDR])


def serve_in_thread(r, msg):
    t = threading.Thread(target=r.demux.serve, args=(msg,), daemon=True)
    t.start()
    return t


def deallocs(r):
    return r.kernel.of("vm_deallocate")


def test_dirty_run_is_deallocated_after_it_is_written_not_before(rigs):
    ops = MultiOps()
    ops.write_gate = threading.Event()
    r = rigs(ops)
    msg = data_return_msg(2 * P, page(7, 3))
    t = serve_in_thread(r, msg)
    assert ops.writing.wait(WAIT)
    # Being written: the pages are still ours, and the server loop has nothing to free.
    assert deallocs(r) == [] and msg.ool_addrs == []
    ops.write_gate.set()
    t.join(WAIT)
    assert not t.is_alive()
    assert deallocs(r) == [("vm_deallocate", ADDR, 3 * P)]
    assert ops.store[2 * P] == page(7)
    assert r.pager.stats["ool_deallocated"] == 1


def test_one_page_writes_deallocate_once_after_the_last_page(rigs):
    """Without a multi-page write (ext2fs --write-mode page): one write_page per page,
    the region goes after the last one."""
    ops = Ops()
    r = rigs(ops)
    order = []
    ops_write = ops.write_page

    def write_page(pager, offset, data):
        order.append(("write", offset))
        ops_write(pager, offset, data)

    ops.write_page = write_page
    kernel_rec = r.kernel._rec

    def rec(*call):
        if call[0] == "vm_deallocate":
            order.append(("vm_deallocate",))
        kernel_rec(*call)

    r.kernel._rec = rec
    r.demux.serve(data_return_msg(0, page(1, 4)))
    assert order == [("write", i * P) for i in range(4)] + [("vm_deallocate",)]


def test_failed_write_still_gives_the_pages_back(rigs):
    ops = MultiOps()
    ops.write_error = MachError(ENOSPC)
    r = rigs(ops)
    r.demux.serve(data_return_msg(0, page(3, 2)))
    assert r.pager.stats["write_errors"] == 2
    assert deallocs(r) == [("vm_deallocate", ADDR, 2 * P)]


def test_clean_run_is_deallocated_without_a_write(rigs):
    ops = Ops()
    r = rigs(ops, notify_on_evict=True)
    r.demux.serve(data_return_msg(0, page(0, 2), dirty=False))
    assert ops.writes == [] and ops.evicted == [(0, 2 * P)]
    assert deallocs(r) == [("vm_deallocate", ADDR, 2 * P)]


def test_refused_run_is_deallocated_too(rigs):
    """A data_return for a stale control port is dropped; data-return.c then leaves the
    pages mapped for good (its release_out path) — a leak not copied."""
    r = rigs()
    msg = data_return_msg(0, page(1), control=999)
    r.demux.serve(msg)
    assert r.ops.writes == [] and r.pager.stats["dropped"] == 1
    assert deallocs(r) == [("vm_deallocate", ADDR, P)] and msg.ool_addrs == []


def test_page_a_data_request_waits_for_is_supplied_before_the_region_goes(rigs):
    ops = Ops()
    ops.write_gate = threading.Event()
    r = rigs(ops)
    t = serve_in_thread(r, data_return_msg(2 * P, page(9)))
    assert ops.writing.wait(WAIT)
    r.send(MO.memory_object_data_request, CONTROL, 2 * P, P, 1)
    ops.write_gate.set()
    t.join(WAIT)
    kinds = [c[0] for c in r.kernel.calls if c[0] in ("data_supply", "vm_deallocate")]
    assert kinds == ["data_supply", "vm_deallocate"]


def test_a_failing_vm_deallocate_is_counted_not_raised(rigs):
    r = rigs(MultiOps())

    def refuse(address, size):
        raise MachError(R.MachMsgReturn.MACH_SEND_INVALID_DEST)

    r.kernel.vm_deallocate = refuse
    r.demux.serve(data_return_msg(0, page(4)))
    assert r.ops.store[0] == page(4)
    assert r.pager.stats["ool_dealloc_errors"] == 1
    assert r.pager.stats["handler_errors"] == 0


def test_a_handler_without_a_message_deallocates_nothing(rigs):
    """Called outside a server loop (no current message): no region to give back."""
    r = rigs(MultiOps())
    r.send(MO.memory_object_data_return, CONTROL, 0, page(5), True, False)
    assert r.ops.store[0] == page(5) and deallocs(r) == []


# ---------------------------------------------------------------- the runtime's half

class _Runtime(R.TaskRuntime):
    """A TaskRuntime's deallocation queue without a kernel connection."""

    def __init__(self):
        self._dealloc = []
        self._dealloc_lock = threading.Lock()


def received(frames, addrs):
    return M.Message(msgh_id=1, ool=list(frames), ool_addrs=list(addrs))


def test_release_ool_queues_the_regions_for_the_next_trap_once():
    rt = _Runtime()
    msg = received([bytes(3 * P), b"small"], [ADDR, 0])
    rt.release_ool(msg)
    assert rt._dealloc == [ADDR, 3 * P] and msg.ool_addrs == []
    rt.release_ool(msg)
    assert rt._dealloc == [ADDR, 3 * P]


def test_take_ool_hands_the_regions_over_whole_pages():
    rt = _Runtime()
    msg = received([bytes(2 * P + 100), bytes(P)], [ADDR, ADDR + 8 * P])
    assert rt.take_ool(msg) == [(ADDR, 3 * P), (ADDR + 8 * P, P)]
    rt.release_ool(msg)
    assert rt._dealloc == [] and R.take_ool(msg) == [] and R.take_ool(None) == []


def test_libpager_exports_the_current_message():
    assert PG.pager.current_message() is None
