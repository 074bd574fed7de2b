"""kernel.ipc_trace in-process: the ring's bound, the filters, replies matched to their
requests, who may trace, and the session ending with its tracer; through a real
``kernel.main.Kernel`` fed wire frames (tests.unit.test_kernel_ipc's RecordingKernel),
no processes."""

from __future__ import annotations

import pytest

import tests.unit.test_host_priv as HP
from kernel import ipc_trace as T
from protocol import message as M
from protocol.defs import demo as D
from protocol.defs import fs as FS
from protocol.defs import mach_port as P
from protocol.defs import machemu as X
from protocol.defs import notify as N
from protocol.kern_return import KernReturn as K
from protocol.kern_return import MachMsgReturn as R
from protocol.kern_return import MigReturn
from tests.unit.test_host_priv import SECRET, HelloTask
from tests.unit.test_kernel_ipc import MAKE_SEND, MAKE_SO, MOVE_SO, got, msg

pytestmark = pytest.mark.timeout(30)


k = HP.k  # the in-process kernel with an owner's secret (a fixture)


# ---------------------------------------------------------------- pure helpers

@pytest.mark.parametrize("vals", [[0], [0, 4096, "x"], [-303], [-1], [127], [128],
                                  [0x10000003], [0x40000002, 1], [2**40], [-(2**31)],
                                  list(range(20)), list(range(70000))])
def test_mig_retcode_reads_the_first_element_as_msgpack_does(vals):
    assert T.mig_retcode(M.packb(vals)) == vals[0]


@pytest.mark.parametrize("body", [b"", b"\x90", M.packb({"a": 1}), M.packb(["s"]),
                                  M.packb([1.5]), b"\x91", b"\x91\xce\x00"])
def test_mig_retcode_of_a_body_not_starting_with_an_int_is_none(body):
    assert T.mig_retcode(body) is None


def test_routine_names_come_from_the_registry():
    assert T.routine_name(FS.io_write.msgh_id) == "io_write"
    assert T.routine_name(FS.io_write.reply_id) == "io_write_reply"
    assert T.routine_name(N.mach_notify_no_senders.msgh_id) == "mach_notify_no_senders"
    # a simpleroutine has no reply; an id nobody defines has no name
    assert T.routine_name(D.demo_send.msgh_id + 100) is None
    assert T.routine_name(999_999) is None


def test_filter_admits_only_what_every_given_key_matches():
    f = T.TraceFilter(tasks=[3], ids=[(21000, 21099)])
    assert f.admits(3, 9, 1, 21000) and f.admits(9, 3, 1, 21099)
    assert not f.admits(9, 8, 1, 21000)  # neither end is task 3
    assert not f.admits(3, 9, 1, 21100)  # out of the range
    assert T.TraceFilter(ports=[5]).admits(1, 2, 5, 7)
    assert not T.TraceFilter(ports=[5]).admits(1, 2, 6, 7)
    assert T.TraceFilter().admits(0, 0, 0, 0)


@pytest.mark.parametrize("blob", [[], {"bogus": 1}, {"ring": 1}, {"ring": T.RING_MAX + 1},
                                  {"ring": "big"}, {"tasks": 3}, {"tasks": ["a"]},
                                  {"ids": [[5, 1]]}, {"ids": [[1]]}, {"ports": [1.5]},
                                  {"tasks": list(range(T.FILTER_MAX + 1))}])
def test_malformed_filters_are_refused(k, blob):
    with pytest.raises(T.MachError) as e:
        T.parse_filter(k, blob)
    assert e.value.code == K.KERN_INVALID_ARGUMENT


# ---------------------------------------------------------------- through the kernel

def start(tracer, filt=None, code=0):
    c, vals = tracer.call(X.machemu_trace_start, tracer.host_priv, filt or {})
    assert c == code, hex(c)
    return vals


def read(tracer, session, since=0, nmax=0):
    """(records as dicts, next seq, dropped)."""
    rows, nxt, dropped = tracer.ok(X.machemu_trace_read, since, nmax, dest=session)
    return [dict(zip(T.FIELDS, r)) for r in rows], nxt, dropped


def server_port(task):
    port = task.port()
    task.ok(P.mach_port_insert_right, port, (port, MAKE_SEND))
    return port


def server_port_in(owner, port, other):
    """A send right to ``owner``'s receive right ``port`` in ``other`` (via netname)."""
    from protocol.defs import netname as NS

    owner.ok(P.mach_port_insert_right, port, (port, MAKE_SEND))
    key = f"p{port}"
    owner.ok(NS.netname_check_in, key, port, port, dest=owner.name_server)
    return other.ok(NS.netname_look_up, "", key, dest=other.name_server)


def client_server(k):
    """A tracer (host_priv), a client and a server task, the server's receive right and
    the client's send right to it."""
    tracer = HelloTask(k, "tracer", SECRET)
    cl, srv = HelloTask(k, "client"), HelloTask(k, "server")
    sport = srv.port()
    return tracer, cl, srv, sport, server_port_in(srv, sport, cl)


def rpc_through(client, server, sport, to_server, routine, body=b"\x90", ool=(),
                reply_vals=()):
    """``client`` calls ``routine`` on ``server``'s port by hand: request with a reply
    port, the server receives it and answers on the send-once right."""
    m = M.Message(routine.msgh_id, to_server, M.MACH_MSG_TYPE_COPY_SEND,
                  client.reply_port(), MAKE_SO, [], body, list(ool))
    assert client.send(m) == 0
    hdr = got(server.receive(sport), routine.msgh_id)
    rbody, _, rool = routine.encode_reply(0, reply_vals)
    reply = M.Message(routine.reply_id, hdr[M.A_REMOTE], MOVE_SO, 0, 0, [], rbody, rool)
    assert server.send(reply) == 0
    got(client.receive(client.reply_port()), routine.reply_id)


def test_only_host_priv_may_trace_and_nothing_is_recorded_before(k):
    plain = HelloTask(k, "plain")
    assert k.trace is None
    assert plain.err(X.machemu_trace_start, {}, dest=plain.host) == K.KERN_INVALID_HOST
    assert plain.err(X.machemu_trace_sessions, dest=plain.host) == K.KERN_INVALID_HOST
    assert k.trace is None and k.stats["host_priv_denied"] == 2
    owner = HelloTask(k, "owner", SECRET)
    session, info = start(owner)
    assert info["fields"] == list(T.FIELDS) and info["tracer"] == owner.task_id
    assert k.trace is not None and len(k.trace.sessions) == 1
    assert owner.ok(X.machemu_trace_sessions, dest=owner.host_priv)[0]["tracer"] == \
        owner.task_id


def test_a_user_rpc_is_recorded_with_its_reply_matched(k):
    tracer, cl, srv, sport, to_srv = client_server(k)
    session, _ = start(tracer)
    page = b"p" * 4096
    body, _, ool = FS.io_write.encode_request([page, 8192])
    rpc_through(cl, srv, sport, to_srv, FS.io_write, body, ool, reply_vals=(4096,))
    recs, nxt, dropped = read(tracer, session)
    assert dropped == 0 and nxt == len(recs)
    req = next(r for r in recs if r["routine"] == "io_write")
    rep = next(r for r in recs if r["req_seq"] == req["seq"])
    assert req["kind"] == "request" and req["sender"] == "client"
    assert req["receiver"] == "server" and req["receiver_id"] == srv.task_id
    assert req["dest_name"] == to_srv and req["recv_name"] == sport
    assert req["ool_bytes"] == 4096 and req["ool_pages"] == 1
    assert req["inline"] == len(body) and req["reply_port"] != 0
    assert rep["kind"] == "reply" and rep["routine"] == "io_write_reply"
    assert rep["code"] == 0 and rep["sender"] == "server" and rep["receiver"] == "client"
    assert 0 <= rep["latency"] < 5 and rep["t"] >= req["t"]
    assert M.unpackb(rep["body"]) == [0, 4096]
    # the tracer's own calls (start, this read) are not in its trace
    assert not [r for r in recs if tracer.task_id in (r["sender_id"], r["receiver_id"])]


def test_kernel_rpcs_and_kernel_messages_are_recorded(k):
    tracer = HelloTask(k, "tracer", SECRET)
    a = HelloTask(k, "a")
    session, _ = start(tracer)
    port = a.port()
    assert a.err(P.mach_port_type, 0x7FFFFF) == K.KERN_INVALID_NAME
    assert a.send(msg(0x7FFFFE)) == R.MACH_SEND_INVALID_DEST
    recs, _, _ = read(tracer, session)
    alloc = next(r for r in recs if r["routine"] == "mach_port_allocate")
    assert alloc["receiver"] == "kernel" and alloc["label"] == "task a"
    reply = next(r for r in recs if r["req_seq"] == alloc["seq"])
    assert reply["sender"] == "kernel" and reply["code"] == 0
    assert M.unpackb(reply["body"]) == [0, port]
    bad = next(r for r in recs if r["routine"] == "mach_port_type")
    assert next(r for r in recs if r["req_seq"] == bad["seq"])["code"] == \
        K.KERN_INVALID_NAME
    refused = next(r for r in recs if r["kind"] == "refused")
    assert refused["code"] == R.MACH_SEND_INVALID_DEST and refused["dest_name"] == 0x7FFFFE


def test_the_ring_keeps_the_newest_and_counts_what_was_lost(k):
    tracer = HelloTask(k, "tracer", SECRET)
    a = HelloTask(k, "a")
    port = server_port(a)
    session, info = start(tracer, {"ring": 16, "ports": [a.space.lookup(port).object.id]})
    assert info["ring"] == 16
    for _ in range(40):
        assert a.send(msg(port, msgh_id=D.demo_send.msgh_id)) == 0
        assert got(a.receive(port))
    assert len(k.trace.sessions[0].ring) == 16
    recs, nxt, dropped = read(tracer, session)
    assert [r["seq"] for r in recs] == list(range(24, 40)) and nxt == 40 and dropped == 24
    assert all(r["kind"] == "oneway" and r["routine"] == "demo_send" for r in recs)
    recs, nxt, dropped = read(tracer, session, since=nxt)
    assert recs == [] and nxt == 40 and dropped == 0
    assert read(tracer, session, since=30, nmax=3)[0][0]["seq"] == 30


def test_filters_by_task_port_and_id_range(k):
    tracer = HelloTask(k, "tracer", SECRET)
    a, b = HelloTask(k, "a"), HelloTask(k, "b")
    pa, pb = server_port(a), server_port(b)
    s_task, _ = start(tracer, {"tasks": [b.task_id]})
    s_ids, _ = start(tracer, {"ids": [[D.demo_null.msgh_id, D.demo_echo.msgh_id]]})
    s_port, _ = start(tracer, {"port_names": [[a.task_id, pa]]})
    for task, port, mid in ((a, pa, D.demo_null.msgh_id), (b, pb, D.demo_sleep.msgh_id),
                            (a, pa, D.demo_echo.msgh_id), (b, pb, D.demo_send.msgh_id)):
        assert task.send(msg(port, msgh_id=mid)) == 0
        assert got(task.receive(port))
    by_task = read(tracer, s_task)[0]
    assert by_task and all(b.task_id in (r["sender_id"], r["receiver_id"]) for r in by_task)
    assert {r["routine"] for r in by_task} >= {"demo_sleep", "demo_send"}
    assert {r["routine"] for r in read(tracer, s_ids)[0]} == {"demo_null", "demo_echo"}
    by_port = read(tracer, s_port)[0]
    assert [r["routine"] for r in by_port] == ["demo_null", "demo_echo"]
    assert all(r["recv_name"] == pa for r in by_port)
    # a port name that is not in the task's space, or a task that is not there
    assert start(tracer, {"port_names": [[a.task_id, 0x7FFFF]]},
                 code=K.KERN_INVALID_NAME) is None
    assert start(tracer, {"port_names": [[999_999, pa]]}, code=K.KERN_INVALID_TASK) is None


def test_a_reply_is_recorded_when_its_request_was_even_outside_the_filter(k):
    tracer, cl, srv, sport, to_srv = client_server(k)
    session, _ = start(tracer, {"ids": [[D.demo_null.msgh_id, D.demo_null.msgh_id]]})
    rpc_through(cl, srv, sport, to_srv, D.demo_null)
    recs = read(tracer, session)[0]
    assert [r["kind"] for r in recs] == ["request", "reply"]
    assert recs[1]["msgh_id"] == D.demo_null.reply_id and recs[1]["req_seq"] == recs[0]["seq"]


def test_a_server_dying_answers_the_request_with_a_send_once_notification(k):
    tracer, cl, srv, sport, to_srv = client_server(k)
    session, _ = start(tracer)
    m = M.Message(D.demo_null.msgh_id, to_srv, M.MACH_MSG_TYPE_COPY_SEND, cl.reply_port(),
                  MAKE_SO, [], b"\x90", [])
    assert cl.send(m) == 0
    k.task_destroy(srv.task, "test: server dies")
    recs = read(tracer, session)[0]
    req = next(r for r in recs if r["routine"] == "demo_null")
    died = next(r for r in recs if r["req_seq"] == req["seq"])
    assert died["msgh_id"] == N.MACH_NOTIFY_SEND_ONCE and died["sender"] == "kernel"


def test_pending_requests_are_bounded(k, monkeypatch):
    monkeypatch.setattr(T, "PENDING_MAX", 4)
    tracer = HelloTask(k, "tracer", SECRET)
    a = HelloTask(k, "a")
    port = server_port(a)
    a.ok(P.mach_port_set_qlimit, port, M.MACH_PORT_QLIMIT_MAX)
    session, _ = start(tracer, {"ids": [[D.demo_null.msgh_id, D.demo_null.msgh_id]]})
    for _ in range(10):  # requests with reply ports nobody answers
        r = a.port()
        m = M.Message(D.demo_null.msgh_id, port, M.MACH_MSG_TYPE_COPY_SEND, r, MAKE_SO,
                      [], b"\x90", [])
        assert a.send(m) == 0
    s = k.trace.sessions[0]
    assert len(s.pending) == 4 and s.unmatched == 6
    assert tracer.ok(X.machemu_trace_sessions, dest=tracer.host_priv)[0]["unmatched"] == 6
    assert read(tracer, session)[0]


def test_stop_ends_the_session_and_its_port(k):
    tracer = HelloTask(k, "tracer", SECRET)
    session, _ = start(tracer)
    totals = tracer.ok(X.machemu_trace_stop, dest=session)
    assert totals["tracer"] == tracer.task_id and k.trace is None
    code, _ = tracer.call(X.machemu_trace_read, session, 0, 0)
    assert code == R.MACH_SEND_INVALID_DEST  # the session's port is dead
    assert tracer.ok(X.machemu_trace_sessions, dest=tracer.host_priv) == []


def test_the_tracer_dying_ends_its_session_by_no_senders(k):
    tracer = HelloTask(k, "tracer", SECRET)
    other = HelloTask(k, "other", SECRET)
    start(tracer)
    s_other, _ = start(other)
    assert len(k.trace.sessions) == 2
    k.task_destroy(tracer.task, "test: tracer killed")
    assert [s.tracer for s in k.trace.sessions] == [other.task_id]
    other.ok(X.machemu_trace_stop, dest=s_other)
    assert k.trace is None  # back to one attribute test per message


def test_a_forged_no_senders_notification_does_not_end_a_session(k):
    tracer = HelloTask(k, "tracer", SECRET)
    session, _ = start(tracer)
    body, _, _ = N.mach_notify_no_senders.encode_request([1])
    forged = M.Message(N.mach_notify_no_senders.msgh_id, session, M.MACH_MSG_TYPE_COPY_SEND,
                       0, 0, [], body, [])
    assert tracer.send(forged) == 0
    assert k.trace is not None and k.trace.sessions[0].active
    assert read(tracer, session)[1] >= 0


def test_sessions_are_bounded(k):
    owner = HelloTask(k, "owner", SECRET)
    for _ in range(T.MAX_SESSIONS):
        start(owner)
    assert start(owner, code=K.KERN_RESOURCE_SHORTAGE) is None
    assert len(k.trace.sessions) == T.MAX_SESSIONS


def test_reads_are_bounded_and_a_bad_since_is_refused(k):
    tracer = HelloTask(k, "tracer", SECRET)
    a = HelloTask(k, "a")
    port = server_port(a)
    session, _ = start(tracer)
    for _ in range(T.READ_MAX + 10):
        assert a.send(msg(port, msgh_id=D.demo_send.msgh_id)) == 0
        got(a.receive(port))
    recs, nxt, _ = read(tracer, session)
    assert len(recs) == T.READ_MAX and nxt == T.READ_MAX
    assert len(read(tracer, session, since=nxt)[0]) == 10
    assert tracer.call(X.machemu_trace_read, session, -1, 0)[0] == K.KERN_INVALID_VALUE
    assert tracer.call(X.machemu_trace_read, session, "x", 0)[0] == \
        MigReturn.MIG_BAD_ARGUMENTS


def test_tracing_off_leaves_the_message_path_untouched(k, monkeypatch):
    """With no session ``Kernel.trace`` is None and no ipc_trace code runs per message;
    with one it does, and after the last ends it no longer does."""
    calls = []
    record = T.IPCTrace.record
    monkeypatch.setattr(T.IPCTrace, "record", lambda self, *a: calls.append(a) or
                        record(self, *a))
    owner = HelloTask(k, "owner", SECRET)
    a = HelloTask(k, "a")
    port = server_port(a)

    def traffic():
        assert a.send(msg(port)) == 0 and got(a.receive(port))

    traffic()
    assert calls == [] and k.trace is None
    session, _ = start(owner)
    traffic()
    assert calls
    owner.ok(X.machemu_trace_stop, dest=session)
    n = len(calls)
    traffic()
    assert len(calls) == n and k.trace is None
