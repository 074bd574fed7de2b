"""A translator stopped with SIGSTOP for longer than the kernel's heartbeat timeout (and
than the runtime's KERNEL_DEAD_AFTER) keeps its task: a client's call meanwhile times
out, and after SIGCONT the same translator serves the client again with its bytes
intact.  Heartbeat loss destroys only tasks whose process the kernel cannot see."""

from __future__ import annotations

import signal
import time

import pytest

from protocol import runtime
from protocol.defs import fs as F
from protocol.defs import netname as NS
from protocol.kern_return import MachError
from tests.conftest import log_records, start_kernel, start_server, wait_for

RW = F.O_READ | F.O_WRITE
T = 30
HEARTBEAT = 2.0  # the kernel's heartbeat_timeout for this test
STOPPED = max(3 * HEARTBEAT, runtime.KERNEL_DEAD_AFTER + 2.0)
DATA = bytes(range(256)) * 64


@pytest.mark.timeout(120)
@pytest.mark.parametrize("module", ["translators.ext2fs", "translators.memfs"])
def test_stopped_translator_keeps_its_task(run_dir, procs, module):
    endpoint = start_kernel(run_dir, procs, heartbeat_timeout=HEARTBEAT)
    name = module.rsplit(".", 1)[1]
    extra = ("--sync-interval", "0") if name == "ext2fs" else ()
    p = start_server(procs, run_dir, module, name, *extra)
    rt = runtime.TaskRuntime(endpoint, "client")
    try:
        root = NS.netname_look_up(rt.name_server, "", name, timeout=T, rt=rt)
        _, _, f = F.dir_lookup(root, "f", F.O_CREAT | RW, 0o644, timeout=T, rt=rt)
        assert F.io_write(f, DATA, 0, timeout=T, rt=rt) == len(DATA)

        p.kill(signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            # Served by nobody while stopped: the call times out, nothing else.
            with pytest.raises(MachError):
                F.io_read(f, 0, 16, timeout=1.0, rt=rt)
            wait_for(lambda: any(r.get("event") == "task silent, process alive"
                                 for r in log_records(run_dir / "kernel.log")),
                     timeout=T, what="the kernel to notice the silence")
            left = STOPPED - (time.monotonic() - stopped_at)
            if left > 0:
                time.sleep(left)  # the condition under test is the stop's length itself
        finally:
            p.kill(signal.SIGCONT)

        assert F.io_read(f, 0, len(DATA), timeout=T, rt=rt) == DATA
        assert F.io_write(f, b"after", 0, timeout=T, rt=rt) == 5
        assert F.io_read(f, 0, 5, timeout=T, rt=rt) == b"after"
        assert p.alive(), p.output()
        destroyed = [r for r in log_records(run_dir / "kernel.log")
                     if r.get("event") == "task destroyed" and r.get("task") == name]
        assert not destroyed, destroyed
        gone = [r for r in log_records(run_dir / f"{name}.log")
                if r.get("event") == "kernel not answering"]
        assert not gone, gone
    finally:
        rt.close()


@pytest.mark.timeout(60)
def test_silent_peer_the_kernel_cannot_see_is_destroyed(run_dir, procs):
    """The other side of the rule: a task whose process is not on this host (here: a
    pid no process has) is destroyed once it stops heart-beating."""
    import zmq

    from protocol import message as M

    endpoint = start_kernel(run_dir, procs, heartbeat_timeout=HEARTBEAT)
    pid_max = int(open("/proc/sys/kernel/pid_max").read())
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send_multipart([M.packb([M.OP_HELLO, 1, 1, pid_max + 1, "faraway", "task"]),
                             b""])
        assert sock.poll(T * 1000)
        hdr = M.unpackb(sock.recv_multipart()[0])
        assert hdr[M.A_KIND] == M.K_HELLO and hdr[M.A_CODE] == 0, hdr
        wait_for(lambda: [r for r in log_records(run_dir / "kernel.log")
                          if r.get("event") == "task destroyed"
                          and r.get("task") == "faraway" and r.get("why") == "no heartbeat"],
                 timeout=T, what="the silent remote task to be destroyed")
    finally:
        sock.close(linger=0)
        ctx.term()


@pytest.mark.timeout(120)
def test_sigterm_stops_ext2fs_in_bound_while_the_kernel_is_stopped(run_dir, procs):
    """A sync in flight that the kernel will not answer (the kernel is stopped) does not
    hold a SIGTERM'd ext2fs: its waits end once the runtime gives the kernel up (after
    KERNEL_DEAD_AFTER), well before libpager's 60 s deadline."""
    endpoint = start_kernel(run_dir, procs)
    kernel = procs[-1]
    p = start_server(procs, run_dir, "translators.ext2fs", "ext2fs", "--sync-interval", "0.5")
    rt = runtime.TaskRuntime(endpoint, "client")
    try:
        root = NS.netname_look_up(rt.name_server, "", "ext2fs", timeout=T, rt=rt)
        for i in range(4):
            _, _, f = F.dir_lookup(root, f"f{i}", F.O_CREAT | RW, 0o644, timeout=T, rt=rt)
            assert F.io_write(f, DATA, 0, timeout=T, rt=rt) == len(DATA)
        kernel.kill(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            p.kill(signal.SIGTERM)
            p.p.wait(45)
            assert time.monotonic() - t0 < 45
        finally:
            kernel.kill(signal.SIGCONT)
    finally:
        rt.close()
