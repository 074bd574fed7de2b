"""memory_object_lock_request against a real pager (libpager in a task of this process,
served by real threads) and a real kernel: return dirty, return all, flush, and a write
lock answered by data_unlock on the next write."""

from __future__ import annotations

import threading

import pytest

from protocol.defs import mach as MD
from protocol.defs import netname as NS
from protocol.runtime import TaskRuntime
from protocol.vm_param import PAGE_SIZE
from tests.conftest import wait_for
from translators import libpager as PG
from translators import libports as LP
from translators.libpager.lock_object import _pager_lock_object

PAGE = PAGE_SIZE
NPAGES = 8


class StoreOps(PG.PagerOps):
    """A pager whose backing store is a dict; pages listed in ``locked`` are supplied
    write-locked (as holes are in ext2fs), so their first write comes back as unlock."""

    def __init__(self):
        self.store: dict[int, bytes] = {}
        self.locked: set[int] = set()
        self.writes: list[tuple[int, int]] = []
        self.unlocks: list[int] = []
        self.lock = threading.Lock()

    def read_page(self, pager, offset, length):
        with self.lock:
            return self.store.get(offset, bytes(length)), offset in self.locked

    def write_page(self, pager, offset, data):
        with self.lock:
            self.store[offset] = bytes(data)
            self.writes.append((offset, len(data)))

    def unlock_page(self, pager, offset, length):
        with self.lock:
            self.unlocks.append(offset)
            self.locked.discard(offset)

    def report_extent(self, pager):
        return NPAGES * PAGE


@pytest.fixture
def setup(kernel):
    prt = TaskRuntime(kernel, "pager")
    bucket = LP.ports_create_bucket(prt)
    demux = PG.PagerDemuxer(bucket)
    server = LP.make_server("multithread", bucket, demux, name="testpager").start()
    ops = StoreOps()
    pager = PG.pager_create(ops, bucket, False)
    port = PG.pager_get_port(pager)
    NS.netname_check_in(prt.name_server, "lockpager", port, port, rt=prt)
    crt = TaskRuntime(kernel, "client")
    memobj = NS.netname_look_up(crt.name_server, "", "lockpager", rt=crt)
    addr = MD.vm_map(crt.task_self, 0, NPAGES * PAGE, 0, True, memobj, 0, False,
                     MD.VM_PROT_DEFAULT, MD.VM_PROT_ALL, MD.VM_INHERIT_NONE, rt=crt)
    pager.demux = demux  # for the test's eyes only
    yield crt, addr, pager, ops
    crt.close()
    server.stop()
    prt.close()


def vmstat(rt):
    return MD.vm_statistics(rt.task_self, rt=rt)


@pytest.mark.timeout(120)
def test_return_dirty_return_all_flush(setup):
    crt, addr, pager, ops = setup
    pages = {i: bytes([i + 1]) * PAGE for i in range(4)}
    for i, data in pages.items():
        MD.vm_write(crt.task_self, addr + i * PAGE, data, rt=crt)
    assert ops.store == {}  # nothing reached the pager yet

    # return dirty, no flush: the pager gets the dirty pages, the kernel keeps a copy
    requests = pager.stats["data_requests"]
    assert _pager_lock_object(pager, 0, NPAGES * PAGE, MD.MEMORY_OBJECT_RETURN_DIRTY,
                              False, MD.VM_PROT_NO_CHANGE, True, timeout=30)
    assert {o: ops.store[o] for o in ops.store} == {i * PAGE: d for i, d in pages.items()}
    for i, data in pages.items():
        assert MD.vm_read(crt.task_self, addr + i * PAGE, PAGE, rt=crt) == data
    assert pager.stats["data_requests"] == requests  # still resident: no page-in
    n_writes = len(ops.writes)
    # the returned pages went to the pager as laundry mapped in its address space (of
    # an external object: not in vm_page_laundry_count), and are freed when the pager
    # deallocates them after writing
    assert vmstat(crt)["laundered"] >= 4
    wait_for(lambda: vmstat(crt)["laundry_external"] == 0
             and vmstat(crt)["returns_in_flight"] == 0, 30, what="laundry released")
    assert vmstat(crt)["laundry_count"] == 0

    # the pages are clean now: another return-dirty sends nothing
    assert _pager_lock_object(pager, 0, NPAGES * PAGE, MD.MEMORY_OBJECT_RETURN_DIRTY,
                              False, MD.VM_PROT_NO_CHANGE, True, timeout=30)
    assert len(ops.writes) == n_writes

    # dirty one page, then return all (pager_sync): only that page is dirty
    MD.vm_write(crt.task_self, addr + 2 * PAGE, b"Z" * PAGE, rt=crt)
    assert PG.pager_sync(pager, wait=True, timeout=30)
    assert ops.store[2 * PAGE] == b"Z" * PAGE
    assert len(ops.writes) == n_writes + 1

    # flush: the kernel drops its pages; the next read pages them in from the store
    assert PG.pager_flush(pager, wait=True, timeout=30)
    before = pager.stats["data_requests"]
    assert MD.vm_read(crt.task_self, addr + 2 * PAGE, PAGE, rt=crt) == b"Z" * PAGE
    assert MD.vm_read(crt.task_self, addr, PAGE, rt=crt) == pages[0]
    assert pager.stats["data_requests"] == before + 2

    # return + flush (pager_return) of a dirty page: written back, then gone from memory
    MD.vm_write(crt.task_self, addr + PAGE, b"R" * PAGE, rt=crt)
    assert PG.pager_return(pager, wait=True, timeout=30)
    assert ops.store[PAGE] == b"R" * PAGE
    before = pager.stats["data_requests"]
    assert MD.vm_read(crt.task_self, addr + PAGE, PAGE, rt=crt) == b"R" * PAGE
    assert pager.stats["data_requests"] == before + 1


@pytest.mark.timeout(120)
def test_write_lock_then_data_unlock(setup):
    crt, addr, pager, ops = setup
    ops.locked.add(5 * PAGE)
    unlocks = vmstat(crt)["data_unlocks"]
    assert MD.vm_read(crt.task_self, addr + 5 * PAGE, 4, rt=crt) == bytes(4)  # supplied locked
    assert ops.unlocks == []
    MD.vm_write(crt.task_self, addr + 5 * PAGE, b"unlocked", rt=crt)  # data_unlock, then write
    assert ops.unlocks == [5 * PAGE]
    assert vmstat(crt)["data_unlocks"] == unlocks + 1
    assert MD.vm_read(crt.task_self, addr + 5 * PAGE, 8, rt=crt) == b"unlocked"
    # a second write to the page needs no unlock
    MD.vm_write(crt.task_self, addr + 5 * PAGE + 8, b"again", rt=crt)
    assert ops.unlocks == [5 * PAGE]

    # lock it again from the pager (lock_request with VM_PROT_WRITE, no return): the
    # next write asks again
    assert _pager_lock_object(pager, 5 * PAGE, PAGE, MD.MEMORY_OBJECT_RETURN_NONE, False,
                              MD.VM_PROT_WRITE, True, timeout=30)
    ops.locked.add(5 * PAGE)
    MD.vm_write(crt.task_self, addr + 5 * PAGE, b"X", rt=crt)
    wait_for(lambda: ops.unlocks == [5 * PAGE, 5 * PAGE], 10, what="second unlock")
    assert MD.vm_read(crt.task_self, addr + 5 * PAGE, 13, rt=crt) == b"Xnlockedagain"


@pytest.mark.timeout(120)
def test_faults_fail_when_the_pager_dies(kernel):
    """A pager that never answers, then dies: the fault waiting for it ends with
    KERN_MEMORY_ERROR (and so do later faults on missing pages), not a hang."""
    from protocol.kern_return import KernReturn as K
    from protocol.kern_return import MachError

    prt = TaskRuntime(kernel, "deadpager")
    bucket = LP.ports_create_bucket(prt)
    server = LP.make_server("multithread", bucket, PG.PagerDemuxer(bucket),
                            name="deadpager").start()
    stuck = threading.Event()
    release = threading.Event()

    class Stuck(StoreOps):
        def read_page(self, pager, offset, length):
            stuck.set()
            release.wait(60)
            raise OSError(5, "gone")

    pager = PG.pager_create(Stuck(), bucket, False)
    port = PG.pager_get_port(pager)
    NS.netname_check_in(prt.name_server, "deadpager", port, port, rt=prt)
    crt = TaskRuntime(kernel, "victim")
    try:
        memobj = NS.netname_look_up(crt.name_server, "", "deadpager", rt=crt)
        addr = MD.vm_map(crt.task_self, 0, NPAGES * PAGE, 0, True, memobj, 0, False,
                         MD.VM_PROT_DEFAULT, MD.VM_PROT_ALL, MD.VM_INHERIT_NONE, rt=crt)
        result = {}

        def fault():
            try:
                MD.vm_read(crt.task_self, addr, PAGE, rt=crt, timeout=60)
                result["code"] = 0
            except MachError as e:
                result["code"] = e.code

        t = threading.Thread(target=fault)
        t.start()
        assert stuck.wait(30)
        prt.close()  # the pager's task dies with the request unanswered
        t.join(30)
        assert result.get("code") == K.KERN_MEMORY_ERROR
        with pytest.raises(MachError) as e:
            MD.vm_read(crt.task_self, addr + PAGE, PAGE, rt=crt, timeout=30)
        assert e.value.code == K.KERN_MEMORY_ERROR
    finally:
        release.set()
        server.stop()
        crt.close()
        prt.close()
