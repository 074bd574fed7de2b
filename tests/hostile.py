"""Hostile requests at a server, sent by an ordinary (unprivileged) task.

Shared by tests/integration/test_hostile_*.py.  ``Hostile`` walks every routine of every
subsystem in ``protocol.mig.REGISTRY`` at one port of a server: first one junk request per
routine (which routines the port serves: MIG_BAD_ID for the others), then, for each
routine served there, near-valid requests that differ from a well-formed one in exactly
one thing -- an edge value or a value of the wrong type in one argument, a missing or
extra field, a right of the wrong kind, a reply port of the wrong kind, out-of-line data
where none is expected.  Every case must get an answer within ``ANSWER_BOUND`` seconds: a
reply (whatever its code), a send error, or a send-once notification (the server dropped
the reply right).  A case with no reply to wait for (a simpleroutine, a reply port that
is not ours) is followed by a probe (an id no subsystem uses), which must be answered
MIG_BAD_ID: the server is still serving that port.

The well-formed request itself is never sent (think machemu_shutdown), nor a variant
that a server would take as valid for the routines in ``NEVER_VALID``.
"""

from __future__ import annotations

import collections
import time

import psutil

from protocol import message as M
from protocol import mig
from protocol.defs import fs as F
from protocol.defs import mach_port as P
from protocol.defs import notify as N
from protocol.kern_return import MachError, MigReturn

ANSWER_BOUND = 20.0  # seconds: a server's answer to one case
PROBE_ID = 9999  # used by no subsystem
RSS_BOUND = 128 << 20  # bytes a server may grow by over a whole run
SO, SEND, MAKE_SEND, RECV = (M.MACH_MSG_TYPE_MAKE_SEND_ONCE, M.MACH_MSG_TYPE_COPY_SEND,
                             M.MACH_MSG_TYPE_MAKE_SEND, M.MACH_MSG_TYPE_MOVE_RECEIVE)

# Valid even when mutated in one thing, and not to be done by a fuzzer: they would stop
# the kernel or make the fuzzer the default pager (privilege findings, tested elsewhere).
NEVER_VALID = {"machemu_shutdown", "vm_set_default_memory_manager"}

# Requests after which a port may be gone (in Mach only when the kernel sends them).
ENDS_PORT = {"memory_object_terminate", "mach_notify_no_senders", "mach_notify_port_destroyed"}

WRONG_TYPES = (None, "s", b"b", 1.5, [0], {"k": 0})
INT_EDGES = (0, -1, 2**31, 2**31 - 1, 2**32, 2**63, 2**63 - 1, 2**64 - 1, -(2**63))
WIRE_INTS = range(-(2**63), 2**64)  # what msgpack can carry at all


class Unanswered(AssertionError):
    """A case got no answer within the bound: the server is hung (or lost it)."""


def code_label(code) -> str:
    """A readable name for an answer: a Mach/MIG code, a Hurd errno, or the text given."""
    if isinstance(code, str):
        return code
    e = F.unix_errno(code)
    if e is not None:
        import errno

        return errno.errorcode.get(e, f"errno {e}")  # Hurd and Linux agree up to 34
    from lab.client import err_name

    return err_name(code)


def base_value(t: mig.FieldType):
    """A value the field's type admits (the starting point of each mutation)."""
    if isinstance(t, mig.Int):
        return max(t.lo, 0)
    if t is mig.boolean_t:
        return False
    if isinstance(t, mig.Bytes):
        return b""
    if isinstance(t, mig.Str):
        return "hostile"
    if isinstance(t, mig.Array):
        return []
    if isinstance(t, mig.Blob):
        return {}
    if isinstance(t, mig.OOL):
        return b"h" * 16
    raise TypeError(t)


def edge_values(t: mig.FieldType) -> list:
    """Edge values and values of the wrong type for one body field."""
    out: list = list(WRONG_TYPES)
    if isinstance(t, mig.Int):
        out += [v for v in (*INT_EDGES, t.lo, t.hi, t.lo - 1, t.hi + 1)
                if v != 1 and v in WIRE_INTS]
        out.append(True)  # a bool is not an int on the wire
    elif t is mig.boolean_t:
        out += [0, 1, 2**64 - 1]
    elif isinstance(t, mig.Str):
        out += ["", "x" * (t.max_len + 1), "x" * 200_000, "a\x00b", "../" * 50, "\udcff"]
        out = [v for v in out if v != "\udcff"]  # cannot be encoded: the stub refuses it
    elif isinstance(t, mig.Bytes):
        out += [b"", bytes(t.max_len + 1), bytes(200_000)]
    elif isinstance(t, mig.Array):
        out += [[-1], ["x"], [2**64 - 1], [0] * min(t.max_len + 1, 20_000)]
    # dedupe, keeping order (1 == True: compare with their types)
    seen, uniq = set(), []
    for v in out:
        k = (type(v), repr(v)[:64])
        if k not in seen:
            seen.add(k)
            uniq.append(v)
    return uniq


class Hostile:
    """One unprivileged task's hostile client (``rt``: its protocol.runtime.TaskRuntime).

    ``walk(label, port)`` runs every case at ``port`` (a send right in ``rt``'s space);
    ``sent``, ``answers`` (code label -> count) and ``per_port`` say what happened."""

    def __init__(self, rt):
        self.rt = rt
        self.reply = P.mach_port_allocate(rt.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=rt)
        # our own port: a send right to give away, a source of send-once rights
        self.mine = P.mach_port_allocate(rt.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=rt)
        P.mach_port_insert_right(rt.task_self, self.mine, (self.mine, MAKE_SEND), rt=rt)
        P.mach_port_set_qlimit(rt.task_self, self.mine, M.MACH_PORT_QLIMIT_MAX, rt=rt)
        # a dead name: a send right whose receive right is gone
        d = P.mach_port_allocate(rt.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=rt)
        P.mach_port_insert_right(rt.task_self, d, (d, MAKE_SEND), rt=rt)
        P.mach_port_mod_refs(rt.task_self, d, M.MACH_PORT_RIGHT_RECEIVE, -1, rt=rt)
        self.dead = d
        self.sent = 0
        self.answers: collections.Counter = collections.Counter()
        self.per_port: dict[str, collections.Counter] = {}
        self.served: dict[str, list[str]] = {}
        self._since_drain = 0
        self.current = ""  # the case being sent (for the report when one is unanswered)

    # ------------------------------------------------------------ rights

    def fresh_receive(self) -> int:
        return P.mach_port_allocate(self.rt.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=self.rt)

    def port_value(self, t: mig.Port, kind: str, dest: int):
        """A (name, disposition) descriptor of ``kind`` for a port field of type ``t``."""
        if kind == "base":
            d = t.disposition
            if d == RECV:
                return (self.fresh_receive(), RECV)
            if d == SO:
                return (self.mine, SO)
            if d == MAKE_SEND:
                return (self.mine, MAKE_SEND)
            return (self.mine, SEND)
        return {"send_once": lambda: (self.mine, SO),
                "receive": lambda: (self.fresh_receive(), RECV),
                "dead_name": lambda: (self.dead, SEND),
                "server_own": lambda: (dest, SEND),
                "null": lambda: (M.MACH_PORT_NULL, SEND),
                "make_send": lambda: (self.mine, MAKE_SEND)}[kind]()

    # ------------------------------------------------------------ one case

    def _wait(self, want_id: int, deadline: float, others: dict | None = None):
        """The code of the next reply with id ``want_id`` on our reply port; replies with
        other ids go to ``others`` (id -> code) or, without it, are counted as strays
        (late answers to earlier cases)."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Unanswered(f"no answer (id {want_id}) within {ANSWER_BOUND}s")
            try:
                m = self.rt.receive(self.reply, timeout=left)
            except MachError as e:
                if e.code == 0x10004003:  # MACH_RCV_TIMED_OUT
                    raise Unanswered(f"no answer (id {want_id}) within {ANSWER_BOUND}s") \
                        from None
                raise
            if m.msgh_id == N.MACH_NOTIFY_SEND_ONCE:
                return "send-once notification"
            code = _reply_code(m)
            if m.msgh_id != want_id:
                if others is not None:
                    others[m.msgh_id] = code
                else:
                    self.answers["stray reply"] += 1
                continue
            return code

    def probe(self, dest: int) -> dict:
        """An id nobody serves: the answer must be MIG_BAD_ID, within the bound.  Returns
        the replies that came before it (id -> code)."""
        others: dict = {}
        msg = M.Message(PROBE_ID, dest, SEND, self.reply, SO, body=M.packb([]))
        code, _ = self.rt.mach_msg(M.MACH_SEND_MSG, msg, send_timeout=ANSWER_BOUND)
        if code:
            self.answers[f"probe send: {code_label(code)}"] += 1
            return others
        got = self._wait(mig.bad_id_reply_id(PROBE_ID), time.monotonic() + ANSWER_BOUND,
                         others)
        if got not in (MigReturn.MIG_BAD_ID, "send-once notification"):
            raise AssertionError(f"probe answered {code_label(got)}")
        return others

    def send_case(self, label: str, dest: int, msgh_id: int, body: bytes, descs: list,
                  ool: list, reply=None, expect_reply: bool = True):
        """Send one case; return its answer's label (raises Unanswered)."""
        reply = (self.reply, SO) if reply is None else reply
        msg = M.Message(msgh_id, dest, SEND, reply[0], reply[1], descs=descs, body=body,
                        ool=ool)
        self.sent += 1
        code, _ = self.rt.mach_msg(M.MACH_SEND_MSG, msg, send_timeout=ANSWER_BOUND)
        if code:
            ans = "send " + code_label(code)
            # the kernel refused it: nothing reached the server, but it must still serve
        elif expect_reply and reply[0] == self.reply:
            ans = code_label(self._wait(mig.bad_id_reply_id(msgh_id),
                                        time.monotonic() + ANSWER_BOUND))
        else:
            before = self.probe(dest)
            rid = mig.bad_id_reply_id(msgh_id)
            ans = code_label(before[rid]) if rid in before else "no reply (one-way)"
        self.answers[ans] += 1
        self.per_port[label][ans] += 1
        self._since_drain += 1
        if self._since_drain >= 8:
            self.drain()
        return ans

    def drain(self):
        """Empty our own port (servers may send to the rights we gave them)."""
        self._since_drain = 0
        while True:
            code, _ = self.rt.mach_msg(M.MACH_RCV_MSG, None, self.mine, rcv_timeout=0)
            if code:
                return

    # ------------------------------------------------------------ cases

    def cases(self, r: mig.Routine, dest: int):
        """Near-valid requests for ``r``: (what, body bytes, descs, ool, reply, expect)."""
        flds = r.request
        vals = [None if f.type.where == "port" else base_value(f.type) for f in flds]
        port_kinds = ["base" for f in flds if f.type.where == "port"]
        port_types = [f.type for f in flds if f.type.where == "port"]

        def build(vals, kinds, extra_body=(), drop_body=False, extra_ool=(), drop_ool=False,
                  extra_desc=(), drop_desc=False):
            body = [v for f, v in zip(flds, vals) if f.type.where == "body"]
            ool = [v for f, v in zip(flds, vals) if f.type.where == "ool"]
            descs = [self.port_value(t, k, dest) for t, k in zip(port_types, kinds)]
            if drop_body and body:
                body = body[:-1]
            if drop_ool and ool:
                ool = ool[:-1]
            if drop_desc and descs:
                descs = descs[:-1]
            return (M.packb([*body, *extra_body]), [*descs, *extra_desc],
                    [*ool, *extra_ool])

        for i, f in enumerate(flds):
            if f.type.where == "body":
                for v in edge_values(f.type):
                    mv = list(vals)
                    mv[i] = v
                    yield (f"{f.name}={v!r:.40}", *build(mv, port_kinds))
            elif f.type.where == "ool":
                for v in (b"", bytes(M.MAX_OOL_BYTES)):
                    mv = list(vals)
                    mv[i] = v
                    yield (f"{f.name}=ool[{len(v)}]", *build(mv, port_kinds))
        for j, _t in enumerate(port_types):
            for kind in ("send_once", "receive", "dead_name", "server_own", "null",
                         "make_send"):
                kinds = list(port_kinds)
                kinds[j] = kind
                yield (f"port{j}={kind}", *build(vals, kinds))
        if any(f.type.where == "body" for f in flds):
            yield ("missing body field", *build(vals, port_kinds, drop_body=True))
        if any(f.type.where == "ool" for f in flds):
            yield ("missing ool", *build(vals, port_kinds, drop_ool=True))
        if port_types:
            yield ("missing port", *build(vals, port_kinds, drop_desc=True))
        yield ("extra body field", *build(vals, port_kinds, extra_body=(0,)))
        yield ("extra ool", *build(vals, port_kinds, extra_ool=(b"o" * 4096,)))
        yield ("extra port", *build(vals, port_kinds, extra_desc=((self.mine, SEND),)))
        yield ("body not a list", M.packb({"k": 1}), [], [])
        yield ("body not msgpack", b"\xc1\xc1", [], [])

    def reply_cases(self, r: mig.Routine, dest: int):
        """Reply ports of the wrong kind, on a request that is malformed (an extra body
        field) so that nothing is done: (what, reply (name, disposition), expect reply)."""
        yield "reply=send right", (self.reply, MAKE_SEND), True
        yield "reply=dead name", (self.dead, SEND), False
        yield "reply=server's own port", (dest, SEND), False
        yield "reply=receive right", (self.fresh_receive(), RECV), False
        yield "reply=none", (M.MACH_PORT_NULL, 0), False

    def _sendable(self, r: mig.Routine, body, descs, ool, never_valid=()) -> bool:
        """False for a variant the server would take as valid, of a NEVER_VALID routine
        (or one of ``never_valid``)."""
        if r.name not in NEVER_VALID and r.name not in never_valid:
            return True
        return r.decode_request(body, [d[0] for d in descs], ool) is None

    def discover(self, label: str, dest: int) -> list[mig.Routine]:
        """One junk request per routine of the registry: the routines ``dest`` serves
        (any answer but MIG_BAD_ID; for a one-way routine, silence before the probe)."""
        served = []
        for msgh_id in sorted(mig.REGISTRY):
            r = mig.REGISTRY[msgh_id]
            self.current = f"{label}: {r.name} junk body"
            ans = self.send_case(label, dest, msgh_id, M.packb("junk"), [], [],
                                 expect_reply=not r.simple)
            if ans != "MIG_BAD_ID":
                served.append(r)
        return served

    def walk(self, label: str, dest: int, limit: float = 240.0, never_valid=()) -> None:
        """Every case at ``dest`` (see the module docstring), within ``limit`` seconds;
        the routines named in ``never_valid`` get only variants that are malformed."""
        self.per_port.setdefault(label, collections.Counter())
        deadline = time.monotonic() + limit
        served = self.discover(label, dest)
        self.served[label] = [r.name for r in served]
        # Last what may (rightly or not) end the port: forged notifications, terminate.
        for r in sorted(served, key=lambda r: (r.name in ENDS_PORT,
                                               r.subsystem.name == "notify", r.msgh_id)):
            for what, body, descs, ool in self.cases(r, dest):
                if not self._sendable(r, body, descs, ool, never_valid):
                    continue
                self.current = f"{label}: {r.name} {what}"
                self.send_case(label, dest, r.msgh_id, body, descs, ool,
                               expect_reply=not r.simple)
            bad = M.packb([base_value(f.type) for f in r.request if f.type.where == "body"]
                          + [0])
            for what, reply, expect in self.reply_cases(r, dest):
                self.current = f"{label}: {r.name} {what}"
                self.send_case(label, dest, r.msgh_id, bad, [], [], reply=reply,
                               expect_reply=expect and not r.simple)
            if time.monotonic() > deadline:
                raise AssertionError(f"{label}: walk over its {limit}s budget at {r.name}")
        self.drain()
        self.current = ""

    def report(self, server: str, alive: bool, rss0: int, rss1: int, legit: str) -> str:
        """The summary line the test prints."""
        lines = [f"hostile {server}: {self.sent} requests; server alive: {alive}; "
                 f"RSS {rss0 >> 20} MiB -> {rss1 >> 20} MiB; legitimate client: {legit}"]
        if self.current:
            lines.append(f"  stopped at: {self.current}")
        for label, c in self.per_port.items():
            lines.append(f"  {label}: serves {len(self.served.get(label, []))} routines; "
                         + ", ".join(f"{k} {v}" for k, v in c.most_common()))
        return "\n".join(lines)


def _reply_code(m: M.Message):
    """A reply's RetCode (its body's first element), or "malformed reply"."""
    try:
        body = M.unpackb(m.body)
    except Exception:
        return "malformed reply"
    return body[0] if type(body) is list and body and type(body[0]) is int \
        else "malformed reply"


def legit_result(fn, *args) -> tuple[bool, str]:
    """Run the legitimate client ``fn(*args)`` (which returns a description and raises
    when it is not served right): (served, what happened)."""
    try:
        return True, fn(*args)
    except Exception as e:  # noqa: BLE001 - reported, and the test fails on it
        return False, f"FAILED: {type(e).__name__}: {e}"


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def pattern(n: int, seed: int = 0) -> bytes:
    """n bytes that differ at every offset modulo 251 (no page-size period)."""
    base = bytes((i * 31 + seed) % 251 for i in range(251))
    return (base * (n // 251 + 1))[:n]
