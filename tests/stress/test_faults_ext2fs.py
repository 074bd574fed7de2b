"""Faults of ext2fs in the middle of its clients' workloads: SIGKILL, and SIGSTOP past
the kernel's heartbeat timeout then SIGCONT.  What must hold: the kernel and another
server's clients go on; the clients of ext2fs get an error within a bound, not a hang,
and what each fault cost is printed; data written and synced (file_sync, fsys_syncfs)
before the fault is on the image byte for byte when ext2fs is started again on it (or
goes on serving after SIGCONT)."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from protocol.defs import fs as F
from protocol.runtime import TaskRuntime
from tests.conftest import start_kernel, start_server, wait_for
from tests.faults import (
    ERROR_BOUND,
    Summary,
    Workload,
    file_roundtrip,
    kernel_serves,
    look_up,
    open_file,
    read_all,
    write_synced,
)
from tests.hostile import pattern

pytestmark = [pytest.mark.stress, pytest.mark.timeout(240)]
SYNCED = pattern(200_000, seed=11)


def start_fs(procs, run_dir, img=None, name="ext2fs"):
    """ext2fs on a fresh DIR/NAME.img, or on ``img``."""
    extra = ("--image", str(img)) if img else ("--size-mib", "16")
    return start_server(procs, run_dir, "translators.ext2fs", name, *extra)


def writer(rt, root, path):
    f = open_file(rt, root, path)

    def step(i):
        data = pattern(16384, seed=i % 251)
        F.io_write(f, data, (i % 64) * 16384, timeout=10, rt=rt)
    return step


def e2fsck(img) -> str:
    r = subprocess.run(["e2fsck", "-fn", str(img)], capture_output=True, text=True,
                       timeout=60)
    return f"e2fsck -fn exit {r.returncode}"


def test_sigkill_ext2fs_mid_write_synced_data_survives(run_dir, procs):
    s = Summary("sigkill ext2fs")
    endpoint = start_kernel(run_dir, procs)
    img = run_dir / "ext2fs.img"
    fs = start_fs(procs, run_dir)
    start_server(procs, run_dir, "translators.memfs", "memfs")
    rt = TaskRuntime(endpoint, "client")
    other = TaskRuntime(endpoint, "other")
    try:
        root = look_up(rt, "ext2fs")
        write_synced(rt, root, "synced", SYNCED)
        w = Workload("ext2fs writer", writer(rt, root, "busy"))
        w.start()
        wait_for(lambda: w.done >= 5, 60, what="writes before the fault")
        fs.kill(signal.SIGKILL)
        killed = time.monotonic()
        s.fault("SIGKILL ext2fs during io_write loop")
        wait_for(lambda: w.errors, ERROR_BOUND + 15, what="the writer's error")
        s.note(f"writer got its first error {w.first_error_at - killed:.1f}s after the kill")
        w.stop()
        s.note(w.cost())
        assert w.first_error_at - killed < ERROR_BOUND + 15
        s.note(f"kernel serves: {kernel_serves(endpoint)}")
        s.note(file_roundtrip(other, "memfs", "x", pattern(50_000)))
        s.note(e2fsck(img) + " after SIGKILL (unsynced writes may be lost)")
        (run_dir / "ext2fs.ready").unlink(missing_ok=True)  # the killed one's
        fs2 = start_fs(procs, run_dir, img, name="ext2fs")
        root2 = look_up(rt, "ext2fs")
        f = open_file(rt, root2, "synced", F.O_READ)
        got = read_all(rt, f, len(SYNCED))
        s.note(f"after restart on the same image: synced file {len(got)} bytes, "
               f"equal {got == SYNCED}")
        assert got == SYNCED
        fs2.kill(signal.SIGTERM)
        assert fs2.p.wait(60) == 0
        s.note(e2fsck(img) + " after restart and clean stop")
    finally:
        other.close()
        rt.close()
        s.print()


def test_sigstop_ext2fs_past_heartbeat_then_sigcont(run_dir, procs):
    s = Summary("sigstop ext2fs")
    endpoint = start_kernel(run_dir, procs)
    fs = start_fs(procs, run_dir)
    rt = TaskRuntime(endpoint, "client")
    try:
        root = look_up(rt, "ext2fs")
        write_synced(rt, root, "synced", SYNCED)
        w = Workload("ext2fs writer", writer(rt, root, "busy"), max_errors=1)
        w.start()
        wait_for(lambda: w.done >= 5, 60, what="writes before the fault")
        fs.kill(signal.SIGSTOP)
        stopped = time.monotonic()
        s.fault("SIGSTOP ext2fs 12s (heartbeat timeout 10s)")
        wait_for(lambda: w.errors, ERROR_BOUND, what="the writer's error while stopped")
        s.note(f"writer's first error {w.first_error_at - stopped:.1f}s after SIGSTOP")
        w.stop()
        s.note(w.cost())
        s.note(f"kernel serves while ext2fs is stopped: {kernel_serves(endpoint)}")
        while time.monotonic() < stopped + 12:
            time.sleep(0.2)  # the fault is the length of the stop, not a wait for a result
        fs.kill(signal.SIGCONT)
        s.fault("SIGCONT ext2fs")
        # What must hold: ext2fs serves again, with the synced data.
        rt2 = TaskRuntime(endpoint, "after")
        try:
            f = open_file(rt2, look_up(rt2, "ext2fs", 30), "synced", F.O_READ)
            got = read_all(rt2, f, len(SYNCED))
        finally:
            rt2.close()
        s.note(f"after SIGCONT: ext2fs alive {fs.alive()}, synced file equal {got == SYNCED}")
        assert got == SYNCED
        assert fs.alive()
    finally:
        rt.close()
        s.print()
