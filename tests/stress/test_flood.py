"""Flood a port whose receiver does not receive: user senders must block, so the kernel's
memory stays bounded however many messages they try to send (ipc_mqueue_send blocks a
sender at the queue limit; nothing piles up in the kernel but one message per blocked
thread).  Then the receiver drains everything, and every message arrives intact.

Figures (kernel RSS before, with every sender blocked, and the peak while draining) are
printed for the closing note.
"""

from __future__ import annotations

import os
import time
import uuid

import psutil
import pytest
import zmq

from protocol import message as M
from protocol.defs import mach_port as P
from protocol.defs import machemu as X
from protocol.defs import netname as NS
from protocol.runtime import TaskRuntime
from protocol.vm_param import PAGE_SIZE
from tests.conftest import start_kernel, wait_for

pytestmark = [pytest.mark.stress, pytest.mark.timeout(240)]

PROCS = 3
THREADS = 8
MSGS = 120  # per thread: 2,880 messages of 4 KiB in all
PAGE = PAGE_SIZE
MAX_GROWTH = 64 << 20

SENDER = r'''
import os, sys, threading, time
from protocol import runtime, message as M
from protocol.defs import netname as NS
from protocol.runtime import TaskRuntime
from protocol.kern_return import MachError

rt = runtime.connect(os.environ["MACHEMU_KERNEL"], name=os.environ["TASK_NAME"])
THREADS, MSGS, IDX = int(os.environ["THREADS"]), int(os.environ["MSGS"]), int(os.environ["IDX"])
deadline = time.monotonic() + 60
while True:
    try:
        dest = NS.netname_look_up(rt.name_server, "", "sink")
        break
    except MachError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.02)
errors = []

def worker(t):
    try:
        for j in range(MSGS):
            page = bytes([(IDX * 31 + t * 7 + j) % 256]) * 4096
            rt.send(M.Message(7000, dest, M.MACH_MSG_TYPE_COPY_SEND,
                              body=M.packb([IDX, t, j]), ool=[page]), timeout=120)
    except Exception as e:
        errors.append(repr(e))

ths = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
for th in ths:
    th.start()
for th in ths:
    th.join()
print("errors", errors, flush=True)
rt.close()
sys.exit(1 if errors else 0)
'''


def rss(pid):
    return psutil.Process(pid).memory_info().rss


def test_flood_blocked_senders_bounded_kernel_memory(kernel, tasks, procs):
    kpid = kernel.proc.pid
    sink = tasks.new("sink")
    p = P.mach_port_allocate(sink.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=sink)
    P.mach_port_insert_right(sink.task_self, p, (p, M.MACH_MSG_TYPE_MAKE_SEND), rt=sink)
    NS.netname_check_in(sink.name_server, "sink", p, p, rt=sink)

    def attrs():
        return X.mach_port_get_attributes(sink.task_self, p, X.MACH_PORT_RECEIVE_STATUS,
                                          rt=sink)

    before = rss(kpid)
    senders = []
    for i in range(PROCS):
        env = {"MACHEMU_KERNEL": str(kernel), "TASK_NAME": f"flood{i}", "IDX": str(i),
               "THREADS": str(THREADS), "MSGS": str(MSGS)}
        senders.append(procs.python(SENDER, name=f"flood{i}", env=env))

    # Every sender thread ends up blocked on the full queue; nothing else accumulates.
    total_threads = PROCS * THREADS

    def all_blocked():
        for s in senders:
            assert s.p.poll() is None, s.output()
        a = attrs()
        return a if a["blocked_senders"] == total_threads else None

    a = wait_for(all_blocked, 60, what="every sender blocked")
    assert a["msgcount"] == a["qlimit"] == M.MACH_PORT_QLIMIT_DEFAULT
    # They stay blocked: the queue does not grow past its limit.
    samples = []
    for _ in range(5):
        samples.append(rss(kpid))
        a = attrs()
        assert a["msgcount"] == M.MACH_PORT_QLIMIT_DEFAULT
        assert a["blocked_senders"] == total_threads
    blocked = max(samples)
    info = X.machemu_kernel_info(sink.host_priv, rt=sink)
    blocked_bytes = sum(t["blocked_bytes"] for t in info["tasks"])
    assert blocked_bytes <= total_threads * (PAGE + 64)

    # Drain: every message arrives, with its page intact; senders keep flooding meanwhile.
    t0 = time.monotonic()
    peak = blocked
    seen = set()
    total = PROCS * THREADS * MSGS
    for n in range(total):
        m = sink.receive(p, timeout=60)
        idx, t, j = M.unpackb(m.body)
        assert len(m.ool) == 1 and len(m.ool[0]) == PAGE
        assert bytes(m.ool[0][:1]) * PAGE == bytes(m.ool[0])
        assert m.ool[0][0] == (idx * 31 + t * 7 + j) % 256
        seen.add((idx, t, j))
        if n % 200 == 0:
            peak = max(peak, rss(kpid))
            assert attrs()["msgcount"] <= M.MACH_PORT_QLIMIT_DEFAULT
    drain_s = time.monotonic() - t0
    assert len(seen) == total
    for s in senders:
        assert s.p.wait(60) == 0, s.output()
    after = rss(kpid)
    growth = max(blocked, peak) - before
    print(f"\nflood: {PROCS} procs x {THREADS} threads x {MSGS} msgs of {PAGE} B "
          f"({total} msgs, {total * PAGE / 2**20:.1f} MiB); kernel RSS before "
          f"{before / 2**20:.1f} MiB, all blocked {blocked / 2**20:.1f} MiB, peak while "
          f"draining {peak / 2**20:.1f} MiB, after {after / 2**20:.1f} MiB; growth "
          f"{growth / 2**20:.1f} MiB; blocked bytes {blocked_bytes}; drained in "
          f"{drain_s:.1f} s")
    assert growth < MAX_GROWTH


def split_answers(frames):
    """The kernel sends several answers to one task as one K_BATCH message."""
    hdr = M.unpackb(frames[0])
    if hdr[M.A_KIND] != M.K_BATCH:
        return [frames]
    out, i = [], 1
    for count in hdr[M.A_COUNTS:]:
        out.append(frames[i:i + count])
        i += count
    return out


def test_pipelined_sends_bounded_per_task(run_dir, procs):
    """A task that pipelines traps without waiting (a raw DEALER, one thread id per
    trap) gets MACH_SEND_NO_BUFFER once its blocked sends hold the per-task byte limit:
    the kernel keeps no more of its messages than the configured bound."""
    limit = 2 << 20
    endpoint = start_kernel(run_dir, procs, max_blocked_bytes_per_task=limit,
                            max_waiters_per_task=100000)
    kp = procs[-1]
    sink = TaskRuntime(endpoint, "sink")
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.ROUTING_ID, b"r" + uuid.uuid4().bytes)
    s.connect(endpoint)
    try:
        p = P.mach_port_allocate(sink.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=sink)
        P.mach_port_insert_right(sink.task_self, p, (p, M.MACH_MSG_TYPE_MAKE_SEND), rt=sink)
        NS.netname_check_in(sink.name_server, "sink", p, p, rt=sink)

        def trap(frames):
            s.send_multipart(frames)
            assert s.poll(10000)
            return M.unpackb(s.recv_multipart()[0])

        h = trap([M.packb([M.OP_HELLO, 1, 1, os.getpid(), "pipeliner", "task"]), b""])
        ns = h[M.A_NAME_SERVER]
        rp = trap([M.packb([M.OP_REPLY_PORT, 1, 2])])[M.A_VALUE]
        body, _, _ = NS.netname_look_up.encode_request(["", "sink"])
        r = trap([M.packb([M.OP_MSG, 1, 3, M.MACH_SEND_MSG | M.MACH_RCV_MSG, -1, rp, -1,
                           NS.netname_look_up.msgh_id, ns, 19, rp, 21, []]), body])
        dest = r[M.A_DESCS][0]
        before = rss(kp.pid)
        n = 3000
        page = b"\x5a" * PAGE
        for i in range(n):
            s.send_multipart([M.packb([M.OP_MSG, 10 + i, 100 + i, M.MACH_SEND_MSG, -1, 0, -1,
                                       7000, dest, 19, 0, 0, []]), b"\x90", page])
        codes = {}
        expected = n - limit // (PAGE + 1)  # all but the blocked ones answer
        got = 0
        while got < expected:
            assert s.poll(20000)
            for ans in split_answers(s.recv_multipart()):
                c = M.unpackb(ans[0])[M.A_CODE]
                codes[c] = codes.get(c, 0) + 1
                got += 1
        a = X.mach_port_get_attributes(sink.task_self, p, X.MACH_PORT_RECEIVE_STATUS, rt=sink)
        during = rss(kp.pid)
        blocked = a["blocked_senders"]
        print(f"\npipelined: {n} sends of {PAGE} B from one task; answers {codes}; "
              f"{blocked} blocked; kernel RSS {before / 2**20:.1f} -> {during / 2**20:.1f} MiB")
        assert codes == {0: M.MACH_PORT_QLIMIT_DEFAULT,
                         0x1000000D: n - M.MACH_PORT_QLIMIT_DEFAULT - blocked}
        assert blocked * (PAGE + 1) <= limit and blocked == limit // (PAGE + 1)
        assert during - before < MAX_GROWTH
    finally:
        s.close(linger=0)
        ctx.term()
        sink.close()
