"""Message queues (GNU Mach ipc/ipc_mqueue.c): messages, waiting receivers, blocked senders.

A user send to a full queue blocks (a ``Waiter`` holding the message) or times out;
messages sent through a send-once right and messages the kernel sends itself
(MACH_SEND_ALWAYS) ignore the limit, as in GNU Mach.

A thread that must wait is a ``Waiter`` on a queue, not a blocked OS thread: a receive
with no message, or a user send to a full queue (which resumes with the receive half of
an RPC once the message is queued).
"""

from __future__ import annotations

from collections import deque

from kernel.ipc_kmsg import ipc_kmsg_copyin_undo, ipc_kmsg_copyout, ipc_kmsg_destroy
from kernel.ipc_port import KERNEL, ipc_port_release_send, ipc_port_release_sonce
from kernel.ipc_right import PORT_SEND
from kernel.ipc_space import T_PORT_SET, T_RECEIVE
from protocol import message as M
from protocol.kern_return import MachMsgReturn as R

FULL = -1  # ipc_mqueue_send: a user send must wait


class Waiter:
    """A task thread suspended in the kernel: a receive, or a send blocked on a full
    queue (then ``kmsg`` is set, and ``rcv_name``/``rcv_timeout`` is the receive half of
    an RPC to continue with once the send is done)."""

    __slots__ = ("task", "tid", "seq", "deadline", "done", "kmsg", "queue", "rcv_name",
                 "rcv_timeout", "nbytes")

    def __init__(self, task, tid, seq, deadline):
        self.task, self.tid, self.seq, self.deadline = task, tid, seq, deadline
        self.done = False
        self.kmsg = None
        self.queue = None
        self.rcv_name = 0
        self.rcv_timeout = -1
        self.nbytes = 0


class IPCMQueue:
    __slots__ = ("messages", "receivers", "senders", "qlimit")

    def __init__(self, qlimit: int):
        self.messages: deque = deque()
        self.receivers: deque = deque()
        self.senders: deque = deque()
        self.qlimit = qlimit

    def full(self) -> bool:
        return len(self.messages) >= self.qlimit

    def first_receiver(self):
        """The longest-waiting live receiver, or None (timed-out ones are dropped)."""
        r = self.receivers
        while r:
            w = r.popleft()
            if not w.done:
                return w
        return None

    def waiting_receivers(self) -> int:
        return sum(1 for w in self.receivers if not w.done)

    def blocked_senders(self) -> int:
        return sum(1 for w in self.senders if not w.done)

    def first_sender(self):
        s = self.senders
        while s:
            w = s.popleft()
            if not w.done:
                return w
        return None


def ipc_mqueue_send(k, kmsg, always: bool = False) -> int:
    """ipc_mqueue_send: queue ``kmsg`` on its destination, or hand it to a waiting
    receiver, or to ipc_kobject_server for a kernel port.  Returns 0, or FULL when a user
    send must wait (never for send-once rights, nor with ``always``: MACH_SEND_ALWAYS)."""
    port = kmsg.dest
    if port is None or not port.active:
        ipc_kmsg_destroy(k, kmsg)
        return 0
    if port.receiver is KERNEL:
        k.kobject_server(kmsg)
        return 0
    mq = port.mqueue
    # The limit is checked before any hand-off, as in GNU Mach: with qlimit 0 every user
    # send blocks, whether or not a receiver is waiting.
    if (not always and kmsg.dest_type == PORT_SEND and len(mq.messages) >= mq.qlimit):
        return FULL
    if not mq.messages:
        w = mq.first_receiver() if mq.receivers else None
        if w is None and port.pset is not None and port.pset.mqueue.receivers:
            w = port.pset.mqueue.first_receiver()
        if w is not None:
            deliver(k, w.task, w, port, kmsg)
            return 0
    mq.messages.append(kmsg)
    return 0


def ipc_mqueue_send_block(k, task, tid, seq, kmsg, send_timeout, rcv_name, rcv_timeout):
    """The wait in ipc_mqueue_send when a user send finds the queue full: fail at once
    with a zero timeout or when the task (or the kernel) holds too much for blocked
    senders already, else suspend the thread as a Waiter on the port's ``senders``
    (ip_blocked) until admit_senders lets it in or its timeout expires.  ``rcv_name``:
    the receive half of an RPC, to continue with once the message is queued."""
    if send_timeout == 0:
        ipc_kmsg_copyin_undo(k, task.space, kmsg)
        k.reply_result(task, tid, seq, R.MACH_SEND_TIMED_OUT)
        return
    cfg = k.config
    if (len(task.waiters) >= cfg.max_waiters_per_task
            or task.blocked_bytes + kmsg.size > cfg.max_blocked_bytes_per_task
            or k.blocked_bytes + kmsg.size > cfg.max_blocked_bytes_total):
        ipc_kmsg_copyin_undo(k, task.space, kmsg)
        k.reply_result(task, tid, seq, R.MACH_SEND_NO_BUFFER)
        return
    w = Waiter(task, tid, seq, k.deadline(send_timeout))
    w.kmsg, w.nbytes = kmsg, kmsg.size
    w.queue = kmsg.dest.mqueue
    w.rcv_name = rcv_name
    w.rcv_timeout = rcv_timeout
    w.queue.senders.append(w)
    task.waiters.add(w)
    task.blocked_bytes += w.nbytes
    k.blocked_bytes += w.nbytes
    k.stats["sends_blocked"] += 1
    k.add_timer(w)


def deliver(k, task, w, port, kmsg):
    """A receiving thread gets ``kmsg``, taken from ``port``'s queue: the hand-off of
    ipc_mqueue_send (ith_kmsg, ith_seqno) or the dequeue of ipc_mqueue_receive, then
    what mach_msg_receive does with it (ipc_kmsg_copyout, vm_map_copyout of its
    out-of-line data, ipc_kmsg_put: down the task's socket)."""
    if w.task is not task:  # pragma: no cover - defensive
        raise AssertionError("waiter of another task")
    w.done = True
    task.waiters.discard(w)
    port.seqno += 1
    if kmsg.dest_type == PORT_SEND:
        ipc_port_release_send(k, port)
    else:
        ipc_port_release_sonce(port)
    space = task.space
    reply_name, flat = ipc_kmsg_copyout(k, space, kmsg)
    local = space.reverse.get(port.id, 0)
    addrs = k.vm_map_copyout(task, kmsg) if kmsg.ool and task.map is not None else ()
    hdr = [M.K_MSG, w.tid, w.seq, 0, kmsg.msgh_id, reply_name, kmsg.reply_type, local,  # A_*
           kmsg.dest_type, flat, port.seqno, addrs, kmsg.sender]
    k.stats["msgs_delivered"] += 1
    k.emit(task, [M.packb(hdr), kmsg.body, *kmsg.ool])


class _Now:
    """A receive satisfied at once needs no Waiter in any queue."""

    __slots__ = ("task", "tid", "seq", "done")

    def __init__(self, task, tid, seq):
        self.task, self.tid, self.seq, self.done = task, tid, seq, False


def ipc_mqueue_receive(k, task, tid, seq, name, timeout):
    """ipc_mqueue_copyin and ipc_mqueue_receive: take the next message of a receive
    right, or of any member of a port set (round robin), or wait for one as a Waiter
    on its queue (at most ``timeout`` ms; -1: forever)."""
    e = task.space.lookup(name)
    if e is None or not e.type & (T_RECEIVE | T_PORT_SET):
        k.reply_result(task, tid, seq, R.MACH_RCV_INVALID_NAME)
        return
    if e.type & T_RECEIVE:
        port = e.object
        if port.pset is not None:
            k.reply_result(task, tid, seq, R.MACH_RCV_IN_SET)
            return
        mq = port.mqueue
        if mq.messages:
            kmsg = mq.messages.popleft()
            deliver(k, task, _Now(task, tid, seq), port, kmsg)
            admit_senders(k, port)
            return
    else:
        pset = e.object
        members = list(pset.members.values())
        n = len(members)
        for i in range(n):
            port = members[(pset.rr + i) % n]
            if port.mqueue.messages:
                pset.rr = (pset.rr + i + 1) % n
                kmsg = port.mqueue.messages.popleft()
                deliver(k, task, _Now(task, tid, seq), port, kmsg)
                admit_senders(k, port)
                return
        mq = pset.mqueue
    if timeout == 0:
        k.reply_result(task, tid, seq, R.MACH_RCV_TIMED_OUT)
        return
    if len(task.waiters) >= k.config.max_waiters_per_task:
        k.reply_result(task, tid, seq, R.MACH_RCV_INTERRUPTED)
        return
    w = Waiter(task, tid, seq, k.deadline(timeout))
    w.queue = mq
    mq.receivers.append(w)
    task.waiters.add(w)
    k.add_timer(w)


def admit_senders(k, port):
    """A message left a full queue (ipc_mqueue_receive's wakeup of ip_blocked) or the
    limit grew: let blocked senders in, oldest first."""
    mq = port.mqueue
    while mq.senders and len(mq.messages) < mq.qlimit:
        w = mq.first_sender()
        if w is None:
            break
        kmsg, w.kmsg = w.kmsg, None
        w.done = True
        w.task.waiters.discard(w)
        _unblock(k, w)
        ipc_mqueue_send(k, kmsg, always=True)
        resume_sender(k, w)


def resume_sender(k, w):
    """A blocked send is done: the thread goes on with its receive, or is answered."""
    if w.rcv_name:
        ipc_mqueue_receive(k, w.task, w.tid, w.seq, w.rcv_name, w.rcv_timeout)
    else:
        k.reply_result(w.task, w.tid, w.seq, 0)


def waiter_timeout(k, w):
    """A send or receive timeout expired."""
    if w.done:
        return
    w.done = True
    task = w.task
    task.waiters.discard(w)
    _unlink(w)
    if w.kmsg is not None:
        _unblock(k, w)
        kmsg, w.kmsg = w.kmsg, None
        ipc_kmsg_copyin_undo(k, task.space, kmsg)
        k.reply_result(task, w.tid, w.seq, R.MACH_SEND_TIMED_OUT)
    else:
        k.reply_result(task, w.tid, w.seq, R.MACH_RCV_TIMED_OUT)


def _unblock(k, w):
    w.task.blocked_bytes -= w.nbytes
    k.blocked_bytes -= w.nbytes


def _unlink(w):
    q = w.queue
    if q is None:
        return
    try:
        (q.senders if w.kmsg is not None else q.receivers).remove(w)
    except ValueError:
        pass


def fail_waiter(k, w, code, destroy_kmsg=False):
    """End a waiter with an error: its port died or moved, or its task is going away."""
    if w.done:
        return
    w.done = True
    task = w.task
    task.waiters.discard(w)
    if w.kmsg is not None:
        _unblock(k, w)
        kmsg, w.kmsg = w.kmsg, None
        if destroy_kmsg:
            ipc_kmsg_destroy(k, kmsg)
        else:
            ipc_kmsg_copyin_undo(k, task.space, kmsg)
    if task.alive:
        k.reply_result(task, w.tid, w.seq, code)
