"""The default pager's receive rights and swap after anonymous objects come and go.

Every anonymous object paged out gives the default pager a pager port (memory_object_create)
and, at memory_object_terminate, the control and name ports' receive rights; the pager
destroys all three and frees the object's swap slots.  Its server threads come and go
too (the multithread model: one per message when none waits, gone after the thread
timeout), and a thread's reply port must go with it.  So after any number of anonymous
runs, once the pager is idle, its receive rights are back to their baseline and its swap
holds no page.
"""

from __future__ import annotations

import json
import threading

import pytest

from lab.rundir import RunDir
from protocol.defs import mach as V
from protocol.defs.machemu import machemu_kernel_info
from protocol.runtime import TaskRuntime
from protocol.vm_param import PAGE_SIZE
from tests.conftest import log_records, start_kernel, start_server, wait_for

PHYSICAL_PAGES = 256  # 1 MiB: a run of 2 MiB must page out


def receive_rights(rt, task_name=None, task_id=None) -> int:
    info = machemu_kernel_info(rt.host_priv, timeout=30, rt=rt)
    for t in info["tasks"]:
        if (task_id is not None and t["id"] == task_id) or (
                task_name is not None and t["name"] == task_name):
            return t["receive_rights"]
    raise AssertionError(f"no task {task_name or task_id} in {info['tasks']}")


@pytest.mark.timeout(120)
def test_exiting_threads_leave_no_reply_ports(tasks):
    # A thread that made an RPC has a reply port; thread_exit must destroy it without
    # leaving another one behind (the destroy itself used to be an RPC).
    rt = tasks.new("threads")
    base = receive_rights(rt, task_id=rt.task_id)
    errors = []

    def worker():
        try:
            V.vm_statistics(rt.task_self, timeout=30, rt=rt)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            rt.thread_exit()

    for _ in range(3):
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors
    # The one-way destroys are processed in order before the kernel_info RPC.
    assert receive_rights(rt, task_id=rt.task_id) == base


def pattern(run: int, page: int) -> bytes:
    return (b"%06d:%08d|" % (run, page)) * (PAGE_SIZE // 16)


def anon_run(rt, run: int, npages: int, timeout: float = 60.0):
    """vm_allocate ``npages`` (more than physical memory), write every page, read every
    page back byte-exact, vm_deallocate: the object is paged out, in, and terminated.
    Every call must be answered within ``timeout`` seconds."""
    addr = V.vm_allocate(rt.task_self, 0, npages * PAGE_SIZE, True, timeout=timeout, rt=rt)
    chunk = 16
    for first in range(0, npages, chunk):
        data = b"".join(pattern(run, pg) for pg in range(first, first + chunk))
        V.vm_write(rt.task_self, addr + first * PAGE_SIZE, data, timeout=timeout, rt=rt)
    for first in range(0, npages, chunk):
        got = V.vm_read(rt.task_self, addr + first * PAGE_SIZE, chunk * PAGE_SIZE,
                        timeout=timeout, rt=rt)
        for i in range(chunk):
            assert bytes(got[i * PAGE_SIZE:(i + 1) * PAGE_SIZE]) == pattern(run, first + i), \
                (run, first + i)
    V.vm_deallocate(rt.task_self, addr, npages * PAGE_SIZE, timeout=timeout, rt=rt)


def last_stats(run_dir, name="defpager") -> dict:
    recs = [r for r in log_records(run_dir / f"{name}.log") if r.get("event") == "stats"]
    return recs[-1] if recs else {}


@pytest.mark.timeout(300)
def test_default_pager_rights_and_swap_back_to_baseline(run_dir, procs):
    endpoint = start_kernel(run_dir, procs, physical_pages=PHYSICAL_PAGES)
    start_server(procs, run_dir, "translators.defpager", "defpager", "--swap-size", "16",
                 "--stats-interval", "0.2", "--thread-timeout", "0.5")
    rt = TaskRuntime(endpoint, "anon", secret=RunDir(run_dir).host_secret())
    try:
        def rights():
            return receive_rights(rt, task_name="defpager")

        # Idle: the master server thread alone is left.
        wait_for(lambda: last_stats(run_dir).get("server_threads") == 1, 60,
                 what="defpager idle")
        base = rights()
        for run in range(4):
            anon_run(rt, run, 2 * PHYSICAL_PAGES)
            st = wait_for(lambda: (lambda s: s if s.get("objects") == 0
                                   and s.get("server_threads") == 1 else None)(
                              last_stats(run_dir)), 60, what="defpager idle again")
            # Every object it was given is gone, and so is its swap.
            assert st["objects_created"] == st["objects_terminated"] >= run + 1, st
            assert st["slots_used"] == 0 and st["pages_in_swap"] == 0, st
            assert st["slots_allocated"] == st["slots_freed"] > 0, st
            brief = {k: st[k] for k in ("objects_created", "objects_terminated",
                                        "server_threads", "server_spawned",
                                        "server_exited")}
            wait_for(lambda: rights() == base, 30, interval=0.2,
                     what=f"the default pager's receive rights back to {base} after run "
                          f"{run} ({json.dumps(brief)})")
    finally:
        rt.close()
