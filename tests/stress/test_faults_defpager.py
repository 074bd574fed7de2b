"""Faults of the default pager in the middle of an anonymous-memory workload (a kernel
with little physical memory, so pages really go to swap): SIGSTOP/SIGCONT, then SIGKILL.
What must hold: after SIGCONT the workload's bytes are all intact; after SIGKILL the
client gets an error within a bound (or succeeds), never hangs, and the kernel and a
file server's client go on; what each fault cost is printed."""

from __future__ import annotations

import signal
import time

import pytest

from protocol.defs import mach as VM
from protocol.runtime import TaskRuntime
from tests.conftest import start_kernel, start_server, wait_for
from tests.faults import ERROR_BOUND, Summary, Workload, file_roundtrip, kernel_serves
from tests.hostile import pattern

pytestmark = [pytest.mark.stress, pytest.mark.timeout(240)]
PAGES = 512  # 2 MiB of physical memory
ANON = 3 << 20
CHUNK = 64 * 1024


def anon_step(rt):
    """One pass: write 3 MiB of anonymous memory, read it back, compare."""
    def step(i):
        addr = VM.vm_allocate(rt.task_self, 0, ANON, True, timeout=ERROR_BOUND, rt=rt)
        try:
            for off in range(0, ANON, CHUNK):
                VM.vm_write(rt.task_self, addr + off, pattern(CHUNK, seed=(i + off) % 251),
                            timeout=ERROR_BOUND, rt=rt)
            for off in range(0, ANON, CHUNK):
                got = VM.vm_read(rt.task_self, addr + off, CHUNK, timeout=ERROR_BOUND, rt=rt)
                assert bytes(got) == pattern(CHUNK, seed=(i + off) % 251), f"at {off}"
        finally:
            VM.vm_deallocate(rt.task_self, addr, ANON, timeout=ERROR_BOUND, rt=rt)
    return step


def test_defpager_sigstop_sigcont_then_sigkill(run_dir, procs):
    s = Summary("defpager")
    endpoint = start_kernel(run_dir, procs, physical_pages=PAGES)
    dp = start_server(procs, run_dir, "translators.defpager", "defpager")
    start_server(procs, run_dir, "translators.memfs", "memfs")
    rt = TaskRuntime(endpoint, "anon")
    other = TaskRuntime(endpoint, "other")
    try:
        w = Workload("anon writer", anon_step(rt), max_errors=1)
        w.start()
        wait_for(lambda: w.done >= 1, 120, what="one anonymous pass before the faults")
        dp.kill(signal.SIGSTOP)
        s.fault("SIGSTOP defpager 3s")
        t0 = time.monotonic()
        while time.monotonic() < t0 + 3:
            time.sleep(0.2)  # the length of the stop is the fault
        dp.kill(signal.SIGCONT)
        s.fault("SIGCONT defpager")
        done = w.done
        wait_for(lambda: w.done >= done + 2 or w.errors, 120, what="passes after SIGCONT")
        s.note(f"after SIGCONT: {w.cost()}")
        assert not w.errors, w.cost()
        dp.kill(signal.SIGKILL)
        killed = time.monotonic()
        s.fault("SIGKILL defpager mid-workload")
        done = w.done
        wait_for(lambda: w.errors or w.done >= done + 2, ERROR_BOUND * 3,
                 what="an error (or progress) after the defpager's death")
        s.note(f"after SIGKILL ({time.monotonic() - killed:.1f}s): {w.cost()}")
        w.stop()
        s.note(f"kernel serves: {kernel_serves(endpoint)}")
        s.note(file_roundtrip(other, "memfs", "x", pattern(50_000)))
        # a later anonymous workload: an error or success within the bound, not a hang
        later = Workload("later anon", anon_step(other), max_errors=1)
        later.start()
        wait_for(lambda: later.errors or later.done, ERROR_BOUND * 3,
                 what="the later anonymous workload's end")
        later.stop()
        s.note(later.cost())
    finally:
        other.close()
        rt.close()
        s.print()
