"""The task runtime: a process's one DEALER socket to the kernel, shared by its threads.

Every thread of a task process calls ``mach_msg`` through one ``TaskRuntime``.  A thread
sends its trap itself, under the socket lock.  Receiving follows the leader/followers
pattern: of the threads waiting for an answer, one (the leader) reads the socket and
hands other threads' answers to their mailboxes; when its own answer comes it resigns
and passes the role to a waiting follower.  A lone thread doing RPCs thus reads its own
reply with no thread hand-off.  The runtime's I/O thread sends the heartbeat the kernel
uses to tell a live task from a hung one, and reads the socket when no thread does.

ZeroMQ's FD is edge-triggered and any operation on the socket may consume the edge, so
a thread that sends checks ZMQ_EVENTS afterwards and wakes the leader if input is
pending; the leader re-checks before it sleeps.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import select
import threading
import time
import uuid
from pathlib import Path

import structlog
import zmq

from protocol import message as M
from protocol import mig
from protocol.kern_return import MachError, MachMsgReturn
from protocol.transport import readable, send_frames, try_recv_frames
from protocol.vm_param import round_page

if not structlog.is_configured():
    # A process that did not call protocol.logs.setup() must not get log lines on stdout
    # (scripts print JSON there): warnings and errors go to stderr.
    import logging
    import sys

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr))

log = structlog.get_logger("runtime")

_EMPTY = object()
_LEAD = object()  # mailbox token: the reader role is yours

HEARTBEAT_INTERVAL = 0.5
FOLLOWER_RECHECK = 5.0  # seconds a thread waiting for the reader role sleeps at most
KERNEL_DEAD_AFTER = 6.0  # seconds of heartbeats unanswered while this process runs
STALL_SLACK = 1.0  # a heartbeat tick later than this: the process was not running


def _ms(timeout: float | None) -> int:
    if timeout is None:
        return -1
    return max(0, min(int(timeout * 1000), M.MAX_TIMEOUT_MS))


class KernelGone(MachError):
    """The kernel stopped answering: every trap fails from now on."""


class TaskRuntime:
    """One task: its connection to the kernel and its threads' traps.

    ``task_self``, ``host`` and ``name_server`` are the names of the send rights the kernel
    gives a new task (mach_task_self, mach_host_self, the netname server port).
    ``host_priv`` names the privileged host port's send right: given only to a task whose
    hello carried the cluster owner's ``secret`` (protocol.host_secret), else
    MACH_PORT_NULL.
    """

    def __init__(self, endpoint: str, name: str = "task", role: str = "task",
                 connect_timeout: float = 15.0, secret: bytes | None = None):
        self.endpoint, self.name, self.role = endpoint, name, role
        self._ctx = zmq.Context()
        s = self._ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.ROUTING_ID, b"t" + uuid.uuid4().bytes)
        s.setsockopt(zmq.SNDHWM, 100000)
        s.setsockopt(zmq.RCVHWM, 100000)
        s.connect(endpoint)
        self._sock = s
        self._fd = s.getsockopt(zmq.FD)
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._boxes: dict[int, queue.SimpleQueue] = {}
        self._tls = threading.local()
        self._tids = itertools.count(1)
        self._seq = itertools.count(1)
        self._closed = False
        self.dead = False
        self._last_kernel = time.monotonic()
        self._rlock = threading.Lock()
        self._reader = None  # tid of the thread reading the socket (0: the I/O thread)
        self._followers: dict[int, queue.SimpleQueue] = {}
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)
        self._poller.register(self._wake_r, select.POLLIN)
        self._stop = threading.Event()
        self._dealloc: list[int] = []  # [address, size, ...] of OOL regions to give back
        self._dealloc_lock = threading.Lock()
        self._io = threading.Thread(target=self._io_loop, name="mach-io", daemon=True)
        self._io.start()
        try:
            hello = [M.OP_HELLO, None, None, os.getpid(), name, role]
            if secret is not None:
                hello.append(bytes(secret))
            hdr, _ = self._trap(hello, b"", (), wait=connect_timeout)
            if hdr[M.A_CODE] != 0:
                raise MachError(hdr[M.A_CODE], "task hello")
        except BaseException:
            self.close(say_bye=False)
            raise
        self.task_self, self.host, self.name_server, self.task_id = (
            hdr[M.A_TASK_SELF], hdr[M.A_HOST], hdr[M.A_NAME_SERVER], hdr[M.A_TASK_ID])
        self.host_priv = hdr[M.A_HOST_PRIV] if len(hdr) > M.A_HOST_PRIV else M.MACH_PORT_NULL
        if secret is not None and not self.host_priv:
            log.warning("the kernel refused host_priv: wrong secret", task=name)

    # ------------------------------------------------------------ threads

    def _thread(self):
        tl = self._tls
        tid = getattr(tl, "tid", None)
        if tid is None:
            tid = tl.tid = next(self._tids)
            tl.box = queue.SimpleQueue()
            tl.reply_port = 0
            self._boxes[tid] = tl.box
        return tid, tl.box

    def thread_id(self) -> int:
        return self._thread()[0]

    def reply_port(self) -> int:
        """mig_get_reply_port: this thread's reply port, made with mach_reply_port."""
        self._thread()
        if not self._tls.reply_port:
            hdr, _ = self._trap([M.OP_REPLY_PORT, None, None], b"", ())
            if hdr[M.A_CODE] != 0:
                raise MachError(hdr[M.A_CODE], "mach_reply_port")
            self._tls.reply_port = hdr[M.A_VALUE]
        return self._tls.reply_port

    def drop_reply_port(self):
        """mig_dealloc_reply_port: destroy this thread's reply port after a failed RPC, so
        a late reply can never be taken for the next call's; a new one is made on demand."""
        tl = self._tls
        port = getattr(tl, "reply_port", 0)
        tl.reply_port = 0
        if port and not self.dead and not self._closed:
            from protocol.defs.mach_port import mach_port_destroy

            # Sent without a reply port: an RPC would make this thread a new reply port
            # (and thread_exit would leave that one behind, one per exiting thread).
            try:
                self.send(mach_port_destroy.message(self.task_self, [port]), timeout=5)
            except MachError:
                pass

    def thread_exit(self):
        """Release what this thread holds: its reply port and mailbox (as a thread
        library does at thread exit)."""
        tl = self._tls
        tid = getattr(tl, "tid", None)
        if tid is None:
            return
        self.drop_reply_port()
        self._boxes.pop(tid, None)
        tl.tid = None

    # ------------------------------------------------------------ traps

    def _send_frames(self, frames):
        with self._lock:
            send_frames(self._sock, frames, block=True)
            pending = readable(self._sock)
        if pending:
            self._wake()

    def _wake(self):
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def _trap(self, hdr, body, ool, wait: float | None = None):
        """Send one trap and wait for the kernel's one answer to it."""
        if self.dead or self._closed:
            raise KernelGone(MachMsgReturn.MACH_SEND_INVALID_DEST, "kernel gone")
        tid, box = self._thread()
        seq = next(self._seq)
        hdr[M.H_THREAD], hdr[M.H_SEQ] = tid, seq
        self._send_frames([M.packb(hdr), body, *ool])
        deadline = None if wait is None else time.monotonic() + wait
        return self._await(tid, box, seq, deadline)

    def _await(self, tid, box, seq, deadline):
        while True:
            # Only this thread takes from its box: not empty() means get_nowait() has an
            # item (and costs no queue.Empty raised on every trap).
            item = _EMPTY if box.empty() else box.get_nowait()
            if item is not _EMPTY and item is not _LEAD:
                got = self._check(item, seq)
                if got is not None:
                    return got
                continue
            if self.dead or self._closed:
                raise KernelGone(MachMsgReturn.MACH_SEND_INVALID_DEST, "kernel gone")
            with self._rlock:
                lead = self._reader is None
                if lead:
                    self._reader = tid
                else:
                    self._followers[tid] = box
            if lead:
                try:
                    # A reader may have put our answer in the box after we looked and
                    # resigned before we took the lead: _lead reads only the socket.
                    got = self._boxed(box, seq)
                    if got is None:
                        got = self._lead(tid, seq, deadline)
                finally:
                    self._resign()
                if got is not None:
                    return got
            else:
                # Answers, the lead and death all come through the box; the timeout
                # is only a safety net, kept long so that thousands of idle threads
                # (a thread storm) do not wake for nothing.
                remaining = FOLLOWER_RECHECK if deadline is None else deadline - time.monotonic()
                try:
                    item = box.get(timeout=max(0.0, min(FOLLOWER_RECHECK, remaining)))
                except queue.Empty:
                    item = _EMPTY
                with self._rlock:
                    handed = self._followers.pop(tid, None) is None
                if item is not _EMPTY and item is not _LEAD:
                    if handed:
                        self._pass_lead()
                    got = self._check(item, seq)
                    if got is not None:
                        return got
                    continue
            if deadline is not None and time.monotonic() >= deadline:
                raise MachError(MachMsgReturn.MACH_SEND_TIMED_OUT, "no answer from kernel")

    def _boxed(self, box, seq):
        """Our answer if it is in our mailbox already (other items are stale answers or
        lead tokens, dropped); None otherwise.  Called as the reader: nobody else routes
        answers meanwhile, so nothing can arrive in the box behind our back."""
        while not box.empty():
            item = box.get_nowait()
            if item is not _LEAD:
                got = self._check(item, seq)
                if got is not None:
                    return got

    def _check(self, item, seq):
        if item is None:
            raise KernelGone(MachMsgReturn.MACH_SEND_INVALID_DEST, "kernel gone")
        if item[0][M.A_SEQ] == seq:
            return item
        return None  # an answer to an earlier trap this thread gave up on

    def _lead(self, tid, seq, deadline):
        """Read the socket until this thread's answer comes (returned) or the deadline
        passes (None).  Other threads' answers go to their mailboxes."""
        sock = self._sock
        poller = self._poller
        while True:
            mine = None
            with self._lock:
                if self._closed:  # close() shut the socket (under this lock)
                    raise KernelGone(MachMsgReturn.MACH_SEND_INVALID_DEST, "task closed")
                # Until zmq.Again: that receive also resets the fd polled below.
                while (frames := try_recv_frames(sock)) is not None:
                    item = self._dispatch(frames, tid)
                    if item is not None and item[0][M.A_SEQ] == seq:
                        mine = item
                        break
            if mine is not None:
                return mine
            if self.dead or self._closed:
                raise KernelGone(MachMsgReturn.MACH_SEND_INVALID_DEST, "kernel gone")
            if deadline is None:
                wait = 1000
            else:
                wait = int((deadline - time.monotonic()) * 1000) + 1
                if wait <= 0:
                    return None
                wait = min(wait, 1000)
            try:
                for fd, _ in poller.poll(wait):
                    if fd == self._wake_r:
                        try:
                            os.read(self._wake_r, 4096)
                        except BlockingIOError:
                            pass
            except (zmq.ZMQError, OSError):
                if not self._closed:
                    raise
                # close() ran meanwhile: the socket or the wake pipe is gone; the loop's
                # check under the lock says so.

    def _resign(self):
        with self._rlock:
            self._reader = None
        self._pass_lead()

    def _pass_lead(self):
        """Give the reader role to a waiting follower, if the role is free."""
        with self._rlock:
            if self._reader is not None or not self._followers:
                return
            _, box = self._followers.popitem()
        box.put(_LEAD)

    def mach_msg(self, option: int, msg: M.Message | None = None, rcv_name: int = 0,
                 send_timeout: float | None = None, rcv_timeout: float | None = None,
                 keep_ool: bool = False):
        """mach_msg(): send ``msg``, receive on ``rcv_name``, or both (an RPC).

        Returns (code, received Message or None).  Timeouts are seconds, None = forever.

        Out-of-line regions the kernel mapped for a received message (``ool_addrs``) are
        the receiver's until it vm_deallocates them, as in Mach.  By default the runtime
        gives them back with this task's next trap (the data is in the frames already):
        what a client that copies a reply's data out and frees it at once does.  With
        ``keep_ool`` they stay the caller's: a server loop hands them back with
        ``release_ool(msg)`` once its handler returned, unless the handler took them
        over with ``take_ool(msg)`` to vm_deallocate them itself (libpager's
        data_return, after the write).
        """
        if send_timeout is not None:
            option |= M.MACH_SEND_TIMEOUT
        if rcv_timeout is not None:
            option |= M.MACH_RCV_TIMEOUT
        if option & M.MACH_SEND_MSG and msg is not None:
            descs = []
            for name, disp in msg.descs:
                descs += (name, disp)
            hdr = [M.OP_MSG, None, None, option, _ms(send_timeout), rcv_name,
                   _ms(rcv_timeout), msg.msgh_id, msg.remote_port, msg.remote_disp,
                   msg.local_port, msg.local_disp, descs]
            body, ool = msg.body, msg.ool
        else:
            option &= ~M.MACH_SEND_MSG
            hdr = [M.OP_MSG, None, None, option, -1, rcv_name, _ms(rcv_timeout),
                   0, 0, 0, 0, 0, []]
            body, ool = b"", ()
        if (len(body) > M.MAX_BODY_BYTES or len(ool) > M.MAX_FRAMES - 2
                or any(len(f) > M.MAX_OOL_BYTES for f in ool)):
            # the kernel would drop the connection of a peer sending this: refuse here
            return MachMsgReturn.MACH_SEND_NO_BUFFER, None
        if self._dealloc:
            with self._dealloc_lock:
                regions = self._dealloc[:2 * M.MAX_OOL_DEALLOC]
                del self._dealloc[:2 * M.MAX_OOL_DEALLOC]
            hdr.append(regions)
        rhdr, frames = self._trap(hdr, body, ool)
        if rhdr[M.A_KIND] != M.K_MSG:
            return rhdr[M.A_CODE], None
        d = rhdr[M.A_DESCS]
        addrs = rhdr[M.A_OOL_ADDRS] if len(rhdr) > M.A_OOL_ADDRS else ()
        sender = rhdr[M.A_SENDER] if len(rhdr) > M.A_SENDER else None
        if addrs and not keep_ool:
            # The data is in the frames; the region the kernel mapped for it goes back
            # with this task's next trap, as a C program would vm_deallocate it.
            self._give_back(zip(addrs, frames[2:]))
        return 0, M.Message(
            msgh_id=rhdr[M.A_ID], remote_port=rhdr[M.A_REMOTE],
            remote_disp=rhdr[M.A_REMOTE_TYPE], local_port=rhdr[M.A_LOCAL],
            local_disp=rhdr[M.A_LOCAL_TYPE],
            descs=[(d[i], d[i + 1]) for i in range(0, len(d), 2)],
            body=frames[1], ool=frames[2:], seqno=rhdr[M.A_SEQNO], ool_addrs=list(addrs),
            sender=sender)

    def _give_back(self, regions):
        """Queue (address, frame) pairs' regions for the next trap (H_DEALLOC)."""
        with self._dealloc_lock:
            for addr, frame in regions:
                if addr:
                    self._dealloc += (addr, len(frame))

    def release_ool(self, msg: M.Message):
        """The receiver is done with ``msg`` (received with ``keep_ool``): its
        out-of-line regions not taken over (``take_ool``) go back with this task's next
        trap.  Calling it again does nothing."""
        if msg.ool_addrs:
            self._give_back(zip(msg.ool_addrs, msg.ool))
            msg.ool_addrs = []

    @staticmethod
    def take_ool(msg: M.Message | None) -> list[tuple[int, int]]:
        """take_ool (the module's): the caller takes over ``msg``'s regions."""
        return take_ool(msg)

    def send(self, msg: M.Message, timeout: float | None = None):
        code, _ = self.mach_msg(M.MACH_SEND_MSG, msg, send_timeout=timeout)
        if code:
            raise MachError(code, "mach_msg send")

    def receive(self, name: int, timeout: float | None = None) -> M.Message:
        code, m = self.mach_msg(M.MACH_RCV_MSG, None, name, rcv_timeout=timeout)
        if code:
            raise MachError(code, "mach_msg receive")
        return m

    def rpc(self, msg: M.Message, timeout: float | None = None) -> M.Message:
        """Send ``msg`` and receive the reply on its reply port (msg.local_port)."""
        code, m = self.mach_msg(M.MACH_SEND_MSG | M.MACH_RCV_MSG, msg, msg.local_port,
                                send_timeout=timeout, rcv_timeout=timeout)
        if code:
            raise MachError(code, "mach_msg rpc")
        return m

    # ------------------------------------------------------------ I/O thread

    def _io_loop(self):
        """Heartbeat, kernel-death watch, and reading when no thread leads."""
        last_tick = time.monotonic()
        while not self._stop.wait(HEARTBEAT_INTERVAL):
            now = time.monotonic()
            if now - last_tick > HEARTBEAT_INTERVAL + STALL_SLACK:
                # This process did not run (SIGSTOP, or starved): the kernel's silence
                # while we were away says nothing; it gets a fresh window from now.
                self._last_kernel = max(self._last_kernel, now)
            last_tick = now
            try:
                with self._lock:
                    self._sock.send(M.packb([M.OP_HEARTBEAT]), zmq.NOBLOCK)
                    pending = self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN
                with self._rlock:
                    lead = self._reader is None
                    if lead:
                        self._reader = 0
                if lead:
                    try:
                        with self._lock:
                            while (frames := try_recv_frames(self._sock)) is not None:
                                self._dispatch(frames, 0)
                    finally:
                        self._resign()
                elif pending:
                    self._wake()
            except zmq.ZMQError:
                if self._closed:
                    return
                raise
            if time.monotonic() - self._last_kernel > KERNEL_DEAD_AFTER and not self.dead:
                self._kernel_gone()

    def _dispatch(self, frames, reader_tid):
        """Route answers: the reader's own is returned, others go to their mailboxes.
        A K_BATCH message carries several answers (see kernel.main.Kernel.emit)."""
        self._last_kernel = time.monotonic()
        try:
            hdr = M.unpackb(frames[0])
            kind = hdr[M.A_KIND]
        except Exception:
            log.warning("bad frame from kernel")
            return None
        if kind != M.K_BATCH:
            return self._route(hdr, frames, reader_tid)
        mine = None
        i = 1
        for count in hdr[M.A_COUNTS:]:
            part = frames[i:i + count]
            i += count
            try:
                phdr = M.unpackb(part[0])
            except Exception:
                log.warning("bad frame from kernel")
                continue
            item = self._route(phdr, part, reader_tid)
            if item is not None:
                mine = item
        return mine

    def _route(self, hdr, frames, reader_tid):
        tid = hdr[M.A_THREAD]
        if tid == 0:
            if hdr[M.A_KIND] == M.K_DISCONNECT:
                self._kernel_gone()
            return None  # heartbeat answer
        item = (hdr, frames)
        if tid == reader_tid:
            return item
        box = self._boxes.get(tid)
        if box is not None:
            box.put(item)
        return None

    def _kernel_gone(self):
        self.dead = True
        log.warning("kernel not answering", endpoint=self.endpoint)
        for box in list(self._boxes.values()):
            box.put(None)
        self._wake()

    # ------------------------------------------------------------ shutdown

    def close(self, say_bye: bool = True):
        if self._closed:
            return
        try:
            if say_bye and not self.dead:
                with self._lock:
                    self._sock.send(M.packb([M.OP_BYE]), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        self._closed = True
        self._stop.set()
        self._wake()
        self._io.join(timeout=5)
        for box in list(self._boxes.values()):
            box.put(None)
        with self._lock:
            self._sock.close(linger=0)
        self._ctx.term()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def take_ool(msg: M.Message | None) -> list[tuple[int, int]]:
    """Take over the out-of-line regions of ``msg`` (received with ``keep_ool``):
    [(address, size)] of each region the kernel mapped, sizes whole pages; the message
    keeps none, so ``release_ool`` will not give them back: the caller vm_deallocates
    them when it is done with the data.  None or a message without regions: []."""
    if msg is None or not msg.ool_addrs:
        return []
    regions = [(addr, round_page(len(frame))) for addr, frame in zip(msg.ool_addrs, msg.ool)
               if addr]
    msg.ool_addrs = []
    return regions


# ---------------------------------------------------------------- the process's task

_current: TaskRuntime | None = None
_current_lock = threading.Lock()


def kernel_endpoint(run_dir: str | os.PathLike | None = None) -> str:
    """Where the kernel is: $MACHEMU_KERNEL, else the run directory's cluster.json
    (run directory from the argument, $MACHEMU_RUN_DIR, or ./run)."""
    env = os.environ.get("MACHEMU_KERNEL")
    if env and run_dir is None:
        return env
    rd = Path(run_dir or os.environ.get("MACHEMU_RUN_DIR") or "run")
    cj = rd / "cluster.json"
    if cj.exists():
        return json.loads(cj.read_text())["kernel"]["endpoint"]
    return f"ipc://{rd.resolve()}/kernel.sock"


def connect(endpoint: str | None = None, name: str = "task", role: str = "task",
            secret: bytes | None = None) -> TaskRuntime:
    """Make this process a task of the kernel at ``endpoint`` and return its runtime;
    with the owner's ``secret`` it also gets host_priv."""
    global _current
    with _current_lock:
        if _current is not None and not _current._closed:
            return _current
        _current = TaskRuntime(endpoint or kernel_endpoint(), name, role, secret=secret)
        return _current


def current() -> TaskRuntime:
    """The task runtime of this process (made by ``connect``); RuntimeError if none."""
    if _current is None:
        raise RuntimeError("this process is not a task: call protocol.runtime.connect()")
    return _current


mig.set_current_runtime(current)


def disconnect():
    global _current
    with _current_lock:
        if _current is not None:
            _current.close()
            _current = None
