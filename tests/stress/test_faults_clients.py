"""Faults of clients in the middle of their workloads: one SIGKILLed, one SIGSTOPped
past the kernel's heartbeat timeout.  What must hold: the kernel destroys both tasks
(they leave its task list), ext2fs goes on serving another client the right bytes, and
the kernel logs no internal error."""

from __future__ import annotations

import signal

import pytest

from protocol.defs import machemu as X
from protocol.runtime import TaskRuntime
from tests.conftest import start_kernel, start_server, wait_for
from tests.faults import Summary, file_roundtrip, kernel_serves
from tests.hostile import pattern

pytestmark = [pytest.mark.stress, pytest.mark.timeout(180)]

CLIENT = r'''
import os, sys
from protocol import runtime
from protocol.defs import fs as F
from tests.faults import look_up, open_file
rt = runtime.connect(os.environ["MACHEMU_KERNEL"], name=sys.argv[1])
f = open_file(rt, look_up(rt, "ext2fs"), sys.argv[1])
i = 0
while True:
    F.io_write(f, bytes([i % 256]) * 16384, (i % 32) * 16384, timeout=30, rt=rt)
    i += 1
    if i == 5:
        print("writing", flush=True)
'''


def task_names(rt):
    return {t["name"] for t in X.machemu_kernel_info(rt.host, timeout=30, rt=rt)["tasks"]}


def test_clients_killed_and_stopped_mid_workload(run_dir, procs):
    s = Summary("clients")
    endpoint = start_kernel(run_dir, procs)
    start_server(procs, run_dir, "translators.ext2fs", "ext2fs", "--size-mib", "16")
    env = {"MACHEMU_KERNEL": endpoint}
    a = procs.python(["-c", CLIENT, "victim-a"], name="victim-a", env=env)
    b = procs.python(["-c", CLIENT, "victim-b"], name="victim-b", env=env)
    rt = TaskRuntime(endpoint, "observer")
    try:
        wait_for(lambda: "writing" in a.output() and "writing" in b.output(), 90,
                 what="both clients writing")
        a.kill(signal.SIGKILL)
        s.fault("SIGKILL client a")
        b.kill(signal.SIGSTOP)
        s.fault("SIGSTOP client b past the heartbeat timeout")
        wait_for(lambda: "victim-a" not in task_names(rt), 30, what="task a destroyed")
        wait_for(lambda: "victim-b" not in task_names(rt), 60, what="task b destroyed")
        s.note("kernel destroyed both tasks")
        s.note(file_roundtrip(rt, "ext2fs", "legit", pattern(100_000)))
        s.note(f"kernel serves: {kernel_serves(endpoint)}")
        b.kill(signal.SIGCONT)
        s.fault("SIGCONT client b")
        wait_for(lambda: not b.alive(), 60, what="client b's exit after it learns it is gone")
        s.note(f"client b after SIGCONT: exit {b.p.returncode}")
    finally:
        rt.close()
        s.print()
