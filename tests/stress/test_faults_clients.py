"""Faults of clients in the middle of their workloads: one SIGKILLed, one SIGSTOPped
past the kernel's heartbeat timeout.  What must hold: the killed task is destroyed (it
leaves the kernel's task list); the stopped one is a live local process, so it keeps its
task and, after SIGCONT, goes on writing (issue 8 finding 9); ext2fs goes on serving
another client the right bytes throughout."""

from __future__ import annotations

import signal

import pytest

from lab.rundir import RunDir
from protocol.defs import machemu as X
from protocol.runtime import TaskRuntime
from tests.conftest import start_kernel, start_server, wait_for
from tests.faults import Summary, file_roundtrip, kernel_serves
from tests.hostile import pattern

pytestmark = [pytest.mark.stress, pytest.mark.timeout(180)]

HEARTBEAT = 2.0  # the kernel's heartbeat_timeout: the stop lasts well past it

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
    if i % 5 == 0:
        print("wrote", i, flush=True)
'''


def task_names(rt):
    """The kernel's tasks: every task's name needs host_priv (the plain host port tells
    only the caller's own)."""
    info = X.machemu_kernel_info(rt.host_priv, timeout=30, rt=rt)
    return {t["name"] for t in info["tasks"]}


def rt_seconds(rt):
    return X.machemu_kernel_info(rt.host, timeout=30, rt=rt)["kernel"]["uptime"]


def wait_heartbeats(rt, seconds):
    """Kernel uptime until ``seconds`` of it have passed: the kernel's own clock, asked
    over and over (each answer proves the loop ran its heartbeat checks meanwhile)."""
    start = rt_seconds(rt)
    wait_for(lambda: rt_seconds(rt) - start >= seconds, 10 * seconds + 30,
             what=f"{seconds}s of kernel time")
    return rt_seconds(rt) - start


def test_clients_killed_and_stopped_mid_workload(run_dir, procs):
    s = Summary("clients")
    endpoint = start_kernel(run_dir, procs, heartbeat_timeout=HEARTBEAT)
    start_server(procs, run_dir, "translators.ext2fs", "ext2fs", "--size-mib", "16")
    env = {"MACHEMU_KERNEL": endpoint}
    a = procs.python(["-c", CLIENT, "victim-a"], name="victim-a", env=env)
    b = procs.python(["-c", CLIENT, "victim-b"], name="victim-b", env=env)
    rt = TaskRuntime(endpoint, "observer", secret=RunDir(run_dir).host_secret())
    try:
        wait_for(lambda: "wrote" in a.output() and "wrote" in b.output(), 90,
                 what="both clients writing")
        a.kill(signal.SIGKILL)
        s.fault("SIGKILL client a")
        b.kill(signal.SIGSTOP)
        s.fault("SIGSTOP client b past the heartbeat timeout")
        wait_for(lambda: "victim-a" not in task_names(rt), 30, what="task a destroyed")
        s.note("kernel destroyed the killed task")
        s.note(file_roundtrip(rt, "ext2fs", "legit", pattern(100_000)))
        # Served while b is stopped, for longer than HEARTBEAT: b's task must still be there.
        stopped_for = wait_heartbeats(rt, 3 * HEARTBEAT)
        assert "victim-b" in task_names(rt), "a stopped local client lost its task"
        s.note(f"stopped client's task kept through {stopped_for:.1f}s of silence")
        before = b.output().count("wrote")
        b.kill(signal.SIGCONT)
        s.fault("SIGCONT client b")
        wait_for(lambda: b.output().count("wrote") > before, 60,
                 what="client b writing again after SIGCONT")
        s.note("client b resumed its writes")
        s.note(f"kernel serves: {kernel_serves(endpoint)}")
    finally:
        rt.close()
        s.print()
