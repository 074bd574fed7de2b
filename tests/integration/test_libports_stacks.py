"""Server threads' stacks in the translator's task map (DESIGN §7), against a real kernel:
each thread vm_allocates its stack plus a guard page and vm_protects the guard, so under a
flood of blocking requests the multithread demo server's map grows two entries per extra
thread (guard + stack, under the kernel's default classic merge) and shrinks back when the
idle threads exit; the workers server's map stays flat; --no-vm-stacks opts out; a task
whose address space is full still serves, counting the failures.
"""

from __future__ import annotations

import threading
import time

import psutil
import pytest

from protocol.defs import demo as D
from protocol.defs import mach as MD
from protocol.defs import machemu as X
from protocol.kern_return import KernReturn, MachError
from protocol.vm_param import PAGE_SIZE
from tests.conftest import wait_for
from tests.integration.test_libports import (
    Flood,
    demo_port_info,
    look_up,
    start_demo,
    stop_and_stats,
)
from translators import libports as LP

PAGE = PAGE_SIZE
VM_MAX_ADDRESS = 0xC0000000  # i386 GNU Mach user address space


def demo_task(rt, name="demo") -> dict:
    info = X.machemu_kernel_info(rt.host_priv, timeout=10, rt=rt)
    [t] = [t for t in info["tasks"] if t["name"] == name]
    return t


def map_entries(rt, name="demo") -> int:
    return demo_task(rt, name)["map_entries"]


def settled(probe, pid, max_threads, want_entries, last):
    """At most ``max_threads`` OS threads and exactly ``want_entries`` map entries
    (``last``: what was seen)."""
    last[:] = [psutil.Process(pid).num_threads(), map_entries(probe)]
    return last[0] <= max_threads and last[1] == want_entries


@pytest.mark.timeout(120)
def test_multithread_map_grows_with_its_threads_and_shrinks_back(kernel, tasks, procs,
                                                                 run_dir):
    p = start_demo(procs, run_dir, "multithread", "--thread-timeout", "1")
    probe = tasks.new("probe")
    D.demo_null(look_up(probe), timeout=10, rt=probe)
    # The first request made the master spawn a listener, which times out (1 s) and exits:
    # the master alone is left, its stack region two entries (guard + stack) in an
    # otherwise empty map.
    wait_for(lambda: demo_task(probe)["map_entries"] == 2, 30, what="the master's stack")
    idle_entries = 2
    # (The listener frees its stack just before its OS thread ends: this may count it.)
    idle_threads = psutil.Process(p.pid).num_threads()
    peak = {"entries": idle_entries, "threads": idle_threads}

    def grown():
        peak["threads"] = max(peak["threads"], psutil.Process(p.pid).num_threads())
        peak["entries"] = max(peak["entries"], map_entries(probe))
        return peak["threads"] > idle_threads + 16 and peak["entries"] >= idle_entries + 32

    with Flood(tasks, ntasks=3, nthreads=48, msecs=1000) as flood:
        wait_for(grown, 60, interval=0.05, what="multithread threads and map entries grow")
        # Keep sampling for about two more rounds of the flood, to see the peak.
        target = flood.done + 2 * len(flood.threads)
        wait_for(lambda: grown() and flood.done >= target, 60, interval=0.05,
                 what="two more rounds of the flood")
    assert not flood.errors, flood.errors[:3]
    # Idle threads time out (1 s), free their stacks and exit: back to the master's.
    last = []
    try:
        wait_for(lambda: settled(probe, p.pid, idle_threads, idle_entries, last), 60,
                 what="idle threads exit and their stacks go")
    except AssertionError:
        raise AssertionError(f"threads, entries: {last}, wanted "
                             f"{[idle_threads, idle_entries]}") from None
    stats = stop_and_stats(p, run_dir)
    assert stats["vm_stacks"] is True
    assert stats["stack_alloc_failures"] == 0 and stats["stack_free_failures"] == 0
    # Every thread the server created (the master and the spawned ones) had a stack,
    # and gave it back on the way out.
    assert stats["stacks_allocated"] == stats["spawned"] + 1
    assert stats["stacks_freed"] == stats["stacks_allocated"]
    assert stats["stacks_live"] == 0
    assert stats["stacks_peak"] > 20
    # Two entries per live stack, nothing else in the map: the sampled peak cannot pass
    # what the most stacks alive at once make.
    assert idle_entries + 32 <= peak["entries"] <= 2 * stats["stacks_peak"]
    print(f"\nmultithread: idle {idle_entries} entries / {idle_threads} OS threads, "
          f"peak {peak['entries']} entries / {peak['threads']} OS threads "
          f"(stacks peak {stats['stacks_peak']}, allocated {stats['stacks_allocated']})")


@pytest.mark.timeout(120)
def test_workers_map_stays_flat_under_the_same_flood(kernel, tasks, procs, run_dir):
    nworkers = 4
    p = start_demo(procs, run_dir, "workers", "--workers", str(nworkers))
    probe = tasks.new("probe")
    D.demo_null(look_up(probe), timeout=10, rt=probe)
    want = 2 * (nworkers + 1)  # the workers and the receiver
    wait_for(lambda: map_entries(probe) == want, 30, what="worker stacks in the demo map")
    seen = {map_entries(probe)}
    pressure = [0]

    def flooded_for_a_while():
        seen.add(map_entries(probe))
        for port in demo_port_info(probe):
            pressure[0] = max(pressure[0], port["blocked_senders"])
        return pressure[0] >= 10 and flood.done >= 40

    with Flood(tasks, ntasks=3, nthreads=48, msecs=20) as flood:
        wait_for(flooded_for_a_while, 90, interval=0.05, what="a sustained flood")
    assert not flood.errors, flood.errors[:3]
    seen.add(map_entries(probe))
    assert seen == {want}
    stats = stop_and_stats(p, run_dir)
    assert stats["stacks_allocated"] == stats["stacks_freed"] == nworkers + 1
    assert stats["stacks_peak"] == nworkers + 1
    assert stats["stack_alloc_failures"] == 0
    print(f"\nworkers: {want} entries at idle and under the flood")


@pytest.mark.timeout(90)
def test_no_vm_stacks_leaves_the_map_alone(kernel, tasks, procs, run_dir):
    p = start_demo(procs, run_dir, "multithread", "--no-vm-stacks")
    with Flood(tasks, ntasks=2, nthreads=8, msecs=200, max_rpcs=32) as flood:
        wait_for(lambda: flood.done >= 32, 60, what="32 demo_sleep RPCs")
    assert not flood.errors, flood.errors[:3]
    probe = tasks.new("probe")
    assert map_entries(probe) == 0
    stats = stop_and_stats(p, run_dir)
    assert stats["vm_stacks"] is False
    assert stats["peak_threads"] > 2  # threads were made, without stacks
    assert stats["stacks_allocated"] == 0 and stats["stack_alloc_failures"] == 0


@pytest.mark.timeout(90)
@pytest.mark.parametrize("model", LP.THREAD_MODELS)
def test_a_full_address_space_does_not_stop_the_threads(tasks, model):
    """KERN_NO_SPACE for every stack: the threads run anyway, and count the failures."""
    rt = tasks.new("libports")
    # Take all but 64 KiB of the task's address space: no stack region fits.
    filler = MD.vm_allocate(rt.task_self, 0, VM_MAX_ADDRESS - 64 * 1024, True, rt=rt)
    with pytest.raises(MachError) as e:
        MD.vm_allocate(rt.task_self, 0, LP.STACK_SIZE + LP.GUARD_SIZE, True, rt=rt)
    assert e.value.code == KernReturn.KERN_NO_SPACE
    entries = MD.vm_statistics(rt.task_self, rt=rt)["map_entries"]

    bucket = LP.ports_create_bucket(rt)
    pi = LP.ports_create_port(LP.ports_create_class(), bucket)
    name = LP.ports_get_send_right(pi)
    LP.ports_port_deref(pi)
    demuxer = LP.PortsDemuxer(bucket, {D.demo_sleep: lambda obj, ms: time.sleep(ms / 1000)})
    server = LP.make_server(model, bucket, demuxer, thread_timeout=0.5, workers=3,
                            ordered=False, stack_size=None, name="full").start()
    try:
        errors = []

        def client():
            try:
                D.demo_sleep(name, 200, timeout=30, rt=rt)
            except MachError as err:
                errors.append(err)
            finally:
                rt.thread_exit()

        clients = [threading.Thread(target=client) for _ in range(6)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(60)
        assert not any(c.is_alive() for c in clients) and not errors
        st = server.stats()
        assert st["messages"] == 6
        assert st["stacks_allocated"] == 0 and st["stacks_live"] == 0
        threads_made = st["spawned"] + 1 if model == "multithread" else st["peak_threads"]
        assert threads_made >= 2
        # every thread the server made tried, failed, and ran anyway (a thread that is
        # still starting may add its failure later: at least one per thread counted)
        wait_for(lambda: server.stats()["stack_alloc_failures"] >= threads_made, 20,
                 what="one failure per thread")
        assert server.stats()["stacks_allocated"] == 0
        assert MD.vm_statistics(rt.task_self, rt=rt)["map_entries"] == entries
    finally:
        assert server.stop(timeout=20)
    assert server.stats()["stack_free_failures"] == 0
    MD.vm_deallocate(rt.task_self, filler, VM_MAX_ADDRESS - 64 * 1024, rt=rt)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("touch", [0, 1, 3])
def test_touched_stacks_cost_a_frame_per_page_touched(tasks, touch):
    """cthreads wrote the top of every new stack before the thread ran: each touched
    page is a zero-filled frame taken from the kernel's free pages, given back with
    the stack."""
    rt = tasks.new("stacks")
    stacks = LP.ThreadStacks(rt, LP.STACK_SIZE, touch_pages=touch)

    def free():
        return MD.vm_statistics(rt.task_self, timeout=10, rt=rt)["free_count"]

    free0 = free()
    addrs = [stacks.allocate() for _ in range(8)]
    assert all(addrs)
    assert free0 - free() == 8 * touch
    st = stacks.stats()
    assert st["stack_pages_touched"] == 8 * touch and st["stack_touch_failures"] == 0
    if touch:
        # The cproc pointer (here the thread's id) in the top word's place of the stack.
        top = MD.vm_read(rt.task_self, addrs[0] + stacks.size - 52, 52, timeout=10, rt=rt)
        me = threading.get_ident() & 0xFFFFFFFF
        assert top == me.to_bytes(4, "little") + bytes(48)
    for a in addrs:
        stacks.deallocate(a)
    assert free() == free0


def test_touching_never_reaches_the_guard_page(tasks):
    rt = tasks.new("stacks")
    stacks = LP.ThreadStacks(rt, 2 * PAGE, touch_pages=5)  # more pages than the stack
    assert stacks.touch_pages == 2
    a = stacks.allocate()
    assert a and stacks.stats()["stack_touch_failures"] == 0
    stacks.deallocate(a)
