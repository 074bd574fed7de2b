"""Mach IPC across real processes: a real kernel process, the test process as one or
more tasks (``tasks`` fixture), other tasks as child processes (``procs.python``).

Children report what they saw in Mach messages (msgpack bodies) to a port of the test
task, so every check goes through the kernel being tested.
"""

from __future__ import annotations

import threading
import time

import pytest

from protocol import message as M
from protocol.defs import demo as D
from protocol.defs import mach_port as P
from protocol.defs import machemu as X
from protocol.defs import netname as NS
from protocol.defs import notify as N
from protocol.kern_return import KernReturn as K
from protocol.kern_return import MachError, MigReturn
from protocol.kern_return import MachMsgReturn as R
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(90)

RECV, SEND, SO = M.MACH_PORT_RIGHT_RECEIVE, M.MACH_PORT_RIGHT_SEND, M.MACH_PORT_RIGHT_SEND_ONCE
MOVE_RECEIVE, MOVE_SEND, MOVE_SO = 16, 17, 18
COPY_SEND, MAKE_SEND, MAKE_SO = 19, 20, 21
NETNAME_NOT_CHECKED_IN = 2802

# Code every child task runs first: connect, and helpers.
PRELUDE = r'''
import os, sys, threading, time
from protocol import runtime, message as M
from protocol.defs import mach_port as P, netname as NS
from protocol.kern_return import MachError
rt = runtime.connect(os.environ["MACHEMU_KERNEL"], name=os.environ["TASK_NAME"])
RUN_DIR = os.environ["RUN_DIR"]

def port_with_send():
    n = P.mach_port_allocate(rt.task_self, M.MACH_PORT_RIGHT_RECEIVE)
    P.mach_port_insert_right(rt.task_self, n, (n, M.MACH_MSG_TYPE_MAKE_SEND))
    return n

def check_in(name, n):
    NS.netname_check_in(rt.name_server, name, n, n)

def look_up(name, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return NS.netname_look_up(rt.name_server, "", name)
        except MachError as e:
            if e.code != 2802 or time.monotonic() > deadline:
                raise
            time.sleep(0.02)

def refs(name, right=M.MACH_PORT_RIGHT_SEND):
    return P.mach_port_get_refs(rt.task_self, name, right)

def ptype(name):
    try:
        return P.mach_port_type(rt.task_self, name)
    except MachError as e:
        return -e.code

def report(dest, msgh_id, **info):
    rt.send(M.Message(msgh_id, dest, M.MACH_MSG_TYPE_COPY_SEND, body=M.packb(info)))
'''


def child(procs, kernel, name, code):
    env = {"MACHEMU_KERNEL": str(kernel), "TASK_NAME": name, "RUN_DIR": str(kernel.run_dir)}
    return procs.python(PRELUDE + code, name=name, env=env)


def look_up(rt, name, timeout=30.0, children=()):
    """netname_look_up, polled until the name is checked in."""

    def attempt():
        for c in children:
            assert c.p.poll() is None, f"{c.name} exited:\n{c.output()}"
        try:
            return NS.netname_look_up(rt.name_server, "", name, rt=rt)
        except MachError as e:
            if e.code != NETNAME_NOT_CHECKED_IN:
                raise
            return None

    return wait_for(attempt, timeout, what=f"{name} checked in")


def receive(rt, name, timeout=30.0, children=()):
    try:
        return rt.receive(name, timeout=timeout)
    except MachError as e:
        outs = "\n".join(f"--- {c.name}:\n{c.output()}" for c in children)
        raise AssertionError(f"no message on {name}: {e}\n{outs}") from None


def new_port(rt, send=False):
    n = P.mach_port_allocate(rt.task_self, RECV, rt=rt)
    if send:
        P.mach_port_insert_right(rt.task_self, n, (n, MAKE_SEND), rt=rt)
    return n


def attrs(rt, name):
    return X.mach_port_get_attributes(rt.task_self, name, X.MACH_PORT_RECEIVE_STATUS, rt=rt)


def refs(rt, name, right=SEND):
    return P.mach_port_get_refs(rt.task_self, name, right, rt=rt)


def msg(dest, msgh_id=1000, disp=COPY_SEND, descs=(), body=None, ool=(), local=0, ldisp=0):
    return M.Message(msgh_id, dest, disp, local, ldisp, list(descs),
                     M.packb(body if body is not None else []), list(ool))


def mach_code(fn, *a, **kw):
    """The MachError code ``fn`` raises (0 if it returns)."""
    try:
        fn(*a, **kw)
    except MachError as e:
        return e.code
    return 0


# ---------------------------------------------------------------- rights between tasks

@pytest.mark.timeout(120)
def test_rights_move_between_three_tasks(kernel, tasks, procs):
    b = child(procs, kernel, "B", r'''
pb = port_with_send(); check_in("B", pb)
m = rt.receive(pb, timeout=60)                   # from A: a send right to A's port
right, typ = m.descs[0]
b_refs = refs(right)
c = look_up("C")
rt.send(M.Message(2, c, M.MACH_MSG_TYPE_COPY_SEND, descs=[(right, M.MACH_MSG_TYPE_MOVE_SEND)],
                  body=M.packb({"b_refs": b_refs, "b_type": typ})))
gone = ptype(right)                               # moved away: no longer a name in B
m2 = rt.receive(pb, timeout=60)                   # from A: a receive right with messages
rname, rtyp = m2.descs[0]
ids = [rt.receive(rname, timeout=60).msgh_id for _ in range(4)]
report(c, 3, gone=gone, recv_type=rtyp, ids=ids, recv_refs=refs(rname, M.MACH_PORT_RIGHT_RECEIVE),
       rname_type=ptype(rname))
threading.Event().wait(60)
''')
    c = child(procs, kernel, "C", r'''
pc = port_with_send(); check_in("C", pc)
m = rt.receive(pc, timeout=60)                    # from B: the right, moved
right, typ = m.descs[0]
info = M.unpackb(m.body)
info.update(c_refs=refs(right), c_type=typ, c_same_name_as_b=False)
report(right, 10, **info)                          # C sends to A's port
m3 = rt.receive(pc, timeout=60)
rt.send(M.Message(11, right, M.MACH_MSG_TYPE_COPY_SEND, body=m3.body))
threading.Event().wait(60)
''')
    kids = (b, c)
    a = tasks.new("A")
    pa = new_port(a)
    bname = look_up(a, "B", children=kids)
    look_up(a, "C", children=kids)
    # A gives B a (made) send right to pa in a message.
    a.send(msg(bname, 1, descs=[(pa, MAKE_SEND)]))
    m = receive(a, pa, children=kids)
    assert m.msgh_id == 10
    info = M.unpackb(m.body)
    assert info["b_type"] == M.MACH_MSG_TYPE_PORT_SEND and info["b_refs"] == 1
    assert info["c_type"] == M.MACH_MSG_TYPE_PORT_SEND and info["c_refs"] == 1
    at = attrs(a, pa)
    assert at["srights"] == 1 and at["mscount"] == 1  # only C holds one now
    assert refs(a, pa, RECV) == 1 and refs(a, pa, SEND) == 0

    # MOVE_RECEIVE: the queued messages follow the receive right to B.
    pm = new_port(a, send=True)
    for i in range(3):
        a.send(msg(pm, 201 + i), timeout=5)
    assert attrs(a, pm)["msgcount"] == 3
    a.send(msg(bname, 1, descs=[(pm, MOVE_RECEIVE)]))
    assert P.mach_port_type(a.task_self, pm, rt=a) == M.MACH_PORT_TYPE_SEND
    assert refs(a, pm, RECV) == 0 and refs(a, pm, SEND) == 1
    assert mach_code(attrs, a, pm) == K.KERN_INVALID_RIGHT
    a.send(msg(pm, 204), timeout=5)  # A's send right still reaches the port, now B's
    m = receive(a, pa, children=kids)
    assert m.msgh_id == 11
    info = M.unpackb(m.body)
    assert info["gone"] == -K.KERN_INVALID_NAME
    assert info["recv_type"] == M.MACH_MSG_TYPE_PORT_RECEIVE
    assert info["ids"] == [201, 202, 203, 204]
    assert info["recv_refs"] == 1 and info["rname_type"] == M.MACH_PORT_TYPE_RECEIVE


def test_names_are_per_task(tasks):
    a, b = tasks.new("a"), tasks.new("b")
    pb = new_port(b, send=True)
    pa = new_port(a, send=True)
    # b's name means nothing in a's space
    assert mach_code(a.send, msg(pb), timeout=1) == R.MACH_SEND_INVALID_DEST
    assert mach_code(P.mach_port_type, a.task_self, pb, rt=a) == K.KERN_INVALID_NAME
    # nor can a's task port name b's rights
    assert mach_code(P.mach_port_type, b.task_self, pb, rt=a) == R.MACH_SEND_INVALID_DEST
    assert mach_code(a.send, msg(0), timeout=1) == R.MACH_SEND_INVALID_DEST
    # a right of the wrong kind: a descriptor moving a receive right a holds only a send
    # right for, a reply made from a send right, a destination that is only a receive
    # right of a port set
    assert mach_code(a.send, msg(pa, descs=[(pb, COPY_SEND)]), timeout=1) == \
        R.MACH_SEND_INVALID_RIGHT
    pset = P.mach_port_allocate(a.task_self, M.MACH_PORT_RIGHT_PORT_SET, rt=a)
    assert mach_code(a.send, msg(pa, descs=[(pset, MAKE_SEND)]), timeout=1) == \
        R.MACH_SEND_INVALID_RIGHT
    only_recv = new_port(a)
    assert mach_code(a.send, msg(pa, descs=[(only_recv, COPY_SEND)]), timeout=1) == \
        R.MACH_SEND_INVALID_RIGHT
    assert mach_code(a.send, msg(pa, descs=[(only_recv, MOVE_SO)]), timeout=1) == \
        R.MACH_SEND_INVALID_RIGHT
    assert mach_code(a.send, msg(only_recv), timeout=1) == R.MACH_SEND_INVALID_DEST
    assert mach_code(a.send, msg(pa, local=pb, ldisp=MAKE_SO), timeout=1) == \
        R.MACH_SEND_INVALID_REPLY
    # nothing was lost on the way
    assert refs(a, pa) == 1 and attrs(a, pa)["msgcount"] == 0
    assert refs(a, only_recv, RECV) == 1 and refs(a, only_recv) == 0
    # and a send to b's port through a right b gave a (via the name server) works
    NS.netname_check_in(b.name_server, "b-port", pb, pb, rt=b)
    pb_in_a = look_up(a, "b-port")
    assert pb_in_a != pb  # names are the receiving space's own
    a.send(msg(pb_in_a, 42), timeout=5)
    assert b.receive(pb, timeout=10).msgh_id == 42


# ---------------------------------------------------------------- queue limits

def test_full_queue_blocks_user_senders_but_not_the_kernel(tasks, kernel):
    a, b = tasks.new("a"), tasks.new("b")
    p = new_port(a, send=True)
    NS.netname_check_in(a.name_server, "full", p, p, rt=a)
    pb = look_up(b, "full")
    assert attrs(a, p)["qlimit"] == M.MACH_PORT_QLIMIT_DEFAULT
    for i in range(5):
        b.send(msg(pb, 100 + i), timeout=5)
    assert attrs(a, p)["msgcount"] == 5
    t0 = time.monotonic()
    assert mach_code(b.send, msg(pb, 999), timeout=0.2) == R.MACH_SEND_TIMED_OUT
    assert time.monotonic() - t0 >= 0.19  # it did wait for its timeout
    assert mach_code(b.send, msg(pb, 999), timeout=0) == R.MACH_SEND_TIMED_OUT
    assert refs(b, pb) == 1  # timed-out sends gave the right back

    # A sender without timeout blocks until the receiver takes a message.
    done = {}

    def blocked_send():
        try:
            b.send(msg(pb, 105))
            done["code"] = 0
        except MachError as e:
            done["code"] = e.code
        done["t"] = time.monotonic()

    th = threading.Thread(target=blocked_send)
    th.start()
    wait_for(lambda: attrs(a, p)["blocked_senders"] == 1, 10, what="sender blocked")
    assert "code" not in done
    assert a.receive(p, timeout=5).msgh_id == 100
    th.join(10)
    assert not th.is_alive() and done["code"] == 0
    at = attrs(a, p)
    assert at["msgcount"] == 5 and at["blocked_senders"] == 0

    # Messages the kernel sends itself land on the full queue anyway.
    q = new_port(a, send=True)  # no-senders notification for q, aimed at p
    prev = P.mach_port_request_notification(a.task_self, q, N.MACH_NOTIFY_NO_SENDERS, 1, p,
                                            rt=a)
    assert prev == M.MACH_PORT_NULL  # no previous request
    P.mach_port_deallocate(a.task_self, q, rt=a)
    r = new_port(b, send=True)  # dead-name notification for b's port r, aimed at p
    NS.netname_check_in(b.name_server, "r", r, r, rt=b)
    ra = look_up(a, "r")
    P.mach_port_request_notification(a.task_self, ra, N.MACH_NOTIFY_DEAD_NAME, 0, p, rt=a)
    P.mach_port_destroy(b.task_self, r, rt=b)
    # a send-once right to p destroyed unused
    # (the stub returns only the name of a mach_port_poly_t reply, not its type)
    so = P.mach_port_extract_right(a.task_self, p, MAKE_SO, rt=a)
    assert P.mach_port_type(a.task_self, so, rt=a) == M.MACH_PORT_TYPE_SEND_ONCE
    P.mach_port_deallocate(a.task_self, so, rt=a)
    at = wait_for(lambda: (lambda x: x if x["msgcount"] == 8 else None)(attrs(a, p)), 10,
                  what="three notifications queued")
    assert at["msgcount"] > at["qlimit"]
    ids = [a.receive(p, timeout=5).msgh_id for _ in range(8)]
    assert ids[:5] == [101, 102, 103, 104, 105]
    assert sorted(ids[5:]) == sorted([N.MACH_NOTIFY_NO_SENDERS, N.MACH_NOTIFY_DEAD_NAME,
                                      N.MACH_NOTIFY_SEND_ONCE])


def test_set_qlimit(tasks):
    a = tasks.new("a")
    p = new_port(a, send=True)
    P.mach_port_set_qlimit(a.task_self, p, M.MACH_PORT_QLIMIT_MAX, rt=a)
    assert mach_code(P.mach_port_set_qlimit, a.task_self, p, 17, rt=a) == K.KERN_INVALID_VALUE
    assert attrs(a, p)["qlimit"] == 16
    for i in range(16):
        a.send(msg(p, i), timeout=0)
    assert mach_code(a.send, msg(p, 16), timeout=0) == R.MACH_SEND_TIMED_OUT
    P.mach_port_set_qlimit(a.task_self, p, 1, rt=a)
    assert mach_code(a.send, msg(p, 16), timeout=0) == R.MACH_SEND_TIMED_OUT
    st = P.mach_port_get_receive_status(a.task_self, p, rt=a)
    assert st[3] == 1 and st[4] == 16  # qlimit, msgcount
    # set_qlimit needs the receive right
    q = new_port(a)
    P.mach_port_extract_right(a.task_self, q, MAKE_SEND, rt=a)
    P.mach_port_mod_refs(a.task_self, q, RECV, -1, rt=a)
    assert mach_code(P.mach_port_set_qlimit, a.task_self, q, 3, rt=a) in (
        K.KERN_INVALID_RIGHT, K.KERN_INVALID_NAME)


# ---------------------------------------------------------------- server death

@pytest.mark.timeout(120)
def test_sigkill_server_dead_names_and_pending_rpcs_fail_fast(kernel, tasks, procs):
    srv = child(procs, kernel, "srv", r'''
ps = port_with_send(); check_in("srv", ps)
m = rt.receive(ps, timeout=60)       # take one request and never answer it
open(os.path.join(RUN_DIR, "srv.got"), "w").write(str(m.msgh_id))
threading.Event().wait(120)
''')
    a = tasks.new("client")
    s = look_up(a, "srv", children=(srv,))
    pn = new_port(a)
    P.mach_port_request_notification(a.task_self, s, N.MACH_NOTIFY_DEAD_NAME, 0, pn, rt=a)
    assert P.mach_port_type(a.task_self, s, rt=a) & M.MACH_PORT_TYPE_DNREQUEST
    results = {}

    def rpc(key):
        try:
            D.demo_null(s, rt=a)
            results[key] = (0, time.monotonic())
        except MachError as e:
            results[key] = (e.code, time.monotonic())
        finally:
            a.thread_exit()

    t1 = threading.Thread(target=rpc, args=("received",))
    t1.start()
    got = kernel.run_dir / "srv.got"
    wait_for(lambda: got.exists() and got.read_text(), 30, what="server took the request")
    t2 = threading.Thread(target=rpc, args=("queued",))
    t2.start()

    def queued():
        info = X.machemu_kernel_info(a.host_priv, rt=a)
        return any(p["task"] == "srv" and p["depth"] == 1 for p in info["ports"])

    wait_for(queued, 30, what="second request queued at the server")
    assert not results
    srv.kill()
    t_kill = time.monotonic()
    m = a.receive(pn, timeout=10)
    t_dead = time.monotonic()
    t1.join(10)
    t2.join(10)
    assert m.msgh_id == N.MACH_NOTIFY_DEAD_NAME
    assert M.unpackb(m.body) == [s]
    assert results["received"][0] == MigReturn.MIG_SERVER_DIED
    assert results["queued"][0] == MigReturn.MIG_SERVER_DIED
    lat = {"dead_name": t_dead - t_kill,
           "received": results["received"][1] - t_kill,
           "queued": results["queued"][1] - t_kill}
    print(f"\nSIGKILL -> notification latencies (s): {lat}")
    assert all(v < 2.0 for v in lat.values()), lat
    assert P.mach_port_type(a.task_self, s, rt=a) == M.MACH_PORT_TYPE_DEAD_NAME
    assert mach_code(a.send, msg(s), timeout=1) == R.MACH_SEND_INVALID_DEST


# ---------------------------------------------------------------- ports, sets, names

def test_port_sets_and_waiting_receivers(tasks):
    a, b = tasks.new("a"), tasks.new("b")
    p1, p2 = new_port(a, send=True), new_port(a, send=True)
    s = P.mach_port_allocate(a.task_self, M.MACH_PORT_RIGHT_PORT_SET, rt=a)
    P.mach_port_move_member(a.task_self, p1, s, rt=a)
    P.mach_port_move_member(a.task_self, p2, s, rt=a)
    assert sorted(P.mach_port_get_set_status(a.task_self, s, rt=a)) == sorted([p1, p2])
    assert attrs(a, p1)["in_set"]
    assert mach_code(a.receive, p1, timeout=0) == R.MACH_RCV_IN_SET
    NS.netname_check_in(a.name_server, "p2", p2, p2, rt=a)
    p2b = look_up(b, "p2")
    got = {}

    def recv_set():
        got["m"] = a.receive(s, timeout=20)

    th = threading.Thread(target=recv_set)
    th.start()
    wait_for(lambda: attrs(a, p1)["waiting_receivers"] == 1, 10, what="receiver on set")
    assert attrs(a, p2)["waiting_receivers"] == 1
    b.send(msg(p2b, 77), timeout=5)
    th.join(10)
    assert got["m"].msgh_id == 77 and got["m"].local_port == p2
    # messages queued on members are received through the set, from both members
    a.send(msg(p1, 1), timeout=1)
    b.send(msg(p2b, 2), timeout=1)
    assert attrs(a, p1)["msgcount"] == 1
    ms = [a.receive(s, timeout=5) for _ in range(2)]
    assert sorted((m.msgh_id, m.local_port) for m in ms) == [(1, p1), (2, p2)]
    # out of the set: received directly again
    P.mach_port_move_member(a.task_self, p1, 0, rt=a)
    assert P.mach_port_get_set_status(a.task_self, s, rt=a) == [p2]
    assert mach_code(P.mach_port_move_member, a.task_self, p1, 0, rt=a) == K.KERN_NOT_IN_SET
    a.send(msg(p1, 3), timeout=1)
    assert a.receive(p1, timeout=5).msgh_id == 3
    # a plain port's waiting receiver, counted and then served
    th = threading.Thread(target=lambda: got.update(m=a.receive(p1, timeout=20)))
    th.start()
    wait_for(lambda: attrs(a, p1)["waiting_receivers"] == 1, 10, what="receiver on port")
    a.send(msg(p1, 4), timeout=1)
    th.join(10)
    assert got["m"].msgh_id == 4 and attrs(a, p1)["waiting_receivers"] == 0
    assert mach_code(a.receive, 0x7FFFFF00, timeout=0) == R.MACH_RCV_INVALID_NAME
    assert mach_code(a.receive, s, timeout=0.05) == R.MACH_RCV_TIMED_OUT


def test_netname_check_in_look_up_and_no_senders(tasks):
    a, b = tasks.new("a"), tasks.new("b")
    p = new_port(a, send=True)
    pn = new_port(a)
    P.mach_port_request_notification(a.task_self, p, N.MACH_NOTIFY_NO_SENDERS, 1, pn, rt=a)
    NS.netname_check_in(a.name_server, "svc", p, p, rt=a)
    assert mach_code(NS.netname_check_in, b.name_server, "svc", b.task_self, b.task_self,
                     rt=b) == 2801  # NETNAME_NOT_YOUR_ENTRY
    assert NS.netname_version(a.name_server, rt=a) >= 1
    pb = NS.netname_look_up(b.name_server, "", "svc", rt=b)
    assert refs(b, pb) == 1
    assert NS.netname_look_up(b.name_server, "", "svc", rt=b) == pb
    assert refs(b, pb) == 2  # a second look-up merges into the same name
    assert mach_code(NS.netname_look_up, b.name_server, "", "nothing", rt=b) == \
        NETNAME_NOT_CHECKED_IN
    b.send(msg(pb, 5), timeout=5)
    assert a.receive(p, timeout=5).msgh_id == 5
    # No senders yet: a's own, b's and the name server's send rights remain.
    P.mach_port_deallocate(a.task_self, p, rt=a)
    P.mach_port_mod_refs(b.task_self, pb, SEND, -2, rt=b)
    assert mach_code(b.send, msg(pb), timeout=0) == R.MACH_SEND_INVALID_DEST
    assert mach_code(a.receive, pn, timeout=0.1) == R.MACH_RCV_TIMED_OUT
    assert attrs(a, p)["srights"] == 2  # the name server holds port and signature
    P.mach_port_insert_right(a.task_self, p, (p, MAKE_SEND), rt=a)  # to sign the check-out
    NS.netname_check_out(a.name_server, "svc", p, rt=a)
    assert mach_code(a.receive, pn, timeout=0.1) == R.MACH_RCV_TIMED_OUT  # a's right remains
    P.mach_port_deallocate(a.task_self, p, rt=a)
    m = a.receive(pn, timeout=5)
    assert m.msgh_id == N.MACH_NOTIFY_NO_SENDERS
    assert M.unpackb(m.body) == [attrs(a, p)["mscount"]]
    assert attrs(a, p)["srights"] == 0
    assert mach_code(NS.netname_look_up, b.name_server, "", "svc", rt=b) == \
        NETNAME_NOT_CHECKED_IN


def test_port_destroyed_returns_receive_right_with_messages(tasks):
    a, b = tasks.new("a"), tasks.new("b")
    p = new_port(a, send=True)
    pn = new_port(a)
    P.mach_port_request_notification(a.task_self, p, N.MACH_NOTIFY_PORT_DESTROYED, 0, pn, rt=a)
    a.send(msg(p, 61), timeout=1)
    # give the receive right to b, which then dies (its task is destroyed)
    q = new_port(b, send=True)
    NS.netname_check_in(b.name_server, "b-inbox", q, q, rt=b)
    qa = look_up(a, "b-inbox")
    a.send(msg(qa, 1, descs=[(p, MOVE_RECEIVE)]), timeout=5)
    m = b.receive(q, timeout=5)
    pb, typ = m.descs[0]
    assert typ == M.MACH_MSG_TYPE_PORT_RECEIVE
    assert refs(b, pb, RECV) == 1
    a.send(msg(p, 62), timeout=1)
    assert attrs(b, pb)["msgcount"] == 2
    b.close()
    m = a.receive(pn, timeout=10)
    assert m.msgh_id == N.MACH_NOTIFY_PORT_DESTROYED
    (back, typ), = m.descs
    assert typ == M.MACH_MSG_TYPE_PORT_RECEIVE
    # the same port: a's send right and the returned receive right share one name
    assert back == p
    assert P.mach_port_type(a.task_self, p, rt=a) == M.MACH_PORT_TYPE_SEND_RECEIVE
    assert [a.receive(p, timeout=5).msgh_id for _ in range(2)] == [61, 62]
    # without a request, destroying the receive right kills the port
    P.mach_port_destroy(a.task_self, p, rt=a)
    assert mach_code(P.mach_port_type, a.task_self, p, rt=a) == K.KERN_INVALID_NAME


def test_dead_name_notification_when_task_exits(kernel, tasks, procs):
    srv = child(procs, kernel, "quitter", r'''
ps = port_with_send(); check_in("quitter", ps)
rt.receive(ps, timeout=60)           # the signal to go
os._exit(0)
''')
    a = tasks.new("a")
    s = look_up(a, "quitter", children=(srv,))
    pn = new_port(a)
    P.mach_port_request_notification(a.task_self, s, N.MACH_NOTIFY_DEAD_NAME, 0, pn, rt=a)
    a.send(msg(s, 1), timeout=5)
    m = a.receive(pn, timeout=20)
    assert m.msgh_id == N.MACH_NOTIFY_DEAD_NAME and M.unpackb(m.body) == [s]
    # the dead name holds the right's urefs plus the notification's
    assert refs(a, s, M.MACH_PORT_RIGHT_DEAD_NAME) == 2
    P.mach_port_mod_refs(a.task_self, s, M.MACH_PORT_RIGHT_DEAD_NAME, -2, rt=a)
    assert mach_code(P.mach_port_type, a.task_self, s, rt=a) == K.KERN_INVALID_NAME
    assert srv.p.wait(10) == 0


@pytest.mark.timeout(60)
def test_oversized_message_is_refused_and_the_task_goes_on(tasks):
    """Out-of-line data beyond the wire's bound is refused with MACH_SEND_NO_BUFFER
    before it leaves the task; the task's connection survives."""
    from protocol.defs import mach_port as P

    a = tasks.new("big")
    p = P.mach_port_allocate(a.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=a)
    msg = M.Message(msgh_id=1, remote_port=p, remote_disp=M.MACH_MSG_TYPE_MAKE_SEND,
                    ool=[bytes(M.MAX_OOL_BYTES + 1)])
    with pytest.raises(MachError) as e:
        a.send(msg, timeout=5)
    assert e.value.code == 0x1000000D  # MACH_SEND_NO_BUFFER
    assert P.mach_port_type(a.task_self, p, rt=a) == M.MACH_PORT_TYPE_RECEIVE
