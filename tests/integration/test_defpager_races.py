"""Page-ins racing pageouts at the default pager, under pressure, bounded in time.

Several client tasks, each with several threads, run many small anonymous runs at once
(vm_allocate, vm_write every page, vm_read every page back, vm_deallocate) against a
kernel whose memory holds less than half of them, so every run pages out to the default
pager and back while other runs' objects are created and terminated.  The default pager
runs the multithread model with a short thread timeout: its threads come and go all the
time, and so do their turns at reading the task's socket.

What must hold: every vm_write and vm_read is answered within CALL_TIMEOUT (a lost
data_request, data_return or trap answer shows up as a hung call), every byte read is
the byte written, the default pager never reports a handler stuck or a gap in an
object's message sequence, and once the runs are over it holds no object and no page.

Also: many threads of one task making RPCs at once each get their answer (the task
runtime's reader hand-off).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time

import pytest

from lab.rundir import RunDir
from protocol.defs import mach_port as P
from protocol.runtime import TaskRuntime
from tests.conftest import log_records, ready_or_fail, start_kernel, wait_for
from tests.integration.test_defpager_rights import anon_run, last_stats

PHYSICAL_PAGES = 256
TASKS, THREADS = 3, 2  # client tasks, threads per task (each thread its own region)
RUN_PAGES = 192  # 6 x 192 pages at once: 4.5 x physical memory
BUDGET = 60.0  # seconds of runs
MAX_RUNS = 40  # per thread
CALL_TIMEOUT = 30.0
# Python switches threads every 5 ms by default; switching every 10 us puts a switch
# inside every short window between two steps of a thread (how the lost trap answer was
# made likely: 2 runs of 3 hung before its fix, against about 1 in 70 at 5 ms).
SWITCH_INTERVAL = 1e-5


@contextlib.contextmanager
def preemptive():
    """This process's threads switched every SWITCH_INTERVAL seconds meanwhile."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def start_preemptive(procs, run_dir, module: str, name: str, *args):
    """``python -m MODULE --run-dir DIR --name NAME ARGS``, the real program, with its
    threads switched every SWITCH_INTERVAL seconds."""
    code = (f"import runpy, sys; sys.setswitchinterval({SWITCH_INTERVAL}); "
            f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")
    p = procs.start([sys.executable, "-c", code, "--run-dir", str(run_dir), "--name", name,
                     *args], name=name)
    ready_or_fail(p, 60)
    return p


def run_threads(target, nthreads: int, deadline: float) -> list:
    """Run ``target(i)`` in ``nthreads`` threads; the indexes of those still running at
    ``deadline`` (hung) and the exceptions raised, as (hung, errors)."""
    errors = []

    def body(i):
        try:
            target(i)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append((i, e))

    threads = [threading.Thread(target=body, args=(i,), daemon=True)
               for i in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return [i for i, t in enumerate(threads) if t.is_alive()], errors


@pytest.mark.timeout(120)
def test_many_threads_of_one_task_all_get_their_answers(tasks):
    rt = tasks.new("rpc-storm")
    calls = [0] * 32

    def storm(i):
        for _ in range(1000):
            P.mach_port_type(rt.task_self, rt.task_self, timeout=CALL_TIMEOUT, rt=rt)
            calls[i] += 1

    with preemptive():
        hung, errors = run_threads(storm, len(calls), time.monotonic() + 60)
    assert not errors, errors[:3]
    assert not hung, f"{len(hung)} threads never got an answer ({sum(calls)} calls made)"
    assert sum(calls) == 1000 * len(calls)


@pytest.mark.stress
@pytest.mark.timeout(300)
def test_page_ins_racing_pageouts_are_all_answered_byte_exact(run_dir, procs):
    endpoint = start_kernel(run_dir, procs, physical_pages=PHYSICAL_PAGES)
    start_preemptive(procs, run_dir, "translators.defpager", "defpager", "--swap-size", "16",
                     "--stats-interval", "0.2", "--thread-timeout", "0.1")
    secret = RunDir(run_dir).host_secret()
    rts = [TaskRuntime(endpoint, f"anon{i}", secret=secret) for i in range(TASKS)]
    runs = [0] * (TASKS * THREADS)
    stop_at = time.monotonic() + BUDGET
    try:
        def worker(i):
            rt = rts[i // THREADS]
            while runs[i] < MAX_RUNS and time.monotonic() < stop_at:
                anon_run(rt, i * 1000 + runs[i], RUN_PAGES, timeout=CALL_TIMEOUT)
                runs[i] += 1

        # A run that starts before stop_at ends within a few call timeouts.
        with preemptive():
            hung, errors = run_threads(worker, len(runs), stop_at + 4 * CALL_TIMEOUT)
        assert not errors, errors[:3]
        assert not hung, f"threads {hung} hung in a VM call (runs done: {runs})"
        assert min(runs) >= 1, runs
        st = wait_for(lambda: (lambda s: s if s.get("objects") == 0 else None)(
            last_stats(run_dir)), 60, interval=0.2, what="the default pager to hold no object")
        assert st["objects_created"] == st["objects_terminated"] > 0, st
        assert st["slots_used"] == 0 and st["slots_allocated"] == st["slots_freed"], st
    finally:
        for rt in rts:
            rt.close()
    bad = [r for r in log_records(run_dir / "defpager.log")
           if r.get("event") in ("handler stalled", "seqno gap: going on")]
    assert not bad, bad[:3]
