"""The kernel's own cost of a routed message, without the scheduling around it.

``python -m lab.bench.inproc [N] [--profile]`` builds a real kernel (kernel.main.Kernel)
in this process with two tasks connected by real DEALER sockets, then drives the routed
path N times by calling ``Kernel.handle`` with the frames a task would send: a
one-way demo_send of a 4 KiB page (ipc_kmsg_copyin, the queue, kmem_alloc_wired), the
server's receive trap with the previous message's out-of-line region to give back
(ool_deallocate, deliver, vm_map_copyout), and the answers flushed down the sockets.
It prints the time spent in those kernel calls per routed message: what the kernel's
Python costs per message when no wakeup, poll or context switch is paid
(``scripts/bench``'s info.routed_kernel_us_per_msg pays those too).  ``--path vm_read``
times instead the sending task's RPC trap vm_read of a resident page of its own (the
kobject server, vm_fault_range, the reply's region mapped into the caller, given back by
the next trap).  ``--profile`` adds a cProfile of the loop, by own time.
docs/performance.md says how it was used.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import time

import zmq

from kernel.config import KernelConfig
from kernel.ipc_port import IPCPort, ipc_port_make_send
from kernel.ipc_space import T_RECEIVE, T_SEND
from kernel.main import Kernel
from protocol import message as M
from protocol.defs.demo import demo_send
from protocol.defs.mach import vm_allocate, vm_read, vm_write
from protocol.transport import send_frames, try_recv_frames

WARM = 2000  # routed messages before timing (frames touched, caches warm)
ANSWER_MS = 10_000  # how long a socket may take to hold the message awaited


class RoutedPath:
    """A kernel, a sending task and a receiving task holding a port (qlimit 16)."""

    def __init__(self, physical_pages: int = 2048):
        self.dir = tempfile.mkdtemp(prefix="mxi", dir="/tmp")
        ep = f"ipc://{self.dir}/kernel.sock"
        self.k = Kernel(ep, KernelConfig(physical_pages=physical_pages))
        self.ctx = zmq.Context()
        self.socks = {}
        for ident, name in ((b"tS", "sender"), (b"tR", "server")):
            s = self.ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.ROUTING_ID, ident)
            s.setsockopt(zmq.RCVHWM, 0)
            s.connect(ep)
            send_frames(s, [M.packb([M.OP_HELLO, 1, 1, os.getpid(), name, "client"])],
                        block=True)
            self._handle_one()
            self.socks[ident] = s
            self._drain(s, wait=True)
        rcv = self.k.tasks[b"tR"]
        port = IPCPort(receiver=rcv.space, qlimit=M.MACH_PORT_QLIMIT_MAX)
        self.rcv_name = rcv.space.insert(port, T_RECEIVE)
        ipc_port_make_send(port)
        self.snd_name = self.k.tasks[b"tS"].space.insert(port, T_SEND, 1)
        # demo_send's request as the runtime encodes it: a body and one OOL page.
        self.msg = demo_send.message(self.snd_name, [os.urandom(4096)])
        self.seq = 1
        self.last_ool = 0

    def _handle_one(self):
        """The next trap the kernel's socket receives (within ANSWER_MS), handled and
        answered."""
        if not self.k.sock.poll(ANSWER_MS, zmq.POLLIN):
            raise RuntimeError("the kernel's socket received nothing")
        self.k.handle(try_recv_frames(self.k.sock))
        self.k.flush()

    @staticmethod
    def _drain(s, wait: bool = False):
        """Every answer queued on ``s`` (with ``wait``, once one came within ANSWER_MS);
        the last one, None if none."""
        if wait and not s.poll(ANSWER_MS, zmq.POLLIN):
            raise RuntimeError("no answer from the kernel")
        last = None
        while (frames := try_recv_frames(s)) is not None:
            last = frames
        return last

    def route(self, n: int) -> float:
        """``n`` routed messages: the send trap, the receive trap giving back the region
        of the message before, the answers; the receiver reads each message as it comes
        (the sender its answers now and then).  Returns the seconds spent in the kernel
        (handle and flush: CPU of this thread, so time the host gives other threads is left
        out), the tasks' reading left out."""
        k = self.k
        handle, flush, clock = k.handle, k.flush, time.thread_time
        m = self.msg
        hdr = [M.OP_MSG, 1, 0, M.MACH_SEND_MSG, -1, 0, -1, m.msgh_id, m.remote_port,
               m.remote_disp, 0, 0, []]
        snd, rcv = self.socks[b"tS"], self.socks[b"tR"]
        spent = 0.0
        for i in range(n):
            self.seq += 1
            hdr[M.H_SEQ] = self.seq
            send = [b"tS", M.packb(hdr), m.body, *m.ool]
            rh = [M.OP_MSG, 1, self.seq, M.MACH_RCV_MSG, -1, self.rcv_name, -1, 0, 0, 0, 0,
                  0, []]
            if self.last_ool:
                rh.append([self.last_ool, len(m.ool[0])])
                self.last_ool = 0
            receive = [b"tR", M.packb(rh), b""]
            t0 = clock()
            handle(send)
            handle(receive)
            flush()
            spent += clock() - t0
            got = self._drain(rcv, wait=True)
            h = M.unpackb(got[0])
            if h[M.A_KIND] != M.K_MSG or not h[M.A_OOL_ADDRS]:
                raise RuntimeError(f"the receive trap got {h!r}")
            self.last_ool = h[M.A_OOL_ADDRS][0]
            if i % 8 == 7:
                self._drain(snd)
        return spent

    def close(self):
        for s in self.socks.values():
            s.close(linger=0)
        self.ctx.term()
        self.k.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class ReadPath(RoutedPath):
    """The same kernel; the sending task vm_reads a resident page of its own map."""

    def __init__(self, physical_pages: int = 2048):
        super().__init__(physical_pages)
        s = self.socks[b"tS"]
        send_frames(s, [M.packb([M.OP_REPLY_PORT, 1, 2])], block=True)  # mach_reply_port
        self._handle_one()
        self.reply_name = M.unpackb(self._drain(s, wait=True)[0])[M.A_VALUE]
        task = self.k.tasks[b"tS"]
        self.self_name = task.space.name_of(task.port)
        self.seq = 2
        self.addr = self.rpc(vm_allocate, [0, 4096, True])[0]
        self.page = os.urandom(4096)
        self.rpc(vm_write, [self.addr, self.page])

    def trap(self, routine, args, dealloc=None) -> list:
        """The frames of one RPC trap (send + receive on the reply port) to the task's
        own port, as the runtime sends it."""
        m = routine.message(self.self_name, args, self.reply_name)
        self.seq += 1
        h = [M.OP_MSG, 1, self.seq, M.MACH_SEND_MSG | M.MACH_RCV_MSG, -1, self.reply_name,
             -1, m.msgh_id, m.remote_port, m.remote_disp, m.local_port, m.local_disp,
             m.descs]
        if dealloc:
            h.append(dealloc)
        return [b"tS", M.packb(h), m.body, *m.ool]

    def rpc(self, routine, args):
        """One RPC through handle, its reply's values (RuntimeError on a failure)."""
        self.k.handle(self.trap(routine, args))
        self.k.flush()
        got = self._drain(self.socks[b"tS"], wait=True)
        if M.unpackb(got[0])[M.A_KIND] != M.K_MSG:
            raise RuntimeError(f"{routine.name}: the trap answered {M.unpackb(got[0])!r}")
        code, vals = routine.decode_reply(got[1], [], got[2:])
        if code:
            raise RuntimeError(f"{routine.name}: {code}")
        return vals

    def read(self, n: int) -> float:
        """``n`` vm_reads of the resident page, each giving back the previous reply's
        region; the seconds of this thread's CPU spent in handle and flush."""
        k, clock, s = self.k, time.thread_time, self.socks[b"tS"]
        spent, last = 0.0, None
        for _ in range(n):
            frames = self.trap(vm_read, [self.addr, 4096], last)
            t0 = clock()
            k.handle(frames)
            k.flush()
            spent += clock() - t0
            got = self._drain(s, wait=True)
            h = M.unpackb(got[0])
            if got[-1] != self.page or not h[M.A_OOL_ADDRS]:
                raise RuntimeError(f"vm_read answered {h!r}")
            last = [h[M.A_OOL_ADDRS][0], 4096]
        return spent


def measure(n: int, profile: bool = False, path_name: str = "routed") -> dict:
    """Microseconds in the kernel per routed message (``path_name`` "routed") or per
    resident vm_read ("vm_read"), over ``n`` after WARM; with ``profile`` the cProfile
    text of the timed loop as "profile"."""
    reading = path_name == "vm_read"
    path = ReadPath() if reading else RoutedPath()
    run = path.read if reading else path.route
    try:
        run(WARM)
        prof = cProfile.Profile() if profile else None
        if prof is not None:
            prof.enable()
        spent = run(n)
        if prof is not None:
            prof.disable()
        out = {"path": path_name, "calls": n, "kernel_us_per_msg": spent / n * 1e6,
               "delivered": path.k.stats["msgs_delivered"],
               # the regions given back as they came: the receiver's map stays small
               "receiver_map_entries": len(path.k.tasks[b"tS" if reading else b"tR"].map)}
        if prof is not None:
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(30)
            out["profile"] = buf.getvalue()
        return out
    finally:
        path.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.bench.inproc",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=20000, help="calls timed")
    ap.add_argument("--path", choices=("routed", "vm_read"), default="routed",
                    help="routed one-way messages (default) or vm_read of a resident page")
    ap.add_argument("--profile", action="store_true", help="cProfile of the timed loop")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.n < 1:
        ap.error("n must be at least 1")
    r = measure(a.n, a.profile, a.path)
    if a.json:
        print(json.dumps({k: v for k, v in r.items() if k != "profile"}))
    else:
        what = "resident vm_read" if a.path == "vm_read" else "routed message"
        print(f"{r['kernel_us_per_msg']:.1f} us in the kernel per {what} ({a.n} "
              f"timed after {WARM}; receiver's map: {r['receiver_map_entries']} entries)")
    if a.profile:
        print(r["profile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
