"""Wire fuzzing of a running kernel (hypothesis).

A raw ZeroMQ DEALER talks to a real kernel process with malformed frames: random bytes,
valid msgpack of the wrong shape, wrong types, oversized fields, unknown operations,
forged port names, rights of the wrong kind, bad dispositions, too many frames, huge
descriptor lists, and messages to kernel ports with bad bodies.  Every case must get an
error: a K_RESULT with a non-zero code, a K_MSG whose body is an error RetCode, or a
K_DISCONNECT frame (after which the fuzzer says hello again).  After each run a task
connected through the ordinary runtime must still be served.

The wire rules are kernel/main.py ``handle()`` and protocol/message.py.
"""

from __future__ import annotations

import os
import uuid

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kernel.main import check_msg_header
from protocol import message as M
from protocol import mig
from protocol.defs import mach_port as P
from protocol.defs import machemu as X
from protocol.defs import netname as NS
from protocol.host_secret import MAX_SECRET_BYTES
from protocol.kern_return import MachMsgReturn as R
from protocol.kern_return import MigReturn
from protocol.runtime import TaskRuntime

pytestmark = pytest.mark.timeout(120)

SEND_DISPS = (17, 18, 19, 20, 21)
N_PER_TEST = 1300  # 8 tests: 10,400 cases


def fuzz_settings(n=N_PER_TEST):
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


class Fuzzer:
    """A raw DEALER that is a task of the kernel and checks the answer to each case."""

    def __init__(self, endpoint):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTING_ID, b"f" + uuid.uuid4().bytes)
        self.sock.connect(endpoint)
        self.seq = 0
        self.cases = 0
        self.disconnects = 0
        self.hello()

    def close(self):
        self.sock.close(linger=0)
        self.ctx.term()

    def next_seq(self):
        self.seq += 1
        return self.seq

    def recv(self, timeout_ms=10000):
        if not self.sock.poll(timeout_ms):
            raise AssertionError("no answer from the kernel")
        frames = self.sock.recv_multipart()
        return M.unpackb(frames[0]), frames[1:]

    def hello(self):
        seq = self.next_seq()
        self.sock.send_multipart([M.packb([M.OP_HELLO, 1, seq, os.getpid(), "fuzz", "task"]),
                                  b""])
        hdr, _ = self.recv()
        assert hdr[M.A_KIND] == M.K_HELLO and hdr[M.A_SEQ] == seq and hdr[M.A_CODE] == 0, hdr
        self.task_self, self.host, self.name_server = (
            hdr[M.A_TASK_SELF], hdr[M.A_HOST], hdr[M.A_NAME_SERVER])
        seq = self.next_seq()
        self.sock.send_multipart([M.packb([M.OP_REPLY_PORT, 1, seq])])
        hdr, _ = self.recv()
        assert hdr[M.A_KIND] == M.K_RESULT and hdr[M.A_SEQ] == seq and hdr[M.A_CODE] == 0, hdr
        self.reply = hdr[M.A_VALUE]

    @property
    def own_names(self):
        return {self.task_self, self.host, self.name_server, self.reply}

    def case(self, frames, seq=None, mig_codes=None):
        """Send one malformed case; assert an error answer.  Returns its kind."""
        self.cases += 1
        self.sock.send_multipart(frames, copy=True)
        hdr, rest = self.recv()
        kind = hdr[M.A_KIND]
        if kind == M.K_DISCONNECT:
            assert hdr[M.A_CODE] != 0, hdr
            self.disconnects += 1
            self.hello()
            return "disconnect"
        if seq is not None:
            assert hdr[M.A_SEQ] == seq, (hdr, seq)
        if kind == M.K_RESULT:
            assert hdr[M.A_CODE] != 0, f"malformed case accepted: {hdr}"
            return hdr[M.A_CODE]
        assert kind == M.K_MSG, hdr
        body = M.unpackb(rest[0])
        assert type(body) is list and len(body) == 1 and body[0] != 0, (hdr, body)
        if mig_codes is not None:
            assert body[0] in mig_codes, (hdr, body)
        return body[0]

    def msg_header(self, seq, option=M.MACH_SEND_MSG, send_timeout=-1, rcv=0, rcv_timeout=-1,
                   msgh_id=1000, remote=None, rdisp=19, local=0, ldisp=0, descs=()):
        return [M.OP_MSG, 1, seq, option, send_timeout, rcv, rcv_timeout, msgh_id,
                self.task_self if remote is None else remote, rdisp, local, ldisp, list(descs)]


def could_be_legit(frames, fz: Fuzzer) -> bool:
    """True if random frames happen to form a request a task may rightly make (these
    are skipped: the property is about malformed input)."""
    if len(frames) < 1 or len(frames) > M.MAX_FRAMES or len(frames[0]) > M.MAX_HEADER_BYTES:
        return False
    try:
        h = M.unpackb(frames[0])
    except Exception:
        return False
    if type(h) is not list or not h or type(h[M.H_OP]) is not int:
        return False
    op = h[M.H_OP]
    if op in (M.OP_HEARTBEAT, M.OP_BYE):
        return len(h) == 1
    if op in (M.OP_HELLO, M.OP_REPLY_PORT):
        return True  # too close to a valid request to call
    if op == M.OP_MSG:
        return (len(h) == M.H_DESCS + 1 and type(h[M.H_THREAD]) is int and type(h[M.H_SEQ]) is int
                and check_msg_header(h))
    return False


@pytest.fixture
def fuzz(kernel):
    fz = Fuzzer(kernel)
    victim = TaskRuntime(kernel, "victim")
    yield fz, victim
    # The kernel still serves a well-formed RPC from another task, and a message.
    n = P.mach_port_allocate(victim.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=victim)
    P.mach_port_insert_right(victim.task_self, n, (n, M.MACH_MSG_TYPE_MAKE_SEND), rt=victim)
    victim.send(M.Message(4242, n, M.MACH_MSG_TYPE_COPY_SEND), timeout=5)
    assert victim.receive(n, timeout=5).msgh_id == 4242
    info = X.machemu_kernel_info(victim.host, rt=victim)
    assert info["stats"].get("internal_errors", 0) == 0, info["stats"]
    assert kernel.proc.p.poll() is None
    print(f"\nfuzz: {fz.cases} cases, {fz.disconnects} disconnects, "
          f"kernel stats {info['stats']}")
    victim.close()
    fz.close()


# ---------------------------------------------------------------- strategies

small_ints = st.integers(-(2**63), 2**64 - 1)
junk_scalar = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=8),
                        st.binary(max_size=8), small_ints)
junk = st.recursive(junk_scalar, lambda s: st.lists(s, max_size=5) | st.dictionaries(
    st.text(max_size=4), s, max_size=4), max_leaves=12)


def test_random_bytes_and_shapes(fuzz):
    fz, _ = fuzz

    @fuzz_settings()
    @given(st.one_of(
        st.binary(max_size=200),
        junk.map(M.packb),
        st.lists(junk, min_size=1, max_size=14).map(M.packb),
        st.tuples(st.integers(-5, 300).filter(lambda o: o not in (1, 2, 3, 4, 5)),
                  st.lists(junk, max_size=12)).map(lambda t: M.packb([t[0], *t[1]])),
    ), st.lists(st.binary(max_size=64), max_size=3))
    def run(header, rest):
        frames = [header, *rest]
        assume(not could_be_legit(frames, fz))
        fz.case(frames)

    run()


def test_wrong_types_in_header_fields(fuzz):
    fz, victim = fuzz
    wrong = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False), st.text(max_size=4),
                      st.binary(max_size=4), st.lists(small_ints, max_size=2),
                      st.integers(2**64 - 2**20, 2**64 - 1), st.integers(-(2**63), -2))

    @fuzz_settings()
    @given(st.integers(1, 12), wrong, st.sampled_from(["msg", "hello", "reply_port"]))
    def run(field, value, op):
        seq = fz.next_seq()
        if op == "msg":
            h = fz.msg_header(seq)
        elif op == "hello":
            h = [M.OP_HELLO, 1, seq, os.getpid(), "fuzz", "task"]
        else:
            h = [M.OP_REPLY_PORT, 1, seq]
        field = field % len(h)
        if field == 0:
            field = 1
        h[field] = value
        assume(not could_be_legit([M.packb(h), b""], fz))
        fz.case([M.packb(h), M.packb([])], seq)

    run()


def test_out_of_range_and_oversized(fuzz):
    fz, _ = fuzz

    @fuzz_settings()
    @given(st.sampled_from(["option", "send_timeout", "rcv_timeout", "rcv", "msgh_id",
                            "remote", "rdisp", "local", "ldisp", "desc_name", "desc_disp",
                            "big_header", "big_body", "tid", "seq", "hello_name",
                            "hello_pid", "hello_secret", "odd_descs", "no_body"]),
           st.integers(0, 2**20))
    def run(what, k):
        seq = fz.next_seq()
        h = fz.msg_header(seq)
        body, extra = M.packb([]), []
        if what == "option":
            h[M.H_OPTION] = 2**32 + k
        elif what == "send_timeout":
            h[M.H_SEND_TIMEOUT] = M.MAX_TIMEOUT_MS + 1 + k if k % 2 else -2 - k
        elif what == "rcv_timeout":
            h[M.H_OPTION] = M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT
            h[M.H_RCV_TIMEOUT] = M.MAX_TIMEOUT_MS + 1 + k if k % 2 else -2 - k
        elif what == "rcv":
            h[M.H_RCV_NAME] = 2**32 + k if k % 2 else -1 - k
        elif what == "msgh_id":
            h[M.H_ID] = 2**31 + k if k % 2 else -(2**31) - 1 - k
        elif what == "remote":
            h[M.H_REMOTE] = 2**32 + k if k % 2 else -1 - k
        elif what == "rdisp":
            h[M.H_REMOTE_DISP] = 256 + k if k % 2 else -1 - k
        elif what == "local":
            h[M.H_LOCAL] = 2**32 + k
        elif what == "ldisp":
            h[M.H_LOCAL_DISP] = 256 + k
        elif what == "desc_name":
            h[M.H_DESCS] = [2**32 + k, 19]
        elif what == "desc_disp":
            h[M.H_DESCS] = [fz.task_self, 256 + k]
        elif what == "odd_descs":
            h[M.H_DESCS] = [fz.task_self] * (2 * (k % 10) + 1)
        elif what == "big_header":
            h[M.H_ID] = 1000
            h.append("x" * (M.MAX_HEADER_BYTES + k % 1000))
        elif what == "big_body":
            body = b"\x00" * (M.MAX_BODY_BYTES + 1 + k % 100)
        elif what == "tid":
            h[M.H_THREAD] = 0 if k % 2 else M.THREAD_MAX + 1 + k
        elif what == "seq":
            h[M.H_SEQ] = -1 - k
        elif what == "hello_name":
            h = [M.OP_HELLO, 1, seq, os.getpid(), "n" * (129 + k % 1000), "task"]
        elif what == "hello_pid":
            h = [M.OP_HELLO, 1, seq, 2**31 + 1 + k, "fuzz", "task"]
        elif what == "hello_secret":  # not bytes, or longer than any secret
            bad = (k, str(k), b"s" * (MAX_SECRET_BYTES + 1 + k % 100), None)[k % 4]
            h = [M.OP_HELLO, 1, seq, os.getpid(), "fuzz", "task", bad]
        elif what == "no_body":
            fz.case([M.packb(h)], seq)
            return
        fz.case([M.packb(h), body, *extra], seq)

    run()


def test_forged_names_and_wrong_rights(fuzz):
    fz, victim = fuzz
    # names valid in another task, and names valid nowhere
    vport = P.mach_port_allocate(victim.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=victim)
    foreign = [victim.task_self, victim.host, victim.name_server, vport]
    forged = st.one_of(st.sampled_from(foreign), st.integers(1, 2**32 - 2))

    @fuzz_settings()
    @given(st.sampled_from(["dest", "desc", "reply", "wrong_dest_kind", "wrong_desc_kind",
                            "wrong_reply_kind", "dead_dest", "receive_forged",
                            "bad_desc_disp"]),
           forged, st.sampled_from(SEND_DISPS), st.integers(0, 255), st.booleans())
    def run(what, name, disp, anydisp, rpc):
        assume(name not in fz.own_names)
        seq = fz.next_seq()
        option = M.MACH_SEND_MSG
        if rpc:  # send+receive on the reply port: the send must fail first
            option |= M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT
        h = fz.msg_header(seq, option=option, rcv=fz.reply, rcv_timeout=5000, msgh_id=3299)
        expect = None
        if what == "dest":
            h[M.H_REMOTE], h[M.H_REMOTE_DISP] = name, disp
            expect = R.MACH_SEND_INVALID_DEST
        elif what == "desc":
            h[M.H_DESCS] = [fz.task_self, 19, name, disp]
            expect = R.MACH_SEND_INVALID_RIGHT
        elif what == "reply":
            h[M.H_LOCAL], h[M.H_LOCAL_DISP] = name, disp
            expect = R.MACH_SEND_INVALID_REPLY
        elif what == "wrong_dest_kind":
            # task_self is a send right: no receive right to make rights from, and no
            # send-once right; the reply port is a receive right only.
            h[M.H_REMOTE], h[M.H_REMOTE_DISP] = [(fz.task_self, 18), (fz.task_self, 20), (fz.task_self, 21),
                          (fz.reply, 17), (fz.reply, 18), (fz.reply, 19)][anydisp % 6]
            expect = R.MACH_SEND_INVALID_DEST
        elif what == "wrong_desc_kind":
            h[M.H_DESCS] = [[(fz.task_self, 16), (fz.task_self, 18), (fz.task_self, 20),
                      (fz.task_self, 21), (fz.reply, 17), (fz.reply, 18),
                      (fz.reply, 19)][anydisp % 7]]
            h[M.H_DESCS] = list(h[M.H_DESCS][0])
            expect = R.MACH_SEND_INVALID_RIGHT
        elif what == "wrong_reply_kind":
            h[M.H_LOCAL], h[M.H_LOCAL_DISP] = [(fz.task_self, 18), (fz.task_self, 20), (fz.task_self, 21),
                            (fz.reply, 17), (fz.reply, 19)][anydisp % 5]
            expect = R.MACH_SEND_INVALID_REPLY
        elif what == "dead_dest":
            h[M.H_REMOTE], h[M.H_REMOTE_DISP] = (M.MACH_PORT_NULL, M.MACH_PORT_DEAD)[anydisp % 2], disp
            expect = R.MACH_SEND_INVALID_DEST
        elif what == "receive_forged":
            h = fz.msg_header(seq, option=M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT, rcv=name,
                              rcv_timeout=5000)
            expect = R.MACH_RCV_INVALID_NAME
        elif what == "bad_desc_disp":
            assume(anydisp not in M.DISPOSITIONS)
            h[M.H_DESCS] = [fz.task_self, anydisp]
            expect = R.MACH_SEND_INVALID_TYPE
        code = fz.case([M.packb(h), M.packb([])], seq)
        assert code == expect, (what, h, code)

    run()
    # nothing the fuzzer did touched the victim's rights
    assert P.mach_port_type(victim.task_self, vport, rt=victim) == M.MACH_PORT_TYPE_RECEIVE


def test_bad_dispositions_and_descriptor_lists(fuzz):
    fz, _ = fuzz

    @fuzz_settings()
    @given(st.integers(0, 255), st.integers(0, 2000), st.sampled_from(
        ["rdisp", "ldisp", "many_descs", "huge_descs", "desc_list_type"]))
    def run(d, count, what):
        seq = fz.next_seq()
        h = fz.msg_header(seq)
        if what == "rdisp":
            assume(d not in SEND_DISPS)
            h[M.H_REMOTE_DISP] = d
        elif what == "ldisp":
            assume(d not in SEND_DISPS)
            h[M.H_LOCAL], h[M.H_LOCAL_DISP] = fz.reply, d
        elif what == "many_descs":  # more than MAX_DESCRIPTORS
            n = M.MAX_DESCRIPTORS + 1 + count % 200
            h[M.H_DESCS] = [fz.task_self, 19] * n
        elif what == "huge_descs":  # so many the header itself is oversized
            h[M.H_DESCS] = [fz.task_self, 19] * (M.MAX_HEADER_BYTES + count)
        else:
            h[M.H_DESCS] = [{"a": 1}, "x", None, 1.5, b"x"][count % 5]
        fz.case([M.packb(h), M.packb([])], seq)

    run()


def test_too_many_frames_and_oversized_ool(fuzz):
    fz, _ = fuzz

    @fuzz_settings(N_PER_TEST - 10)
    @given(st.integers(M.MAX_FRAMES + 1, M.MAX_FRAMES + 40), st.integers(0, 64))
    def run(nframes, size):
        seq = fz.next_seq()
        h = fz.msg_header(seq)
        frames = [M.packb(h)] + [b"p" * size] * (nframes - 1)
        assert fz.case(frames, seq) == "disconnect"

    run()
    # one out-of-line frame over the limit (MAX_OOL_BYTES): refused, not carried
    big = b"\x01" * (M.MAX_OOL_BYTES + 1)
    for _ in range(10):
        seq = fz.next_seq()
        assert fz.case([M.packb(fz.msg_header(seq)), M.packb([]), big], seq) == \
            R.MACH_SEND_INVALID_HEADER


def _served_by(kotype):
    if kotype == "task":
        return [r for r in P.mach_port.routines.values()] + [X.mach_port_get_attributes]
    if kotype == "host":
        return [X.machemu_kernel_info, X.machemu_shutdown]
    return list(NS.netname.routines.values())


def test_kernel_ports_with_bad_bodies(fuzz):
    fz, _ = fuzz
    served = {k: _served_by(k) for k in ("task", "host", "netname")}
    all_ids = set(mig.REGISTRY)

    @fuzz_settings()
    @given(st.sampled_from(["task", "host", "netname"]), st.data(),
           st.one_of(st.binary(max_size=40), junk.map(M.packb),
                     st.lists(junk, max_size=6).map(M.packb)),
           st.lists(st.binary(max_size=32), max_size=2), st.booleans())
    def run(kotype, data, body, ool, unknown_id):
        dest = {"task": fz.task_self, "host": fz.host, "netname": fz.name_server}[kotype]
        if unknown_id:
            msgh_id = data.draw(st.integers(-(2**31), 2**31 - 1).filter(
                lambda i: i not in {r.msgh_id for r in served[kotype]}))
            expect, reply_id = MigReturn.MIG_BAD_ID, msgh_id + 100
        else:
            rt = data.draw(st.sampled_from(served[kotype]))
            # never a well-formed request (it would really run: think machemu_shutdown)
            assume(rt.decode_request(body, [], ool) is None)
            msgh_id, expect, reply_id = rt.msgh_id, MigReturn.MIG_BAD_ARGUMENTS, rt.reply_id
        seq = fz.next_seq()
        h = fz.msg_header(seq, option=M.MACH_SEND_MSG | M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT,
                          rcv=fz.reply, rcv_timeout=5000, msgh_id=msgh_id, remote=dest,
                          local=fz.reply, ldisp=21)
        fz.sock.send_multipart([M.packb(h), body, *ool])
        fz.cases += 1
        hdr, rest = fz.recv()
        assert hdr[M.A_KIND] == M.K_MSG and hdr[M.A_SEQ] == seq, hdr
        assert hdr[M.A_ID] == reply_id, (hdr, reply_id)
        assert M.unpackb(rest[0]) == [expect]
        assert msgh_id in all_ids or unknown_id

    run()


def test_not_a_task_and_mixed_sequences(fuzz, kernel):
    fz, _ = fuzz
    # a peer that never said hello is disconnected whatever it sends
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(kernel)
    try:
        for h in ([M.OP_MSG, 1, 1] + [0] * 10, [M.OP_HEARTBEAT], [M.OP_BYE], [M.OP_REPLY_PORT, 1, 1]):
            s.send_multipart([M.packb(h), b""])
            assert s.poll(10000)
            r = M.unpackb(s.recv_multipart()[0])
            assert r[M.A_KIND] == M.K_DISCONNECT and r[M.A_CODE] != 0
    finally:
        s.close(linger=0)
        ctx.term()

    # then interleavings of good traps and bad ones from the fuzzer task: good ones work
    @fuzz_settings()
    @given(st.lists(st.sampled_from(["good_receive", "bad_op", "bad_dest", "heartbeat_junk",
                                     "bye_junk", "ext"]), min_size=1, max_size=6))
    def run(steps):
        for step in steps:
            seq = fz.next_seq()
            if step == "good_receive":
                h = fz.msg_header(seq, option=M.MACH_RCV_MSG | M.MACH_RCV_TIMEOUT,
                                  rcv=fz.reply, rcv_timeout=0)
                fz.sock.send_multipart([M.packb(h), b""])
                fz.cases += 1
                hdr, _ = fz.recv()
                assert hdr[:4] == [M.K_RESULT, 1, seq, R.MACH_RCV_TIMED_OUT], hdr
            elif step == "bad_op":
                fz.case([M.packb([99, 1, seq])], seq)
            elif step == "bad_dest":
                assert fz.case([M.packb(fz.msg_header(seq, remote=fz.reply)), b"\x90"],
                               seq) == R.MACH_SEND_INVALID_DEST
            elif step == "heartbeat_junk":
                assert fz.case([M.packb([M.OP_HEARTBEAT, 1, seq])]) == "disconnect"
            elif step == "bye_junk":
                assert fz.case([M.packb([M.OP_BYE, "x"])]) == "disconnect"
            else:
                assert fz.case([msgpack.packb(msgpack.ExtType(5, b"xx"))]) == "disconnect"

    run()
