"""The mach_msg trap (GNU Mach ipc/mach_msg.c, ipc/ipc_mqueue.c): send, receive, both.

A thread that must wait is a ``Waiter`` on a queue, not a blocked OS thread: a receive
with no message, or a user send to a full queue (which resumes with the receive half of
an RPC once the message is queued).
"""

from __future__ import annotations

from kernel.ipc_kmsg import (
    IPCKmsg,
    ipc_kmsg_copyin,
    ipc_kmsg_copyin_undo,
    ipc_kmsg_copyout,
    ipc_kmsg_destroy,
)
from kernel.ipc_mqueue import Waiter
from kernel.ipc_port import KERNEL
from kernel.ipc_right import PORT_SEND, ipc_port_release_send
from kernel.ipc_space import T_PORT_SET, T_RECEIVE
from protocol import message as M
from protocol.defs.mach import VM_INHERIT_NONE, VM_PROT_ALL, VM_PROT_DEFAULT
from protocol.kern_return import MachError
from protocol.kern_return import MachMsgReturn as R
from protocol.vm_param import PAGE_SIZE, round_page, trunc_page

FULL = -1


def mach_msg_trap(k, task, h, frames):
    """h: [OP_MSG, tid, seq, option, send_timeout, rcv_name, rcv_timeout,
    msgh_id, remote, remote_disp, local, local_disp, descs] (already checked)."""
    tid, seq, option = h[1], h[2], h[3]
    if len(h) == 14 and h[13] and task.map is not None:
        ool_deallocate(k, task, h[13])
    rcv_timeout = h[6] if option & M.MACH_RCV_TIMEOUT else -1
    if option & M.MACH_SEND_MSG:
        body, ool = frames[2], frames[3:]
        kmsg, code = ipc_kmsg_copyin(k, task.space, h[7], h[8], h[9], h[10], h[11], h[12],
                                     body, ool)
        if code:
            k.reply_result(task, tid, seq, code)
            return
        k.stats["msgs_sent"] += 1
        if ipc_mqueue_send(k, kmsg) == FULL:
            send_timeout = h[4] if option & M.MACH_SEND_TIMEOUT else -1
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
            w.rcv_name = h[5] if option & M.MACH_RCV_MSG else 0
            w.rcv_timeout = rcv_timeout
            w.queue.senders.append(w)
            task.waiters.add(w)
            task.blocked_bytes += w.nbytes
            k.blocked_bytes += w.nbytes
            k.stats["sends_blocked"] += 1
            k.add_timer(w)
            return
    if option & M.MACH_RCV_MSG:
        mach_msg_receive(k, task, tid, seq, h[5], rcv_timeout)
    else:
        k.reply_result(task, tid, seq, 0)


def ipc_mqueue_send(k, kmsg: IPCKmsg, always: bool = False) -> int:
    """Queue ``kmsg`` on its destination, or hand it to a waiting receiver.  Returns 0,
    or FULL when a user send must wait (never for send-once rights or ``always``)."""
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


def deliver(k, task, w, port, kmsg):
    """Copy the message out to a receiving thread and send it down its socket."""
    if w.task is not task:  # pragma: no cover - defensive
        raise AssertionError("waiter of another task")
    w.done = True
    task.waiters.discard(w)
    port.seqno += 1
    if kmsg.dest_type == PORT_SEND:
        ipc_port_release_send(k, port)
    else:
        port.sorights -= 1
    space = task.space
    reply_name, flat = ipc_kmsg_copyout(k, space, kmsg)
    local = space.reverse.get(port.id, 0)
    addrs = vm_map_copyout(k, task, kmsg) if kmsg.ool and task.map is not None else ()
    hdr = [M.K_MSG, w.tid, w.seq, 0, kmsg.msgh_id, reply_name, kmsg.reply_type, local,
           kmsg.dest_type, flat, port.seqno, addrs]
    k.stats["msgs_delivered"] += 1
    k.emit(task, [M.packb(hdr), kmsg.body, *kmsg.ool])


def ool_deallocate(k, task, regions):
    """vm_deallocate of the OOL regions a trap gives back."""
    vmap = task.map
    for i in range(0, len(regions), 2):
        addr, size = regions[i], regions[i + 1]
        start, end = trunc_page(addr), round_page(addr + size)
        if size and end > start:
            try:
                vmap.vm_map_delete(start, end)
            except MachError:
                pass


def vm_map_copyout(k, task, kmsg):
    """Out-of-line data occupies a region of the receiver's address space until the
    receiver vm_deallocates it (vm_map_copyout).  Page-backed data (data_return's
    laundry) brings its pages; other data of a page or more is copied into new wired
    pages.  Returns the addresses (0 where nothing was mapped: small data, or no frame
    left for a copy)."""
    addrs = []
    vmap = task.map
    objects = kmsg.ool_objects or [None] * len(kmsg.ool)
    for frame, obj in zip(kmsg.ool, objects):
        addr = 0
        if obj is None and len(frame) >= PAGE_SIZE:
            obj = k.vm.ool_object(frame)
        if obj is not None:
            try:
                addr = vmap.vm_map_enter(None, obj.size, obj, 0, VM_PROT_DEFAULT, VM_PROT_ALL,
                                         VM_INHERIT_NONE)
            except MachError:
                k.vm.object_deallocate(obj)
        addrs.append(addr)
    kmsg.ool_objects = None
    return addrs


class _Now:
    """A receive satisfied at once needs no Waiter in any queue."""

    __slots__ = ("task", "tid", "seq", "done")

    def __init__(self, task, tid, seq):
        self.task, self.tid, self.seq, self.done = task, tid, seq, False


def mach_msg_receive(k, task, tid, seq, name, timeout):
    """ipc_mqueue_receive on a receive right or a port set."""
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
    """A message left a full queue: let blocked senders in, oldest first."""
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
    if w.rcv_name:
        mach_msg_receive(k, w.task, w.tid, w.seq, w.rcv_name, w.rcv_timeout)
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
