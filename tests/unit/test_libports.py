"""libports logic that needs no kernel: the bucket's table and reference counts, the
no-senders decision, the demuxer's replies, the multithread model's thread accounting
and the workers model's ordered, bounded queue."""

from __future__ import annotations

import random
import threading

import pytest

from protocol import message as M
from protocol.defs import demo as D
from protocol.defs import notify as N
from protocol.kern_return import KernReturn, MachError, MigReturn
from protocol.mig import Demux
from translators.libports import (
    EOPNOTSUPP,
    PORT_HAS_SENDRIGHTS,
    PortBucket,
    PortInfo,
    PortsDemuxer,
    ThreadAccount,
    WorkQueue,
    mig_reply,
    ports_create_class,
    ports_lookup_port,
    ports_port_deref,
    ports_port_ref,
)
from translators.libports.demuxer import is_rcv_error, is_send_error, reply_send_timeout

pytestmark = pytest.mark.timeout(30)


def bucket_with(*names, class_=None):
    """A bucket without a kernel (rt None): only its table is used."""
    b = PortBucket()
    cls = class_ or ports_create_class(name="t")
    pis = []
    for n in names:
        pi = PortInfo(cls, b, n)
        b._enter(pi)
        pis.append(pi)
    return b, cls, pis


# ---------------------------------------------------------------- bucket table

def test_lookup_adds_a_reference_and_deref_drops_it():
    b, cls, (pi,) = bucket_with(300)
    assert pi.refcnt == 1
    got = ports_lookup_port(b, 300)
    assert got is pi and pi.refcnt == 2
    ports_port_deref(got)
    assert pi.refcnt == 1 and b.lookup(300) is pi


def test_lookup_unknown_name_and_wrong_class():
    b, cls, (pi,) = bucket_with(300)
    other = ports_create_class(name="other")
    assert b.lookup(301) is None
    assert b.lookup(300, other) is None
    assert pi.refcnt == 1
    assert b.lookup(300, cls) is pi
    assert b.stats["lookups_failed"] == 2


def test_last_reference_removes_the_object_and_runs_the_clean_routine():
    cleaned = []
    cls = ports_create_class(clean_routine=cleaned.append, name="c")
    b, _, (pi, keep) = bucket_with(300, 301, class_=cls)
    assert cls.count == 2
    ports_port_ref(pi)
    ports_port_deref(pi)
    assert cleaned == [] and b.lookup(300) is pi
    ports_port_deref(pi)  # the lookup's
    ports_port_deref(pi)  # the creator's: gone
    assert cleaned == [pi]
    assert pi.port_right == M.MACH_PORT_NULL
    assert b.lookup(300) is None and len(b) == 1 and cls.count == 1
    with pytest.raises(AssertionError):
        ports_port_deref(pi)


def test_duplicate_name_refused():
    b, cls, _ = bucket_with(300)
    with pytest.raises(ValueError):
        b._enter(PortInfo(cls, b, 300))


def test_no_senders_decision_follows_the_make_send_count():
    b, cls, (pi,) = bucket_with(300)
    assert b._no_senders(pi, 5) is None  # no send rights were ever made
    pi.flags |= PORT_HAS_SENDRIGHTS
    pi.mscount = 3
    # A send right was made after the notification: ask again, keep the reference.
    assert b._no_senders(pi, 2) == "rerequest"
    assert pi.flags & PORT_HAS_SENDRIGHTS
    assert b._no_senders(pi, 3) == "drop"
    assert not pi.flags & PORT_HAS_SENDRIGHTS
    assert b._no_senders(pi, 3) is None  # only once


def test_iterate_by_class_is_a_snapshot():
    a = ports_create_class(name="a")
    b, _, pis = bucket_with(300, 301, class_=a)
    other = ports_create_class(name="o")
    b._enter(PortInfo(other, b, 302))
    it = b.iterate(a)
    b._enter(PortInfo(a, b, 303))
    assert sorted(pi.port_right for pi in it) == [300, 301]
    assert len(list(b.iterate())) == 4


# ---------------------------------------------------------------- demuxer

def request(routine, args, local=300, reply=777, reply_disp=M.MACH_MSG_TYPE_MOVE_SEND_ONCE):
    body, descs, ool = routine.encode_request(args)
    return M.Message(msgh_id=routine.msgh_id, remote_port=reply if reply else 0,
                     remote_disp=reply_disp if reply else 0, local_port=local,
                     local_disp=M.MACH_MSG_TYPE_PORT_SEND, descs=descs, body=body, ool=ool)


def demo_demuxer(extra=None):
    b, cls, (pi,) = bucket_with(300)
    seen = []

    def echo(p, data):
        seen.append((p, bytes(data)))
        return bytes(data[::-1])

    def send(p, data):
        seen.append((p, bytes(data)))

    def fails(p, msecs):
        raise MachError(KernReturn.KERN_INVALID_ARGUMENT)

    def null(p):
        raise RuntimeError("handler bug")

    handlers = {D.demo_echo: echo, D.demo_send: send, D.demo_sleep: fails, D.demo_null: null}
    handlers.update(extra or {})
    return PortsDemuxer(b, handlers), pi, seen


def decode(routine, reply):
    return routine.decode_reply(reply.body, [d[0] for d in reply.descs], reply.ool)


def test_serve_dispatches_to_the_object_and_builds_the_reply():
    dm, pi, seen = demo_demuxer()
    reply = dm.serve(request(D.demo_echo, [b"abc"]))
    assert seen == [(pi, b"abc")]
    assert reply.msgh_id == D.demo_echo.msgh_id + 100
    assert reply.remote_port == 777 and reply.remote_disp == M.MACH_MSG_TYPE_MOVE_SEND_ONCE
    assert reply.local_port == M.MACH_PORT_NULL
    assert decode(D.demo_echo, reply) == (0, [b"cba"])
    assert pi.refcnt == 1 and pi.rpcs == 0


def test_unknown_id_gets_mig_bad_id():
    dm, pi, _ = demo_demuxer()
    msg = M.Message(msgh_id=50077, remote_port=777,
                    remote_disp=M.MACH_MSG_TYPE_MOVE_SEND_ONCE, local_port=300)
    reply = dm.serve(msg)
    assert reply.msgh_id == 50177
    assert M.unpackb(reply.body) == [MigReturn.MIG_BAD_ID]
    assert dm.stats["bad_id"] == 1


def test_bad_arguments_get_mig_bad_arguments():
    dm, pi, seen = demo_demuxer()
    msg = request(D.demo_echo, [b"x"])
    msg.ool = []  # the OOL datum is missing
    reply = dm.serve(msg)
    assert M.unpackb(reply.body) == [MigReturn.MIG_BAD_ARGUMENTS]
    assert reply.msgh_id == D.demo_echo.reply_id and seen == []


def test_handler_error_and_handler_bug_are_replied():
    dm, pi, _ = demo_demuxer()
    r = dm.serve(request(D.demo_sleep, [5]))
    assert M.unpackb(r.body) == [KernReturn.KERN_INVALID_ARGUMENT]
    r = dm.serve(request(D.demo_null, []))
    assert M.unpackb(r.body) == [KernReturn.KERN_FAILURE]
    assert dm.stats["handler_exceptions"] == 1 and pi.refcnt == 1


def test_no_reply_port_one_way_and_mig_no_reply_send_nothing():
    dm, pi, seen = demo_demuxer()
    assert dm.serve(request(D.demo_echo, [b"q"], reply=0)) is None
    assert dm.serve(request(D.demo_send, [b"s"], reply=0)) is None
    assert seen == [(pi, b"q"), (pi, b"s")]
    dm2, _, _ = demo_demuxer({D.demo_null: lambda p: MigReturn.MIG_NO_REPLY})
    assert dm2.serve(request(D.demo_null, [])) is None


def test_message_to_a_port_not_in_the_bucket_gets_eopnotsupp():
    dm, pi, seen = demo_demuxer()
    r = dm.serve(request(D.demo_echo, [b"a"], local=999))
    assert M.unpackb(r.body) == [EOPNOTSUPP] and r.msgh_id == D.demo_echo.reply_id
    assert seen == [] and dm.stats["no_object"] == 1


def test_no_senders_notification_drops_the_send_rights_reference():
    dm, pi, _ = demo_demuxer()
    cleaned = []
    pi.class_.clean_routine = cleaned.append
    pi.flags |= PORT_HAS_SENDRIGHTS
    pi.mscount = 1
    ports_port_ref(pi)  # the send rights' reference
    ports_port_deref(pi)  # the creator's
    body, descs, ool = N.mach_notify_no_senders.encode_request([1])
    note = M.Message(msgh_id=N.MACH_NOTIFY_NO_SENDERS, local_port=300, body=body,
                     sender=M.KERNEL_SENDER)
    assert dm.serve(note) is None
    assert cleaned == [pi] and len(dm.bucket) == 0
    assert dm.bucket.stats["no_senders"] == 1


def test_server_handlers_take_precedence_and_mig_reply_shapes():
    got = []
    dm, pi, _ = demo_demuxer({N.mach_notify_no_senders: lambda p, ms: got.append(ms)})
    body, _, _ = N.mach_notify_no_senders.encode_request([4])
    dm.serve(M.Message(msgh_id=N.MACH_NOTIFY_NO_SENDERS, local_port=300, body=body,
                       sender=M.KERNEL_SENDER))
    assert got == [4] and pi.refcnt == 1
    r = mig_reply(M.Message(msgh_id=D.demo_null.msgh_id, remote_port=5,
                            remote_disp=M.MACH_MSG_TYPE_MOVE_SEND), D.demo_null, 0)
    assert (r.msgh_id, r.remote_port, r.remote_disp) == (D.demo_null.reply_id, 5, 17)
    assert reply_send_timeout(r) == 0
    r.remote_disp = M.MACH_MSG_TYPE_MOVE_SEND_ONCE
    assert reply_send_timeout(r) is None
    assert is_send_error(0x10000004) and not is_send_error(0x10004003)
    assert is_rcv_error(0x10004003) and not is_rcv_error(0x10000003)
    assert isinstance(dm.demux, Demux)


# ---------------------------------------------------------------- multithread accounting

def test_thread_account_spawns_only_when_no_listener_is_left():
    a = ThreadAccount(max_threads=100)
    a.begin()
    assert a.on_request()  # master took a message: nobody listens -> spawn
    assert (a.totalthreads, a.nreqthreads) == (2, 1)
    assert a.on_request()  # the new thread took one too
    assert (a.totalthreads, a.nreqthreads, a.peak) == (3, 1, 3)
    a.on_reply()
    a.on_reply()
    assert a.nreqthreads == 3
    assert not a.on_request()  # two others still listen
    a.on_reply()
    # Idle timeouts: non-master threads leave until one listener would be left.
    assert a.on_timeout(master=False)
    assert a.on_timeout(master=False)
    assert (a.totalthreads, a.nreqthreads) == (1, 1)
    assert not a.on_timeout(master=False)  # the last listener stays
    assert a.on_timeout(master=True)  # master alone: the global timeout ends the server
    assert (a.totalthreads, a.nreqthreads, a.exited) == (0, 0, 3)


def test_master_keeps_serving_while_other_threads_exist():
    a = ThreadAccount()
    a.begin()
    assert a.on_request()
    a.on_reply()
    assert not a.on_timeout(master=True)
    assert a.totalthreads == 2


def test_thread_cap_is_a_bound():
    a = ThreadAccount(max_threads=3)
    a.begin()
    # Each receive happens on a listening thread: three threads take three messages.
    spawned = sum(a.on_request() for _ in range(3))
    assert spawned == 2 and a.totalthreads == 3 and a.peak == 3
    assert (a.capped, a.nreqthreads) == (1, 0)  # nobody listens until a reply is sent
    a.on_reply()
    assert not a.on_request()
    assert (a.capped, a.totalthreads) == (2, 3)


def test_thread_account_under_concurrency_matches_a_serial_count():
    a = ThreadAccount(max_threads=10_000)
    a.begin()
    a.nreqthreads = a.totalthreads = 1000  # a big pool: no spawns expected

    def work():
        for _ in range(2000):
            if a.on_request():
                a.spawn_failed()
            a.on_reply()

    ts = [threading.Thread(target=work) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert a.nreqthreads == 1000 and a.totalthreads == 1000


# ---------------------------------------------------------------- workers queue

def test_requests_for_an_owned_object_go_to_its_owner_in_order():
    q = WorkQueue(nworkers=2, capacity=10)
    for i in range(2):
        assert q.put("A", i)
    assert q.get(0) == ("A", 0)  # worker 0 owns A
    assert q.put("A", 2)  # queues behind A1, still in the shared queue
    assert q.put("B", 0)
    # Worker 1 finds A1 and A2 owned by worker 0, hands them over, serves B.
    assert q.get(1) == ("B", 0)
    assert q.stats["handed_over"] == 2
    assert q.get(1, timeout=0) is None
    q.done(1, "B")
    q.done(0, "A")
    assert q.get(0) == ("A", 1)
    q.done(0, "A")
    assert q.get(0) == ("A", 2)
    assert q.put("A", 3)  # owned, nothing of A in the shared queue: straight to owner
    assert list(q.local[0]) == [("A", 3)]
    q.done(0, "A")
    assert q.get(0) == ("A", 3)
    q.done(0, "A")
    assert q.owner == {} and q.held == {} and q.waiting == 0


def test_queue_is_bounded():
    q = WorkQueue(nworkers=1, capacity=2)
    assert q.put("A", 1) and q.put("B", 1)
    assert not q.put("C", 1, timeout=0.05)
    assert q.stats["put_blocked"] == 1
    assert q.get(0) == ("A", 1)
    assert q.put("C", 1, timeout=0)
    assert q.stats["max_waiting"] == 2


def test_close_wakes_everyone_and_returns_the_unserved():
    q = WorkQueue(nworkers=2, capacity=4)
    q.put("A", 1)
    q.put("A", 2)
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(1)))
    assert q.get(0) == ("A", 1)
    t.start()
    dropped = q.close()
    t.join(10)
    assert not t.is_alive()
    assert got == [None]
    assert dropped == [2]
    assert q.get(0) is None and not q.put("A", 3)


def test_workers_keep_per_object_order():
    nworkers, keys, per_key = 4, "ABCDEFGH", 60
    q = WorkQueue(nworkers, capacity=8)
    served = {k: [] for k in keys}
    active: dict[str, int] = {}
    lock = threading.Lock()
    overlap = [0]

    def worker(i):
        while True:
            got = q.get(i)
            if got is None:
                return
            key, n = got
            with lock:
                if active.get(key):
                    overlap[0] += 1  # two workers on one object: must never happen
                active[key] = 1
            if n % 7 == 0:
                threading.Event().wait(0.001)  # hold the object a little
            with lock:
                served[key].append(n)
                active[key] = 0
            q.done(i, key)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(nworkers)]
    for t in ts:
        t.start()
    rnd = random.Random(7)
    counters = {k: 0 for k in keys}
    for _ in range(len(keys) * per_key):
        k = rnd.choice([k for k in keys if counters[k] < per_key])
        assert q.put(k, counters[k], timeout=30)
        counters[k] += 1
    with q.cond:
        assert q.cond.wait_for(lambda: q.waiting == 0 and not q.held, 30)
    q.close()
    for t in ts:
        t.join(10)
    assert overlap[0] == 0
    for k in keys:
        assert served[k] == list(range(per_key)), k


def test_objects_really_run_in_parallel():
    q = WorkQueue(nworkers=2, capacity=4)
    a_running, b_running = threading.Event(), threading.Event()
    saw = []

    def worker(i):
        got = q.get(i)
        if got is None:
            return
        key, _ = got
        mine, other = (a_running, b_running) if key == "A" else (b_running, a_running)
        mine.set()
        saw.append(other.wait(20))  # the other object is served at the same time
        q.done(i, key)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    q.put("A", 0)
    q.put("B", 0)
    for t in ts:
        t.join(30)
    assert saw == [True, True]


def test_unordered_queue_lets_any_worker_take_any_request():
    q = WorkQueue(nworkers=2, capacity=4, ordered=False)
    q.put("A", 1)
    q.put("A", 2)
    assert q.get(0) == ("A", 1)
    assert q.get(1) == ("A", 2)  # the same object, served at the same time
    q.done(0, "A")
    q.done(1, "A")
    assert q.waiting == 0 and q.owner == {}
