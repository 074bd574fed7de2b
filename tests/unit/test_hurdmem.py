"""translators.hurdmem and libpager's pagemap storage, as a task of a real kernel: the
brk data segment, arena heaps, malloc's chunks and arenas, hurdmalloc's buckets and the
mmapped / heap pagemaps make the kernel calls the Hurd's made, and the task's map shows
it — pieces of a reservation stay separate entries under classic merging and merge
back under coalescing."""

from __future__ import annotations

import threading

import pytest

from protocol.defs import mach as VM
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE
from tests.conftest import start_kernel
from translators import hurdmem as H
from translators.libpager import pagemap as PM

pytestmark = pytest.mark.timeout(60)

P = PAGE_SIZE


@pytest.fixture(params=["classic", "coalesce"])
def task(request, run_dir, procs):
    """A task of a kernel with the merge mode of the parameter: (rt, merge)."""
    from lab.rundir import RunDir
    from protocol.runtime import TaskRuntime

    endpoint = start_kernel(run_dir, procs, map_merge=request.param)
    rt = TaskRuntime(endpoint, "hurdmem", secret=RunDir(run_dir).host_secret())
    yield rt, request.param
    rt.close()


def entries(rt) -> int:
    return VM.vm_statistics(rt.task_self, timeout=10, rt=rt)["map_entries"]


def region(rt, address: int) -> tuple[int, int, int]:
    """(start, size, protection) of the entry holding ``address`` (or the next)."""
    start, size, prot, *_ = VM.vm_region(rt.task_self, address, timeout=10, rt=rt)
    return start, size, prot


def test_brk_grows_by_protect_and_shrinks_by_a_fresh_mapping(task):
    rt, merge = task
    base = entries(rt)
    b = H.Brk(H.TaskVM(rt))
    assert entries(rt) == base + 1 and region(rt, b.start)[2] == VM.VM_PROT_NONE
    for _ in range(3):
        assert b.set_brk(b.brk + 3 * P)
    # classic: each vm_protect clipped a piece off the reserve; coalescing merges them
    assert entries(rt) == base + (4 if merge == "classic" else 2)
    assert region(rt, b.start) == (b.start, 3 * P if merge == "classic" else 9 * P,
                                   VM.VM_PROT_ALL)
    VM.vm_write(rt.task_self, b.start + 5 * P, b"heap", timeout=10, rt=rt)  # usable
    assert b.set_brk(b.start + 4 * P)
    # the released pages: deallocated, mapped again with no access
    assert region(rt, b.start + 4 * P)[2] == VM.VM_PROT_NONE
    assert entries(rt) == base + (4 if merge == "classic" else 2)
    assert not b.set_brk(b.data_end + P)  # past the reserve: ENOMEM
    with pytest.raises(MachError):
        VM.vm_write(rt.task_self, b.start + 5 * P, b"x", timeout=10, rt=rt)


def test_heap_is_aligned_and_grows_page_by_page(task):
    rt, merge = task
    base = entries(rt)
    h = H.Heap(H.TaskVM(rt), 8 * P)
    assert h.base % H.HEAP_MAX_SIZE == 0
    assert entries(rt) == base + 2  # READ|WRITE part, NONE rest (the ends went back)
    for _ in range(5):
        assert h.grow(1)
    assert h.size == 13 * P
    assert entries(rt) == base + (7 if merge == "classic" else 2)
    assert not h.grow(H.HEAP_MAX_SIZE)


def test_arena_best_fit_merges_free_chunks_and_the_top(task):
    rt, _ = task
    a = H.Arena(H.TaskVM(rt), first_request=100)
    s = H.request2size(100)
    c1, c2, c3 = (a.malloc(s) for _ in range(3))
    assert c2 == c1 + s and c3 == c2 + s
    a.free(c2)
    assert a.malloc(s) == c2  # the free chunk, not the top
    a.free(c2)
    a.free(c1)
    assert a.free_at == {c1: 2 * s}  # merged with its free neighbour
    small = a.malloc(H.request2size(20))
    assert small == c1 and a.free_at == {c1 + H.request2size(20): 2 * s - 24}
    a.free(small)
    a.free(c3)
    assert not a.free_at and a.top == c1  # all back in the top
    # the chunks' pages were written: they read back their size words
    data = VM.vm_read(rt.task_self, c1, 4, timeout=10, rt=rt)
    assert int.from_bytes(bytes(data), "little") & ~7 == s


def test_main_arena_grows_and_trims_the_break(task):
    rt, merge = task
    m = H.Malloc(rt)
    base = entries(rt)
    chunks = [m.malloc(1000) for _ in range(400)]  # the test's thread: the main arena
    assert all(m.brk.start <= c < m.brk.brk for c in chunks)
    grown = m.brk.brk - m.brk.start
    assert grown >= 400 * 1000
    for c in chunks:
        m.free(c)
    st = m.stats()
    assert st["malloc_trims"] >= 1 and st["malloc_chunks"] == 0
    assert m.brk.brk - m.brk.start <= H.TOP_PAD + 2 * P < grown
    assert entries(rt) >= base


def test_threads_get_arenas_of_their_own_up_to_arena_max(task):
    rt, merge = task
    m = H.Malloc(rt, arena_max=3)
    got, gate = [], threading.Barrier(5)

    def thread():
        gate.wait(10)  # all alive at once: none leaves its arena to the next
        got.append(m.malloc(200))
        gate.wait(10)
        rt.thread_exit()

    ts = [threading.Thread(target=thread) for _ in range(5)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(20)
    assert len(got) == 5 and all(got)
    assert len(m.arenas) == 3
    heaps = {c & ~(H.HEAP_MAX_SIZE - 1) for c in got if not m.brk.start <= c < m.brk.data_end}
    assert len(heaps) == 2  # the two non-main arenas' heaps
    for c in got:  # freed from another thread: found by the heap it is in
        m.free(c)
    assert m.stats()["malloc_chunks"] == 0
    for bad in (m.brk.start + 8, got[0]):  # never a chunk, a chunk freed already
        with pytest.raises(ValueError):
            m.free(bad)


def test_large_requests_are_mapped_and_unmapped(task):
    rt, _ = task
    m = H.Malloc(rt)
    base = entries(rt)
    c = m.malloc(200 * 1024)
    assert c and not m.brk.start <= c < m.brk.data_end
    assert entries(rt) == base + 1
    m.free(c)
    assert entries(rt) == base


def test_hurdmalloc_refills_a_page_per_bucket_and_never_gives_back(task):
    rt, _ = task
    hm = H.HurdMalloc(rt)
    blocks = [hm.malloc(100) for _ in range(40)]  # 128-byte blocks, 32 a page
    assert len(set(blocks)) == 40 and hm.vm.calls["vm_allocate"] == 2
    for b in blocks:
        hm.free(b)
    again = [hm.malloc(100) for _ in range(40)]
    assert set(again) == set(blocks) and hm.vm.calls["vm_allocate"] == 2
    big = hm.malloc(5000)  # an 8 KiB block: a region of its own
    assert big and hm.vm.calls["vm_allocate"] == 3
    assert hm.stats()["hurdmalloc_blocks"] == 41


def test_task_vm_counts_and_raises_a_refused_call(task):
    rt, _ = task
    vm = H.TaskVM(rt)
    with pytest.raises(MachError):
        vm.write(0x1000, b"x")  # nothing mapped there
    assert vm.stats() == {"calls": {"vm_write": 1}, "failures": 1}


def test_mapped_pagemap_is_remapped_as_it_grows_and_unmapped_at_reset(task):
    rt, _ = task
    base = entries(rt)
    PM.set_pagemap_storage(lambda: PM.MappedPagemap(H.TaskVM(rt)))
    try:
        pm = PM.PageMap()
    finally:
        PM.set_pagemap_storage(None)
    assert PM.PageMap().storage is None
    st = pm.storage
    pm[3] = PM.PM_INCORE
    first = st.address
    assert st.capacity == 4096 and entries(rt) == base + 1  # 8 KiB, round_page entries
    pm[5000] = PM.PM_INCORE | PM.PM_INIT  # past 4096 entries: a new region, copied
    assert st.capacity == 8192 and st.remaps == 1 and st.address != first
    data = bytes(VM.vm_read(rt.task_self, st.address + 3 * 2, 2, timeout=10, rt=rt))
    assert int.from_bytes(data, "little") == PM.PM_INCORE  # memcpy'd over
    assert pm[5000] == PM.PM_INCORE | PM.PM_INIT and entries(rt) == base + 1
    pm.reset()
    assert entries(rt) == base and st.capacity == 0 and len(pm) == 0


def test_heap_pagemap_reallocates_on_the_heap(task):
    rt, _ = task
    m = H.Malloc(rt)
    st = PM.HeapPagemap(m)
    st.store(10, 1)
    first = st.address
    assert st.capacity == 11 and m.stats()["malloc_chunks"] == 1
    st.store(3, 1)
    assert st.address == first  # within the map: no reallocation
    st.store(400, 1)
    assert st.capacity == 401 and st.remaps == 1 and m.stats()["malloc_chunks"] == 1
    st.release()
    assert m.stats()["malloc_chunks"] == 0
