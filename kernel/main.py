"""The kernel process: one ROUTER socket, one thread, one event loop.

Frames from a task are ``[identity, header, body, ool...]``.  The kernel checks every
header field for type and range; a trap it cannot parse is answered with
MACH_SEND_INVALID_HEADER, and a peer whose frames make no sense at all is disconnected
(its task destroyed, a K_DISCONNECT frame sent), while everyone else goes on.
"""

from __future__ import annotations

import argparse
import collections
import heapq
import itertools
import os
import select
import signal
import sys
import time
from pathlib import Path

import psutil
import structlog
import zmq

from kernel import host, ipc_trace, mach_port, memory_object, netname, vm_user
from kernel.config import KernelConfig
from kernel.ipc_kmsg import IPCKmsg
from kernel.ipc_mqueue import ipc_mqueue_send, waiter_timeout
from kernel.ipc_notify import IPCNotify
from kernel.ipc_port import (
    KERNEL,
    IPCPort,
    ipc_port_clear_receiver,
    ipc_port_destroy,
    ipc_port_make_send,
)
from kernel.ipc_right import PORT_SEND, release_right
from kernel.ipc_space import T_RECEIVE, T_SEND
from kernel.mach_msg import mach_msg_trap
from kernel.sched_prim import Scheduler
from kernel.task import Task, task_terminate
from kernel.vm_init import VMSystem
from kernel.vm_map import vm_map_create
from kernel.vm_map_copy import vm_map_copyout
from kernel.vm_object import vm_object_deallocate, vm_object_pager_died
from kernel.vm_pageout import POLICIES
from protocol import logs
from protocol import message as M
from protocol.host_secret import (
    MAX_SECRET_BYTES,
    HostSecretError,
    make_host_secret,
    secret_matches,
)
from protocol.kern_return import KernReturn, MachError, MachMsgReturn, MigReturn
from protocol.message import (
    H_DEALLOC,
    H_DESCS,
    H_ID,
    H_LOCAL,
    H_LOCAL_DISP,
    H_OP,
    H_OPTION,
    H_PID,
    H_RCV_NAME,
    H_RCV_TIMEOUT,
    H_REMOTE,
    H_REMOTE_DISP,
    H_ROLE,
    H_SECRET,
    H_SEND_TIMEOUT,
    H_SEQ,
    H_TASK_NAME,
    H_THREAD,
)
from protocol.mig import encode_error_reply
from protocol.transport import readable, send_frames, try_recv_frames

MAX_BATCH = 64  # answers in one K_BATCH
DRAIN_BATCH = 512

log = structlog.get_logger("kernel")


def _is_int(v, lo, hi):
    return type(v) is int and lo <= v <= hi


def _has_thread(h) -> bool:
    """A trap to answer: [op, thread, seq, ...] with a thread and a sequence number."""
    return (len(h) > H_SEQ and _is_int(h[H_THREAD], 1, M.THREAD_MAX)
            and _is_int(h[H_SEQ], 0, 2**63))


def check_msg_header(h) -> bool:
    """The OP_MSG header: every field's type and range (see protocol.message)."""
    if len(h) == H_DEALLOC + 1:
        regions = h[H_DEALLOC]
        if (type(regions) is not list or len(regions) % 2
                or len(regions) > 2 * M.MAX_OOL_DEALLOC):
            return False
        for v in regions:
            if type(v) is not int or not 0 <= v < 2**64:
                return False
    elif len(h) != H_DESCS + 1:
        return False
    for i in range(H_OPTION, H_DESCS):
        if type(h[i]) is not int:
            return False
    option, nmax, tmax = h[H_OPTION], M.NATURAL_MAX, M.MAX_TIMEOUT_MS
    if not (0 <= option <= nmax and -1 <= h[H_SEND_TIMEOUT] <= tmax
            and 0 <= h[H_RCV_NAME] <= nmax and -1 <= h[H_RCV_TIMEOUT] <= tmax):
        return False
    if option & M.MACH_SEND_MSG:
        descs = h[H_DESCS]
        if not (-(2**31) <= h[H_ID] < 2**31 and 0 <= h[H_REMOTE] <= nmax
                and 0 <= h[H_REMOTE_DISP] <= 255 and 0 <= h[H_LOCAL] <= nmax
                and 0 <= h[H_LOCAL_DISP] <= 255 and type(descs) is list
                and len(descs) % 2 == 0 and len(descs) <= 2 * M.MAX_DESCRIPTORS):
            return False
        for i in range(0, len(descs), 2):
            if not (_is_int(descs[i], 0, nmax) and _is_int(descs[i + 1], 0, 255)):
                return False
    return True


class Kernel:
    def __init__(self, endpoint: str, config: KernelConfig | None = None,
                 host_secret: bytes | None = None):
        """``host_secret``: the cluster owner's secret (protocol.host_secret) a hello must
        carry to be given host_priv; None: nobody gets it."""
        self.endpoint = endpoint
        self.host_secret = host_secret
        self.config = config or KernelConfig()
        self.ctx = zmq.Context()
        s = self.ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.ROUTER_MANDATORY, 1)
        s.setsockopt(zmq.MAXMSGSIZE, M.MAX_OOL_BYTES + 65536)
        s.setsockopt(zmq.SNDHWM, 200000)
        s.setsockopt(zmq.RCVHWM, 10000)
        s.bind(endpoint)
        self.sock = s
        self.tasks: dict[bytes, Task] = {}
        self.tasks_by_fd: dict[int, Task] = {}
        self.doomed: list[tuple[Task, str]] = []
        self.dirty: list[Task] = []  # tasks with answers in their outbox
        self.timers: list = []
        self.blocked_bytes = 0  # message bytes held for blocked sends, all tasks
        self._tseq = itertools.count()
        self.stats = collections.Counter()
        self.started = time.time()
        self.running = True
        self.notify = IPCNotify(self)
        self.netname = netname.NameServer(self)
        self.host_port = IPCPort(receiver=KERNEL, kobject=self, kotype="host", label="host")
        self.host_priv_port = IPCPort(receiver=KERNEL, kobject=self, kotype="host_priv",
                                      label="host_priv")
        self.netname_port = IPCPort(receiver=KERNEL, kobject=self.netname, kotype="netname",
                                    label="netname")
        self.sched = Scheduler()
        self.vm = VMSystem(self, self.config)
        policy = POLICIES[self.config.pageout_policy](self.vm)
        self.vm.pageout = policy
        task_server = mach_port.make_handlers(self)
        for rt, fn in vm_user.make_handlers(self).table.values():
            task_server.add(rt, fn)
        self.servers = {"task": task_server,
                        "memory_object_control": memory_object.make_handlers(self),
                        "host": host.make_handlers(self, priv=False),
                        "host_priv": host.make_handlers(self, priv=True),
                        "netname": self.netname.demux(),
                        "trace": ipc_trace.session_demux(self)}
        # select.poll on the socket's ZMQ_FD (edge-triggered: it says the socket's state
        # changed, so the loop drains the socket after every wakeup) and the tasks'
        # pidfds; zmq.Poller would rebuild its pollitems and ask ZMQ_EVENTS per call.
        self.zmq_fd = s.getsockopt(zmq.FD)
        self.poller = select.poll()
        self.poller.register(self.zmq_fd, select.POLLIN)
        self.current_kmsg = None
        self.trace = None  # kernel.ipc_trace.IPCTrace while a session is open

    # ------------------------------------------------------------ helpers for ipc_*

    def ipc_port_destroy(self, port):
        ipc_port_destroy(self, port)

    def ipc_port_clear_receiver(self, port):
        ipc_port_clear_receiver(self, port)

    def cancel_dnrequest(self, space, name, port):
        if port is None:
            return
        notify = port.dnrequests.pop((space, name), None)
        if notify is not None:
            self.notify.port_deleted(notify, name)

    # The IPC layer's calls into the VM (GNU Mach's ipc_kmsg.c and ipc_port.c call these
    # directly; here kernel/ipc_* import nothing of kernel/vm_*).

    def vm_map_copyout(self, task, kmsg):
        return vm_map_copyout(self, task, kmsg)

    def vm_map_copy_discard(self, obj):
        """vm_map_copy_discard: out-of-line data that will not be received."""
        vm_object_deallocate(self.vm, obj)

    def vm_object_pager_died(self, obj):
        vm_object_pager_died(self.vm, obj)

    def kernel_send(self, kmsg: IPCKmsg):
        """mach_msg_send_from_kernel: MACH_SEND_ALWAYS, no queue limit."""
        self.stats["kernel_msgs"] += 1
        if self.trace is not None:
            self.trace.record(kmsg, None, 0)
        ipc_mqueue_send(self, kmsg, always=True)

    def deadline(self, timeout_ms: int):
        return None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000.0

    def add_timer(self, w):
        if w.deadline is not None:
            heapq.heappush(self.timers, (w.deadline, next(self._tseq), w))

    def emit(self, task: Task, frames):
        """Queue an answer for a task.  Answers are sent when the loop has drained what
        arrived (``flush``); several for one task go as one K_BATCH message, so a burst
        costs one socket operation per task, not one per answer."""
        if not task.alive:
            return
        box = task.outbox
        box.append(frames)
        if len(box) == 1:
            self.dirty.append(task)
        elif len(box) >= MAX_BATCH:
            self.flush_task(task)

    def flush_task(self, task: Task):
        box, task.outbox = task.outbox, []
        if not box or not task.alive:
            return
        if len(box) == 1:
            out = [task.ident, *box[0]]
        else:
            out = [task.ident, M.packb([M.K_BATCH, *(len(f) for f in box)])]
            for f in box:
                out += f
        try:
            send_frames(self.sock, out)
        except zmq.ZMQError as e:  # peer gone (EHOSTUNREACH) or not reading (EAGAIN)
            self.doom(task, f"send failed: {e}")

    def flush(self):
        dirty, self.dirty = self.dirty, []
        for t in dirty:
            self.flush_task(t)

    def reply_result(self, task, tid, seq, code, *extra):
        self.emit(task, [M.packb([M.K_RESULT, tid, seq, int(code), *extra])])

    def doom(self, task, why):
        if task.alive and all(t is not task for t, _ in self.doomed):
            self.doomed.append((task, why))

    def stop(self):
        self.running = False

    # ------------------------------------------------------------ kernel-served ports

    def kobject_server(self, kmsg: IPCKmsg):
        """ipc_kobject_server: run the MIG routine for a message to a kernel port and send
        its reply to the reply right."""
        port = kmsg.dest
        demux = self.servers.get(port.kotype)
        if kmsg.dest_type == PORT_SEND:
            port.srights -= 1
        else:
            port.sorights -= 1
        self.stats["kernel_rpcs"] += 1
        if demux is None:  # e.g. a memory object name port: nothing is served there
            rt, code, vals = None, MigReturn.MIG_BAD_ID, ()
        else:
            self.current_kmsg = kmsg
            try:
                rt, code, vals = demux.dispatch(port.kobject, kmsg.msgh_id, kmsg.body,
                                                kmsg.descs, kmsg.ool)
            except Exception:
                log.exception("kernel routine failed", msgh_id=kmsg.msgh_id)
                rt, code, vals = None, KernReturn.KERN_FAILURE, ()
            finally:
                self.current_kmsg = None
        if code == MigReturn.MIG_NO_REPLY:
            return
        if code != 0:
            for p, t in kmsg.descs:
                release_right(self, p, t)
        kmsg.descs = ()
        if kmsg.reply is None:
            return
        reply_id = rt.reply_id if rt is not None else kmsg.msgh_id + 100
        self.mig_reply(rt, reply_id, kmsg.reply, kmsg.reply_type, code, vals)
        kmsg.reply = None

    def mig_reply(self, rt, reply_id, reply, reply_type, code, vals=()):
        """Send a MIG reply (RetCode and, on success, the reply fields, port fields as
        (port, type) pairs) to a reply right the kernel holds."""
        if code != 0:
            body, descs, ool = encode_error_reply(code), [], []
        else:
            body, descs, ool = rt.encode_reply(code, vals, rights=True)
        self.kernel_send(IPCKmsg(reply_id, reply, reply_type, None, 0, descs, body, ool))

    def consume_descs(self):
        """A kernel routine took the rights its request carried: none to release."""
        if self.current_kmsg is not None:
            self.current_kmsg.descs = ()

    def run_or_defer(self, gen, rt):
        """Run a kernel routine's work (a generator, see sched_prim).  If it finishes
        without waiting, return its result for the normal reply; otherwise keep the
        reply right, finish it as a kernel thread, and return MIG_NO_REPLY."""
        try:
            first = gen.send(None)
        except StopIteration as e:
            return e.value
        if self.sched.threads >= self.config.max_kernel_threads:
            gen.close()
            self.stats["kernel_threads_refused"] += 1
            raise MachError(KernReturn.KERN_RESOURCE_SHORTAGE, rt.name)
        kmsg = self.current_kmsg
        reply, reply_type = kmsg.reply, kmsg.reply_type
        kmsg.reply = None
        nrep = len(rt.reply)

        def finish():
            what = first
            try:
                while True:
                    yield what
                    try:
                        what = gen.send(None)
                    except StopIteration as e:
                        result = e.value
                        break
            except MachError as e:
                if reply is not None:
                    self.mig_reply(rt, rt.reply_id, reply, reply_type, e.code)
                return
            if reply is not None:
                vals = () if nrep == 0 else ((result,) if nrep == 1 else tuple(result))
                self.mig_reply(rt, rt.reply_id, reply, reply_type, 0, vals)

        self.sched.spawn(finish(), rt.name)
        return MigReturn.MIG_NO_REPLY

    # ------------------------------------------------------------ tasks

    def task_create(self, ident, pid, name, role) -> Task:
        old = self.tasks.get(ident)
        if old is not None:
            self.task_destroy(old, "reconnected")
        t = Task(ident, pid, name, role)
        t.map = vm_map_create(self.vm)
        self.tasks[ident] = t
        try:
            if not self.endpoint.startswith("ipc://"):
                # A peer over the network names any pid it likes: only a local socket
                # peer's pid is believed (and its liveness read from a pidfd).
                raise OSError("not a local endpoint")
            t.pidfd = os.pidfd_open(pid)
            self.tasks_by_fd[t.pidfd] = t
            self.poller.register(t.pidfd, select.POLLIN)
        except (OSError, AttributeError):
            t.pidfd = None  # not on this host, or no pidfd: the heartbeat decides
        self.stats["tasks_created"] += 1
        log.info("task created", task=name, task_id=t.id, pid=pid, role=role)
        return t

    def task_destroy(self, task, why):
        if not task.alive:
            return
        log.info("task destroyed", task=task.name, task_id=task.id, pid=task.pid, why=why)
        if self.tasks.get(task.ident) is task:
            del self.tasks[task.ident]
        if task.pidfd is not None:
            self.poller.unregister(task.pidfd)
            self.tasks_by_fd.pop(task.pidfd, None)
            os.close(task.pidfd)
            task.pidfd = None
        self.stats["tasks_destroyed"] += 1
        task_terminate(self, task)

    def disconnect(self, ident, task, code, why):
        """Drop a misbehaving peer: its task dies, everyone else goes on."""
        self.stats["peers_disconnected"] += 1
        if task is not None:
            self.task_destroy(task, why)
        try:
            self.sock.send_multipart([ident, M.packb([M.K_DISCONNECT, 0, 0, int(code)])],
                                     flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    # ------------------------------------------------------------ frames

    def handle(self, frames):
        ident = frames[0]
        task = self.tasks.get(ident)
        n = len(frames)
        if n < 2 or n > M.MAX_FRAMES + 1 or len(frames[1]) > M.MAX_HEADER_BYTES:
            self.disconnect(ident, task, MachMsgReturn.MACH_SEND_INVALID_HEADER, "bad frames")
            return
        try:
            h = M.unpackb(frames[1])
        except Exception:
            h = None
        if type(h) is not list or not h or type(h[H_OP]) is not int:
            self.disconnect(ident, task, MachMsgReturn.MACH_SEND_INVALID_HEADER, "bad header")
            return
        op = h[H_OP]
        if task is not None:
            task.last_seen = time.monotonic()
        if op == M.OP_MSG and task is not None:
            if not _has_thread(h):
                self.disconnect(ident, task, MachMsgReturn.MACH_SEND_INVALID_HEADER,
                                "no thread in trap")
                return
            task.traps += 1
            if (not check_msg_header(h) or n < 3 or len(frames[2]) > M.MAX_BODY_BYTES
                    or any(len(f) > M.MAX_OOL_BYTES for f in frames[3:])):
                self.stats["bad_traps"] += 1
                self.reply_result(task, h[H_THREAD], h[H_SEQ],
                                  MachMsgReturn.MACH_SEND_INVALID_HEADER)
                return
            try:
                mach_msg_trap(self, task, h, frames)
            except Exception:
                # a kernel bug must not leave the thread waiting forever
                log.exception("mach_msg trap failed", task=task.name, msgh_id=h[H_ID])
                self.stats["internal_errors"] += 1
                self.reply_result(task, h[H_THREAD], h[H_SEQ], KernReturn.KERN_FAILURE)
        elif op == M.OP_HEARTBEAT and task is not None and len(h) == 1:
            self.emit(task, [M.packb([M.K_RESULT, 0, 0, 0])])
        elif op == M.OP_REPLY_PORT and task is not None:
            if len(h) != H_SEQ + 1 or not _has_thread(h):
                self.disconnect(ident, task, MachMsgReturn.MACH_SEND_INVALID_HEADER, "bad trap")
                return
            port = IPCPort(receiver=task.space, qlimit=self.config.qlimit_default)
            name = task.space.insert(port, T_RECEIVE)
            self.reply_result(task, h[H_THREAD], h[H_SEQ], 0, name)
        elif op == M.OP_HELLO:
            if not (H_ROLE + 1 <= len(h) <= H_SECRET + 1 and _has_thread(h)
                    and _is_int(h[H_PID], 0, 2**31)
                    and type(h[H_TASK_NAME]) is str and len(h[H_TASK_NAME]) <= 128
                    and type(h[H_ROLE]) is str and len(h[H_ROLE]) <= 64
                    and (len(h) == H_ROLE + 1 or (type(h[H_SECRET]) is bytes
                                                  and len(h[H_SECRET]) <= MAX_SECRET_BYTES))):
                self.disconnect(ident, task, MachMsgReturn.MACH_SEND_INVALID_HEADER, "bad hello")
                return
            if task is None and len(self.tasks) >= self.config.max_tasks:
                self.disconnect(ident, None, KernReturn.KERN_RESOURCE_SHORTAGE, "too many tasks")
                return
            t = self.task_create(ident, h[H_PID], h[H_TASK_NAME], h[H_ROLE])
            sp = t.space
            names = []
            for port in (t.port, self.host_port, self.netname_port):
                ipc_port_make_send(port)
                names.append(sp.insert(port, T_SEND, 1))
            priv = M.MACH_PORT_NULL
            if len(h) > H_SECRET:
                if secret_matches(h[H_SECRET], self.host_secret):
                    ipc_port_make_send(self.host_priv_port)
                    priv = sp.insert(self.host_priv_port, T_SEND, 1)
                    self.stats["host_priv_granted"] += 1
                else:
                    self.stats["host_priv_refused"] += 1
                    log.warning("wrong host secret: no host_priv", task=t.name,
                                task_id=t.id, pid=t.pid)
            self.emit(t, [M.packb([M.K_HELLO, h[H_THREAD], h[H_SEQ], 0, *names, t.id,
                                   priv])])
        elif op == M.OP_BYE and task is not None and len(h) == 1:
            self.task_destroy(task, "goodbye")
        else:
            self.disconnect(ident, task, MachMsgReturn.MACH_SEND_INVALID_HEADER,
                            "unknown operation" if task is not None else "not a task")

    # ------------------------------------------------------------ loop

    def run_timers(self):
        now = time.monotonic()
        timers = self.timers
        while timers and timers[0][0] <= now:
            _, _, w = heapq.heappop(timers)
            if not w.done:
                waiter_timeout(self, w)

    def check_heartbeats(self):
        """Destroy the tasks silent for heartbeat_timeout whose process the kernel cannot
        see.  A local task (a pidfd: its exit is seen at once) is kept while its process
        lives: one stopped (SIGSTOP) or starved is not dead, and its clients wait or time
        out until it runs again.  Its silence is logged once."""
        now = time.monotonic()
        limit = now - self.config.heartbeat_timeout
        for t in list(self.tasks.values()):
            if t.last_seen >= limit:
                continue
            if t.pidfd is None:
                self.task_destroy(t, "no heartbeat")
                continue
            try:
                status = psutil.Process(t.pid).status()
            except psutil.Error:
                status = psutil.STATUS_DEAD
            if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                self.task_destroy(t, "process exited")
            elif t.last_seen >= limit - 1.0:  # the first check after the limit passed
                log.warning("task silent, process alive", task=t.name, task_id=t.id,
                            pid=t.pid, status=status, seconds=round(now - t.last_seen, 1))

    def reap(self):
        while self.doomed:
            t, why = self.doomed.pop()
            self.task_destroy(t, why)

    def run(self):
        """The kernel's loop: sleep until the socket or a task's pidfd wakes it, a
        timer is due or a kernel thread can run; take every message queued (at most
        DRAIN_BATCH before looking at the rest), answer them all, run what they made
        runnable."""
        sock = self.sock
        next_hb = time.monotonic() + 1.0
        sched = self.sched
        sched.spawn(self.vm.pageout.daemon(), "vm_pageout")
        poll = self.poller.poll
        zfd = self.zmq_fd
        tasks_by_fd = self.tasks_by_fd
        handle = self.handle
        more = True  # the socket may hold messages: do not sleep before draining it
        while self.running:
            if more or sched.runq:
                timeout = 0
            else:
                timeout = 200.0
                now = time.monotonic()
                if self.timers:
                    timeout = max(0.0, min(timeout, (self.timers[0][0] - now) * 1000))
                d = sched.next_deadline()
                if d is not None:
                    timeout = max(0.0, min(timeout, (d - now) * 1000))
                # Sending may have consumed the fd's wakeup for messages that arrived
                # meanwhile (libzmq processes its mailbox in any socket call): ask the
                # socket itself before sleeping on the fd.
                if timeout and readable(sock):
                    timeout = 0
            for fd, _ in poll(timeout):  # EINTR is retried by Python (PEP 475)
                if fd != zfd:
                    t = tasks_by_fd.get(fd)
                    if t is not None:
                        self.task_destroy(t, "process exited")
            more = False
            for _ in range(DRAIN_BATCH):
                frames = try_recv_frames(sock)
                if frames is None:
                    break
                try:
                    handle(frames)
                except Exception:
                    log.exception("trap failed")
                    self.stats["internal_errors"] += 1
                if sched.runq:
                    sched.run()
                if self.doomed:
                    self.reap()
            else:
                more = True
            now = time.monotonic()
            if self.timers and self.timers[0][0] <= now:
                self.run_timers()
            d = sched.next_deadline()
            if sched.runq or (d is not None and d <= now):
                sched.run()
            if self.doomed:
                self.reap()
            if self.dirty:
                self.flush()
            if now >= next_hb:
                self.check_heartbeats()
                next_hb = now + 1.0
        log.info("kernel stopping", tasks=len(self.tasks))

    def close(self):
        for t in list(self.tasks.values()):
            try:
                self.sock.send_multipart([t.ident, M.packb([M.K_DISCONNECT, 0, 0, 0])],
                                         flags=zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        self.sock.close(linger=0)
        self.ctx.term()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="machemu-kernel", description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default=os.environ.get("MACHEMU_RUN_DIR", "run"))
    ap.add_argument("--endpoint", help="default ipc://RUN_DIR/kernel.sock")
    ap.add_argument("--config", help="TOML file with a [kernel] table")
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    run_dir = Path(args.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    endpoint = args.endpoint or f"ipc://{run_dir}/kernel.sock"
    logs.setup("kernel", run_dir / "kernel.log", args.log_level)
    try:
        # The launcher made it with the run directory; a kernel started alone makes it.
        secret = make_host_secret(run_dir)
    except HostSecretError as e:
        log.error("host secret not trusted", error=str(e))
        sys.exit(f"machemu-kernel: {e}")
    k = Kernel(endpoint, KernelConfig.load(args.config), host_secret=secret)

    def on_signal(signum, frame):
        k.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Atomically: a reader polling for the file must never see it empty.
    tmp = run_dir / f".kernel.ready.{os.getpid()}"
    tmp.write_text(endpoint + "\n")
    os.replace(tmp, run_dir / "kernel.ready")
    log.info("kernel ready", endpoint=endpoint, pid=os.getpid())
    try:
        k.run()
    finally:
        k.close()
        try:
            (run_dir / "kernel.ready").unlink()
        except FileNotFoundError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
