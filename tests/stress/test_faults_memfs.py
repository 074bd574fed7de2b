"""Faults of memfs in the middle of its clients' workloads: SIGKILL while a client reads a
memfs file through a mapping (vm_map of the file's pager, faults served by memfs), and
SIGSTOP past the kernel's heartbeat timeout then SIGCONT.  What must hold: the kernel
and ext2fs's clients go on; memfs's clients get an error within a bound, not a hang
(a fault on a mapped page of a dead pager is an error, not a wait forever); a memfs
started again serves; after SIGCONT a stopped memfs goes on with every byte it held."""

from __future__ import annotations

import signal
import time

import pytest

from protocol.defs import fs as F
from protocol.defs import mach as V
from protocol.runtime import TaskRuntime
from protocol.vm_param import PAGE_SIZE
from tests.conftest import start_kernel, start_server, wait_for
from tests.faults import (
    ERROR_BOUND,
    Summary,
    T,
    Workload,
    file_roundtrip,
    kernel_serves,
    look_up,
    open_file,
    read_all,
)
from tests.hostile import pattern

pytestmark = [pytest.mark.stress, pytest.mark.timeout(240)]
HEARTBEAT = 2.0  # the kernel's heartbeat_timeout: the stop lasts well past it
PAGES = 64
DATA = pattern(PAGES * PAGE_SIZE, seed=5)
SIZE = 64 * PAGES * PAGE_SIZE  # DATA, then a hole: 16 MiB mapped


def mapped_reader(rt, f):
    """vm_map the file's memory object once and vm_read it page by page, checking bytes.
    The file is DATA then a hole up to SIZE: every page read past DATA is a fresh fault
    (a data_request to memfs), so after memfs dies the next read must fail, not wait."""
    rd, _wr = F.io_map(f, timeout=T, rt=rt)
    addr = V.vm_map(rt.task_self, 0, SIZE, 0, True, rd, 0, False, V.VM_PROT_READ,
                    V.VM_PROT_READ, V.VM_INHERIT_NONE, timeout=T, rt=rt)

    def step(i):
        off = i * PAGE_SIZE % SIZE
        got = V.vm_read(rt.task_self, addr + off, PAGE_SIZE, timeout=T, rt=rt)
        want = DATA[off:off + PAGE_SIZE] or bytes(PAGE_SIZE)
        assert bytes(got) == want, f"page {off // PAGE_SIZE}"
    return step


def test_sigkill_memfs_mid_mapped_read(run_dir, procs):
    s = Summary("sigkill memfs")
    endpoint = start_kernel(run_dir, procs)
    fs = start_server(procs, run_dir, "translators.memfs", "memfs")
    start_server(procs, run_dir, "translators.ext2fs", "ext2fs", "--size-mib", "16")
    rt = TaskRuntime(endpoint, "client")
    other = TaskRuntime(endpoint, "other")
    try:
        f = open_file(rt, look_up(rt, "memfs"), "data")
        assert F.io_write(f, DATA, 0, timeout=T, rt=rt) == len(DATA)
        F.file_set_size(f, SIZE, timeout=T, rt=rt)
        w = Workload("mapped reader", mapped_reader(rt, f))
        w.start()
        wait_for(lambda: w.done >= PAGES + 5, 90, what="mapped reads into the hole")
        fs.kill(signal.SIGKILL)
        killed = time.monotonic()
        s.fault("SIGKILL memfs during mapped vm_reads")
        wait_for(lambda: w.errors, ERROR_BOUND + 15, what="the reader's error")
        w.stop()
        s.note(w.cost())
        assert w.errors, "reads of a dead pager's file went on succeeding"
        assert not any(k.startswith("wrong data") for k in w.errors), w.errors
        s.note(f"reader's first error {w.first_error_at - killed:.1f}s after the kill")
        assert w.first_error_at - killed < ERROR_BOUND + 15
        s.note(f"kernel serves: {kernel_serves(endpoint)}")
        s.note(file_roundtrip(other, "ext2fs", "x", pattern(50_000)))
        (run_dir / "memfs.ready").unlink(missing_ok=True)  # the killed one's
        fs2 = start_server(procs, run_dir, "translators.memfs", "memfs")
        s.note(file_roundtrip(other, "memfs", "fresh", pattern(30_000, seed=2)) +
               " (memfs started again; a memory file system's contents die with it)")
        fs2.kill(signal.SIGTERM)
        assert fs2.p.wait(60) == 0
    finally:
        other.close()
        rt.close()
        s.print()


def test_sigstop_memfs_past_heartbeat_then_sigcont(run_dir, procs):
    s = Summary("sigstop memfs")
    endpoint = start_kernel(run_dir, procs, heartbeat_timeout=HEARTBEAT)
    fs = start_server(procs, run_dir, "translators.memfs", "memfs")
    rt = TaskRuntime(endpoint, "client")
    try:
        root = look_up(rt, "memfs")
        f = open_file(rt, root, "data")
        assert F.io_write(f, DATA, 0, timeout=T, rt=rt) == len(DATA)
        fs.kill(signal.SIGSTOP)
        stopped = time.monotonic()
        s.fault(f"SIGSTOP memfs {4 * HEARTBEAT:.0f}s (heartbeat timeout {HEARTBEAT:.0f}s)")
        try:
            F.io_read(f, 0, 100, timeout=2 * HEARTBEAT, rt=rt)
            answered = "answered"
        except Exception as e:  # noqa: BLE001 - what the client saw is the figure
            answered = type(e).__name__ + " " + str(e)[:60]
        s.note(f"a read while memfs is stopped: {answered}")
        s.note(f"kernel serves while memfs is stopped: {kernel_serves(endpoint)}")
        while time.monotonic() < stopped + 4 * HEARTBEAT:
            time.sleep(0.2)  # the fault is the length of the stop, not a wait for a result
        fs.kill(signal.SIGCONT)
        s.fault("SIGCONT memfs")
        got = read_all(rt, f, len(DATA))
        s.note(f"after SIGCONT: memfs alive {fs.alive()}, the same open file reads "
               f"{len(got)} bytes, equal {got == DATA}")
        assert got == DATA and fs.alive()
        s.note(file_roundtrip(rt, "memfs", "after", pattern(20_000, seed=3)))
    finally:
        rt.close()
        s.print()
