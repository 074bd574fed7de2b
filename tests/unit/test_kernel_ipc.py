"""Kernel IPC unit tests, in-process: a real ``kernel.main.Kernel`` bound to a temp ipc
endpoint, fed wire frames through ``handle()`` exactly as its event loop would, with
``emit`` overridden to record what it would send to each task.  No sockets to tasks, no
mocks of the kernel's own logic."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import pytest

from kernel.ipc_port import IPCPort
from kernel.ipc_space import T_DEAD_NAME, T_RECEIVE, T_SEND, T_SEND_ONCE, IPCSpace
from kernel.main import Kernel
from protocol import message as M
from protocol.defs import mach_port as P
from protocol.defs import machemu as X
from protocol.defs import notify as N
from protocol.kern_return import KernReturn as K
from protocol.kern_return import MachMsgReturn as R
from protocol.kern_return import MigReturn

pytestmark = pytest.mark.timeout(30)

SEND, RECV, SO = M.MACH_PORT_RIGHT_SEND, M.MACH_PORT_RIGHT_RECEIVE, M.MACH_PORT_RIGHT_SEND_ONCE
DEAD = M.MACH_PORT_RIGHT_DEAD_NAME
MOVE_RECEIVE, MOVE_SEND, MOVE_SO = 16, 17, 18
COPY_SEND, MAKE_SEND, MAKE_SO = 19, 20, 21


class RecordingKernel(Kernel):
    """The kernel with its outgoing frames kept per task instead of sent."""

    def __init__(self, endpoint):
        super().__init__(endpoint)
        self.out: dict[bytes, list] = {}

    def emit(self, task, frames):
        if not task.alive:
            return
        self.out.setdefault(task.ident, []).append(
            [M.unpackb(frames[0]), *(bytes(f) for f in frames[1:])])


class KTask:
    """One task of the in-process kernel, driven through Kernel.handle()."""

    def __init__(self, k: RecordingKernel, name: str):
        self.k, self.ident, self.name = k, b"t" + uuid.uuid4().bytes, name
        self.seq = 0
        hdr = self._op([M.OP_HELLO, 1, 0, os.getpid(), name, "task"])
        assert hdr[M.A_KIND] == M.K_HELLO and hdr[M.A_CODE] == 0
        self.task_self, self.host, self.name_server, self.task_id = (
            hdr[M.A_TASK_SELF], hdr[M.A_HOST], hdr[M.A_NAME_SERVER], hdr[M.A_TASK_ID])
        self.task = k.tasks[self.ident]
        self._reply = 0

    @property
    def space(self) -> IPCSpace:
        return self.task.space

    def frames(self):
        return self.k.out.setdefault(self.ident, [])

    def _op(self, hdr, *rest, tid=1):
        self.seq += 1
        if len(hdr) > M.H_SEQ and hdr[M.H_SEQ] is None:
            hdr[M.H_THREAD], hdr[M.H_SEQ] = tid, self.seq
        n = len(self.frames())
        self.k.handle([self.ident, M.packb(hdr), *rest])
        new = self.frames()[n:]
        return new[-1][0] if new else None

    def trap(self, option, msg: M.Message | None = None, rcv=0, send_timeout=-1,
             rcv_timeout=-1, tid=1):
        """One mach_msg trap; returns the frames emitted to this task by it."""
        if msg is None:
            msg = M.Message(0)
        descs = [x for pair in msg.descs for x in pair]
        hdr = [M.OP_MSG, tid, None, option, send_timeout, rcv, rcv_timeout, msg.msgh_id,
               msg.remote_port, msg.remote_disp, msg.local_port, msg.local_disp, descs]
        self.seq += 1
        hdr[M.H_SEQ] = self.seq
        n = len(self.frames())
        self.k.handle([self.ident, M.packb(hdr), msg.body, *msg.ool])
        # Only the answers to this trap (a trap may also wake other threads).
        return [f for f in self.frames()[n:]
                if f[0][M.A_THREAD] == tid and f[0][M.A_SEQ] == self.seq]

    def send(self, msg, timeout=None, tid=1):
        """Returns the send's code, or None if the sender is now blocked."""
        opt = M.MACH_SEND_MSG | (M.MACH_SEND_TIMEOUT if timeout is not None else 0)
        out = self.trap(opt, msg, send_timeout=-1 if timeout is None else timeout, tid=tid)
        return out[-1][0][M.A_CODE] if out else None

    def answers(self, tid):
        """Frames this task got for thread ``tid``."""
        return [f for f in self.frames() if f[0][M.A_THREAD] == tid]

    def receive(self, name, timeout=0, tid=1):
        """A receive trap; returns ('msg', hdr, frames), ('code', code) or None (waiting)."""
        opt = M.MACH_RCV_MSG | (M.MACH_RCV_TIMEOUT if timeout is not None else 0)
        out = self.trap(opt, rcv=name, rcv_timeout=-1 if timeout is None else timeout,
                        tid=tid)
        if not out:
            return None
        hdr = out[-1][0]
        if hdr[M.A_KIND] == M.K_MSG:
            return ("msg", hdr, out[-1][1:])
        return ("code", hdr[M.A_CODE])

    def reply_port(self):
        if not self._reply:
            hdr = self._op([M.OP_REPLY_PORT, None, None])
            assert hdr[M.A_CODE] == 0
            self._reply = hdr[M.A_VALUE]
        return self._reply

    def call(self, routine, dest, *args):
        """A MIG RPC through the kernel: returns (code, values)."""
        msg = routine.message(dest, list(args), self.reply_port())
        out = self.trap(M.MACH_SEND_MSG | M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, msg,
                        rcv=self.reply_port(), rcv_timeout=0)
        hdr = out[-1][0]
        if hdr[M.A_KIND] != M.K_MSG:
            return hdr[M.A_CODE], None
        assert hdr[M.A_ID] == routine.reply_id, hdr
        d = hdr[M.A_DESCS]
        code, vals = routine.decode_reply(out[-1][1], d[0::2], out[-1][2:])
        return code, vals

    def ok(self, routine, *args, dest=None):
        code, vals = self.call(routine, self.task_self if dest is None else dest, *args)
        assert code == 0, f"{routine.name}: {code:#x}"
        if not vals:
            return None
        return vals[0] if len(vals) == 1 else tuple(vals)

    def err(self, routine, *args, dest=None):
        code, _ = self.call(routine, self.task_self if dest is None else dest, *args)
        assert code != 0
        return code

    # Shorthands.
    def port(self):
        return self.ok(P.mach_port_allocate, RECV)

    def refs(self, name, right=SEND):
        return self.ok(P.mach_port_get_refs, name, right)

    def attrs(self, name):
        return self.ok(X.mach_port_get_attributes, name, X.MACH_PORT_RECEIVE_STATUS)

    def ptype(self, name):
        return self.ok(P.mach_port_type, name)

    def notify_request(self, name, variant, notify_port, sync=0):
        return self.ok(P.mach_port_request_notification, name, variant, sync, notify_port)


@pytest.fixture
def k():
    d = tempfile.mkdtemp(prefix="mk", dir="/tmp")
    kern = RecordingKernel(f"ipc://{d}/k.sock")
    yield kern
    for t in list(kern.tasks.values()):  # closes their pidfds
        kern.task_destroy(t, "test over")
    kern.close()
    shutil.rmtree(d, ignore_errors=True)


def msg(dest, disp=COPY_SEND, msgh_id=1000, descs=(), local=0, ldisp=0, ool=()):
    return M.Message(msgh_id, dest, disp, local, ldisp, list(descs), M.packb([]), list(ool))


def got(r, msgh_id=None):
    assert r is not None and r[0] == "msg", r
    if msgh_id is not None:
        assert r[1][M.A_ID] == msgh_id, r[1]
    return r[1]


# ---------------------------------------------------------------- spaces, pure

def test_space_insert_lookup_remove_and_lazy_dead_name():
    sp = IPCSpace()
    port = IPCPort()
    port.srights = 1
    name = sp.insert(port, T_SEND, 3)
    assert sp.name_of(port) == name and sp.lookup(name).urefs == 3
    port.active = False
    e = sp.lookup(name)  # ipc_right_check: the dead port becomes a dead name
    assert e.type == T_DEAD_NAME and e.urefs == 3 and e.object is None
    assert port.srights == 0 and sp.name_of(port) is None
    assert sp.remove(name) is e and sp.lookup(name) is None


def test_names_are_kernel_wide_unique():
    a, b = IPCSpace(), IPCSpace()
    names = {a.insert(IPCPort(), T_RECEIVE) for _ in range(50)}
    names |= {b.insert(IPCPort(), T_RECEIVE) for _ in range(50)}
    assert len(names) == 100


# ---------------------------------------------------------------- user references

def test_urefs_counting_and_send_right_merging(k):
    a = KTask(k, "a")
    n = a.port()
    assert a.ptype(n) == M.MACH_PORT_TYPE_RECEIVE
    for i in range(1, 4):  # each make-send merges into the same name
        a.ok(P.mach_port_insert_right, n, (n, MAKE_SEND))
        assert a.refs(n) == i
    port = a.space.lookup(n).object
    assert port.srights == 1 and port.mscount == 3  # one counted send right per space
    assert a.ptype(n) == M.MACH_PORT_TYPE_SEND_RECEIVE
    a.ok(P.mach_port_mod_refs, n, SEND, 5)
    assert a.refs(n) == 8
    a.ok(P.mach_port_mod_refs, n, SEND, -7)
    assert a.refs(n) == 1
    assert a.err(P.mach_port_mod_refs, n, SEND, -2) == K.KERN_INVALID_VALUE
    assert a.err(P.mach_port_mod_refs, n, SEND, 0xFFFF) == K.KERN_UREFS_OVERFLOW
    a.ok(P.mach_port_deallocate, n)
    assert a.refs(n) == 0 and port.srights == 0
    assert a.ptype(n) == M.MACH_PORT_TYPE_RECEIVE
    assert a.err(P.mach_port_deallocate, n) == K.KERN_INVALID_RIGHT
    assert a.err(P.mach_port_get_refs, 0x7FFF0000, SEND) == K.KERN_INVALID_NAME


def test_received_send_rights_merge_into_one_name(k):
    a, b = KTask(k, "a"), KTask(k, "b")
    n = a.port()
    a.ok(P.mach_port_insert_right, n, (n, MAKE_SEND))
    port = a.space.lookup(n).object
    bn = _give_send(a, b, n, copies=3)  # three messages, each with COPY_SEND of n
    assert b.refs(bn) == 3
    assert b.ptype(bn) == M.MACH_PORT_TYPE_SEND
    assert port.srights == 2  # a's and b's: one counted right per space
    assert a.refs(n) == 1


def _give_send(src: KTask, dst: KTask, name, copies=1, disp=COPY_SEND):
    """src puts a send right to its ``name`` in messages to a fresh port of dst; dst
    receives them.  Returns dst's name for the right (the same for every copy)."""
    q = dst.port()
    dst.ok(P.mach_port_insert_right, q, (q, MAKE_SEND))
    # src gets a send right to q from dst.
    qs = _transfer_send(dst, src, q)
    names = set()
    for _ in range(copies):
        assert src.send(msg(qs, descs=[(name, disp)])) == 0
        h = got(dst.receive(q))
        assert h[M.A_DESCS][1] == M.MACH_MSG_TYPE_PORT_SEND
        names.add(h[M.A_DESCS][0])
    assert len(names) == 1
    return names.pop()


def _transfer_send(owner: KTask, to: KTask, name):
    """Move a make-send right to ``owner``'s receive right ``name`` into ``to``'s space
    the way a message carrying MAKE_SEND does (copyin, then copyout), for bootstrapping:
    ``to`` has no right to any port of ``owner`` yet."""
    from kernel.ipc_right import ipc_right_copyin, ipc_right_copyout

    port, typ, _ = ipc_right_copyin(owner.k, owner.space, name, MAKE_SEND)
    return ipc_right_copyout(owner.k, to.space, port, typ)


def _transfer_so(owner: KTask, to: KTask, name):
    """As _transfer_send, for a make-send-once right."""
    from kernel.ipc_right import ipc_right_copyin, ipc_right_copyout

    port, typ, _ = ipc_right_copyin(owner.k, owner.space, name, MAKE_SO)
    return ipc_right_copyout(owner.k, to.space, port, typ)


def test_move_send_last_uref_empties_the_name(k):
    a, b = KTask(k, "a"), KTask(k, "b")
    n = a.port()
    q = b.port()
    qa = _transfer_send(b, a, q)
    a.ok(P.mach_port_insert_right, n, (n, MAKE_SEND))
    a.ok(P.mach_port_mod_refs, n, SEND, 1)  # 2 urefs
    port = a.space.lookup(n).object
    assert a.send(msg(qa, descs=[(n, MOVE_SEND)])) == 0
    assert a.refs(n) == 1 and port.srights == 2  # one in a, one in transit
    assert a.send(msg(qa, descs=[(n, MOVE_SEND)])) == 0
    assert a.refs(n) == 0 and port.srights == 2  # a's last uref went with the message
    assert a.ptype(n) == M.MACH_PORT_TYPE_RECEIVE
    # MOVE_SEND as the destination of a message, last uref: the name disappears.
    assert a.refs(qa) == 1
    assert a.send(msg(qa, MOVE_SEND)) == 0
    assert a.err(P.mach_port_type, qa) == K.KERN_INVALID_NAME
    for _ in range(3):
        got(b.receive(q))
    assert port.srights == 1 and b.refs(b.space.name_of(port)) == 2


def test_failed_send_gives_rights_back(k):
    a = KTask(k, "a")
    n = a.port()
    a.ok(P.mach_port_insert_right, n, (n, MAKE_SEND))
    other = a.port()
    a.ok(P.mach_port_insert_right, other, (other, MAKE_SEND))
    # A bad descriptor after a good MOVE_SEND: nothing may be lost.
    code = a.send(msg(n, MOVE_SEND, descs=[(other, MOVE_SEND), (0x7FFF0001, COPY_SEND)]))
    assert code == R.MACH_SEND_INVALID_RIGHT
    assert a.refs(n) == 1 and a.refs(other) == 1
    assert a.space.lookup(other).object.srights == 1
    assert a.send(msg(n, descs=[(other, 99)])) == R.MACH_SEND_INVALID_TYPE
    assert a.send(msg(n, MAKE_SO + 5)) == R.MACH_SEND_INVALID_HEADER
    assert a.refs(n) == 1


# ---------------------------------------------------------------- notifications

def test_send_once_notification_when_send_once_right_destroyed(k):
    a, b = KTask(k, "a"), KTask(k, "b")
    n = a.port()
    q = b.port()
    qa = _transfer_send(b, a, q)
    # a sends b a make-send-once right to n; b destroys it unused.
    assert a.send(msg(qa, descs=[(n, MAKE_SO)])) == 0
    h = got(b.receive(q))
    so_name, so_type = h[M.A_DESCS]
    assert so_type == M.MACH_MSG_TYPE_PORT_SEND_ONCE
    assert b.ptype(so_name) == M.MACH_PORT_TYPE_SEND_ONCE
    assert b.refs(so_name, SO) == 1
    assert a.space.lookup(n).object.sorights == 1
    assert a.receive(n) == ("code", R.MACH_RCV_TIMED_OUT)
    b.ok(P.mach_port_deallocate, so_name)
    got(a.receive(n), N.MACH_NOTIFY_SEND_ONCE)
    assert a.space.lookup(n).object.sorights == 0


def test_send_once_notification_when_holder_dies(k):
    a, b = KTask(k, "a"), KTask(k, "b")
    n = a.port()
    q = b.port()
    qa = _transfer_send(b, a, q)
    assert a.send(msg(qa, descs=[(n, MAKE_SO)])) == 0  # stays queued at b
    assert a.send(msg(qa, descs=[(n, MAKE_SO)])) == 0
    got(b.receive(q))  # one received, one still queued
    k.task_destroy(b.task, "test")
    got(a.receive(n), N.MACH_NOTIFY_SEND_ONCE)
    got(a.receive(n), N.MACH_NOTIFY_SEND_ONCE)
    assert a.receive(n) == ("code", R.MACH_RCV_TIMED_OUT)


def test_no_senders_when_last_send_right_goes(k):
    a, b = KTask(k, "a"), KTask(k, "b")
    n = a.port()
    nport = a.port()
    port = a.space.lookup(n).object
    a.ok(P.mach_port_insert_right, n, (n, MAKE_SEND))
    bn = _give_send(a, b, n, copies=2)
    assert a.notify_request(n, N.MACH_NOTIFY_NO_SENDERS, nport, sync=0) == 0
    a.ok(P.mach_port_deallocate, n)  # a's own send right goes; b still has one
    assert a.receive(nport) == ("code", R.MACH_RCV_TIMED_OUT)
    b.ok(P.mach_port_deallocate, bn)  # 2 urefs: one left
    assert a.receive(nport) == ("code", R.MACH_RCV_TIMED_OUT)
    b.ok(P.mach_port_deallocate, bn)
    h = got(a.receive(nport), N.MACH_NOTIFY_NO_SENDERS)
    assert port.srights == 0
    assert M.unpackb(a.frames()[-1][1]) == [port.mscount]
    del h


def test_no_senders_immediate_when_none_exist(k):
    a = KTask(k, "a")
    n, nport = a.port(), a.port()
    a.notify_request(n, N.MACH_NOTIFY_NO_SENDERS, nport, sync=0)
    got(a.receive(nport), N.MACH_NOTIFY_NO_SENDERS)
    # with a make-send count above mscount nothing fires yet
    n2 = a.port()
    a.notify_request(n2, N.MACH_NOTIFY_NO_SENDERS, nport, sync=1)
    assert a.receive(nport) == ("code", R.MACH_RCV_TIMED_OUT)
    a.ok(P.mach_port_insert_right, n2, (n2, MAKE_SEND))
    a.ok(P.mach_port_deallocate, n2)
    got(a.receive(nport), N.MACH_NOTIFY_NO_SENDERS)


def test_port_destroyed_returns_the_receive_right(k):
    a = KTask(k, "a")
    n, nport = a.port(), a.port()
    port = a.space.lookup(n).object
    for i in range(2):
        a.ok(P.mach_port_insert_right, n, (n, MAKE_SEND))
        assert a.send(msg(n, msgh_id=2000 + i)) == 0
    a.ok(P.mach_port_deallocate, n)
    a.ok(P.mach_port_deallocate, n)
    a.notify_request(n, N.MACH_NOTIFY_PORT_DESTROYED, nport)
    a.ok(P.mach_port_destroy, n)
    assert port.active and port.receiver is None  # in transit in the notification
    h = got(a.receive(nport), N.MACH_NOTIFY_PORT_DESTROYED)
    new_name, typ = h[M.A_DESCS]
    assert typ == M.MACH_MSG_TYPE_PORT_RECEIVE
    assert a.space.lookup(new_name).object is port and port.receiver is a.space
    # the queued messages came with it
    got(a.receive(new_name), 2000)
    got(a.receive(new_name), 2001)
    assert a.ptype(new_name) == M.MACH_PORT_TYPE_RECEIVE


def test_dead_name_on_port_death(k):
    a, b = KTask(k, "a"), KTask(k, "b")
    n = a.port()
    a.ok(P.mach_port_insert_right, n, (n, MAKE_SEND))
    bn = _give_send(a, b, n, copies=2)
    bnotify = b.port()
    assert b.notify_request(bn, N.MACH_NOTIFY_DEAD_NAME, bnotify, sync=0) == 0  # no previous
    assert b.ptype(bn) & M.MACH_PORT_TYPE_DNREQUEST
    a.ok(P.mach_port_destroy, n)
    h = got(b.receive(bnotify), N.MACH_NOTIFY_DEAD_NAME)
    assert M.unpackb(b.frames()[-1][1]) == [bn]
    assert b.ptype(bn) == M.MACH_PORT_TYPE_DEAD_NAME
    assert b.refs(bn, DEAD) == 3  # two urefs plus the notification's
    assert b.send(msg(bn)) == R.MACH_SEND_INVALID_DEST
    del h


def test_dead_name_request_on_already_dead_name(k):
    a = KTask(k, "a")
    n = a.ok(P.mach_port_allocate, DEAD)
    nport = a.port()
    assert a.err(P.mach_port_request_notification, n, N.MACH_NOTIFY_DEAD_NAME, 0,
                 nport) == K.KERN_INVALID_ARGUMENT
    # the refused request's send-once right was destroyed: a send-once notification
    got(a.receive(nport), N.MACH_NOTIFY_SEND_ONCE)
    a.notify_request(n, N.MACH_NOTIFY_DEAD_NAME, nport, sync=1)
    got(a.receive(nport), N.MACH_NOTIFY_DEAD_NAME)
    assert a.refs(n, DEAD) == 2


def test_port_deleted_when_send_right_deallocated_with_request(k):
    a, b = KTask(k, "a"), KTask(k, "b")
    n = a.port()
    a.ok(P.mach_port_insert_right, n, (n, MAKE_SEND))
    bn = _give_send(a, b, n)
    bnotify = b.port()
    b.notify_request(bn, N.MACH_NOTIFY_DEAD_NAME, bnotify)
    b.ok(P.mach_port_deallocate, bn)
    got(b.receive(bnotify), N.MACH_NOTIFY_PORT_DELETED)


# ---------------------------------------------------------------- queues

def test_qlimit_enforced_for_user_sends(k):
    a = KTask(k, "a")
    n = a.port()
    a.ok(P.mach_port_insert_right, n, (n, MAKE_SEND))
    for i in range(5):
        assert a.send(msg(n, msgh_id=3000 + i), timeout=0) == 0
    assert a.send(msg(n), timeout=0) == R.MACH_SEND_TIMED_OUT
    assert a.refs(n) == 1  # the failed send gave its right back
    assert a.attrs(n)["msgcount"] == 5
    # a blocked sender (another thread) is admitted once a message is taken
    assert a.send(msg(n, msgh_id=3005), timeout=None, tid=2) is None
    assert a.attrs(n)["blocked_senders"] == 1
    assert a.answers(2) == []
    got(a.receive(n), 3000)
    assert [f[0][M.A_CODE] for f in a.answers(2)] == [0]  # the blocked send completed
    at = a.attrs(n)
    assert at["msgcount"] == 5 and at["blocked_senders"] == 0
    # the kernel's own sends ignore the limit: a send-once notification lands
    b = KTask(k, "b")
    q = b.port()
    qa = _transfer_send(b, a, q)
    assert a.send(msg(qa, descs=[(n, MAKE_SO)])) == 0
    so_name = got(b.receive(q))[M.A_DESCS][0]
    assert b.space.lookup(so_name).type == T_SEND_ONCE
    b.ok(P.mach_port_deallocate, so_name)
    assert a.attrs(n)["msgcount"] == 6
    for i in range(1, 6):
        got(a.receive(n), 3000 + i)
    got(a.receive(n), N.MACH_NOTIFY_SEND_ONCE)


def test_set_qlimit_bounds_and_zero(k):
    a = KTask(k, "a")
    n = a.port()
    a.ok(P.mach_port_set_qlimit, n, 16)
    assert a.err(P.mach_port_set_qlimit, n, 17) == K.KERN_INVALID_VALUE
    assert a.attrs(n)["qlimit"] == 16
    a.ok(P.mach_port_set_qlimit, n, 0)
    a.ok(P.mach_port_insert_right, n, (n, MAKE_SEND))
    assert a.send(msg(n), timeout=0) == R.MACH_SEND_TIMED_OUT
    # qlimit 0 blocks every user send, as in GNU Mach, even with a receiver waiting,
    # whichever came first
    assert a.receive(n, timeout=None, tid=2) is None
    b = KTask(k, "b")
    nb = _transfer_send(a, b, n)
    assert b.send(msg(nb, msgh_id=77), timeout=0) == R.MACH_SEND_TIMED_OUT
    assert b.send(msg(nb, msgh_id=78), timeout=None) is None
    assert a.answers(2) == []
    at = a.attrs(n)
    assert (at["waiting_receivers"], at["blocked_senders"]) == (1, 1)
    # raising the limit admits the blocked sender, whose message goes to the receiver
    a.ok(P.mach_port_set_qlimit, n, 1)
    assert [(f[0][M.A_KIND], f[0][M.A_ID]) for f in a.answers(2)] == [(M.K_MSG, 78)]
    assert b.frames()[-1][0][:4] == [M.K_RESULT, 1, b.seq, 0]
    # send-once messages ignore the limit
    a.ok(P.mach_port_set_qlimit, n, 0)
    so = _transfer_so(a, b, n)
    assert b.send(msg(so, MOVE_SO, msgh_id=79), timeout=0) == 0
    assert a.attrs(n)["msgcount"] == 1


def test_receive_errors(k):
    a = KTask(k, "a")
    n = a.port()
    a.ok(P.mach_port_insert_right, n, (n, MAKE_SEND))
    assert a.receive(0x7FFF0002) == ("code", R.MACH_RCV_INVALID_NAME)
    s = a.ok(P.mach_port_allocate, M.MACH_PORT_RIGHT_PORT_SET)
    a.ok(P.mach_port_move_member, n, s)
    assert a.receive(n) == ("code", R.MACH_RCV_IN_SET)
    assert a.receive(s, timeout=None) is None  # waits on the set
    assert a.attrs(n)["waiting_receivers"] == 1
    assert a.send(msg(n, msgh_id=55)) == 0
    h = a.frames()[-2][0]
    assert h[M.A_KIND] == M.K_MSG and h[M.A_ID] == 55 and h[M.A_LOCAL] == n


def test_destroying_a_port_wakes_its_receivers_and_senders(k):
    a, b = KTask(k, "a"), KTask(k, "b")
    n = a.port()
    a.ok(P.mach_port_set_qlimit, n, 0)
    nb = _transfer_send(a, b, n)
    assert b.send(msg(nb), timeout=None) is None  # blocked
    receiver = a.trap(M.MACH_RCV_MSG, rcv=n, tid=2)
    assert receiver == []
    a.ok(P.mach_port_destroy, n)
    assert [f[0][M.A_CODE] for f in a.answers(2)] == [R.MACH_RCV_PORT_DIED]
    assert b.frames()[-1][0][M.A_CODE] == R.MACH_SEND_INVALID_DEST


def test_task_port_is_kernel_served_and_bad_requests_get_mig_errors(k):
    a = KTask(k, "a")
    rp = a.reply_port()
    bad = M.Message(P.mach_port_allocate.msgh_id, a.task_self, COPY_SEND, rp, MAKE_SO, [],
                    M.packb(["not a number"]))
    out = a.trap(M.MACH_SEND_MSG | M.MACH_RCV_MSG, bad, rcv=rp)
    h = out[-1][0]
    assert h[M.A_KIND] == M.K_MSG and h[M.A_ID] == P.mach_port_allocate.reply_id
    assert M.unpackb(out[-1][1]) == [MigReturn.MIG_BAD_ARGUMENTS]
    unknown = M.Message(3299, a.task_self, COPY_SEND, rp, MAKE_SO, [], M.packb([]))
    out = a.trap(M.MACH_SEND_MSG | M.MACH_RCV_MSG, unknown, rcv=rp)
    assert out[-1][0][M.A_ID] == 3399
    assert M.unpackb(out[-1][1]) == [MigReturn.MIG_BAD_ID]


def test_malformed_frames_disconnect_only_the_offender(k):
    a, b = KTask(k, "a"), KTask(k, "b")
    n = a.port()
    frames_before = len(k.out.get(b.ident, []))
    # The disconnect frame goes through the real socket (the peer is unknown to zmq),
    # so what the test sees is the task's death.
    k.handle([b.ident, b"\xc1garbage"])
    assert b.ident not in k.tasks and not b.task.alive
    assert len(k.out.get(b.ident, [])) == frames_before
    assert a.ptype(n) == M.MACH_PORT_TYPE_RECEIVE  # a goes on
    assert M.K_DISCONNECT == 4


def test_reverse_map_forgets_a_port_whose_last_send_right_goes():
    """mach_port_deallocate of the last send uref (and MOVE_SEND of it) must drop the
    space's port -> name entry, or the next copyout of that port finds a stale name."""
    from kernel.ipc_port import IPCPort
    from kernel.ipc_space import T_SEND, IPCSpace

    space = IPCSpace()
    port = IPCPort()
    name = space.insert(port, T_SEND, 1)
    e = space.table[name]
    e.type &= ~T_SEND  # as deallocate and MOVE_SEND copyin do before removing
    space.remove(name)
    assert port.id not in space.reverse and name not in space.table


def test_only_a_local_peer_pid_is_believed(k):
    """task_create: over ipc:// the hello's pid gets a pidfd (its liveness is then the
    kernel's to see, and heartbeat silence alone does not destroy it); over the network
    a peer could name any live pid, so it gets none and the heartbeat decides."""
    local = k.task_create(b"local", os.getpid(), "local", "task")
    assert local.pidfd is not None
    remote_k = RecordingKernel("tcp://127.0.0.1:*")
    try:
        remote = remote_k.task_create(b"remote", os.getpid(), "remote", "task")
        assert remote.pidfd is None
        remote.last_seen -= remote_k.config.heartbeat_timeout + 1
        remote_k.check_heartbeats()
        assert not remote.alive
    finally:
        remote_k.close()
