"""The kernel's message trace (what the Hurd's utils/rpctrace shows of one task, for the
whole system): while a session is open, every message routed through the kernel that its
filter admits is recorded into a bounded ring, its reply matched to it.

GNU Mach has no such facility: rpctrace interposes itself on a task's ports.  Here the
kernel routes every message, so it records them where it routes them: mach_msg_trap
(a task's send, ``record`` after copyin, ``refused`` when the copyin fails) and
Kernel.kernel_send (mach_msg_send_from_kernel: replies of kernel routines, the
memory_object_* messages, notifications).  While nobody traces, ``Kernel.trace`` is
None and each hook costs that one attribute test.

A session is a kernel port (kotype "trace") whose send right the tracer gets from
machemu_trace_start on host_priv, as device_open hands out a device port: the kernel
asks for a no-senders notification on it (GNU Mach device/ds_routines.c device_open:
``ipc_port_nsrequest(device->port, 1, notify, &notify)``) and serves that notification
itself (kern/ipc_kobject.c ipc_kobject_notify).  When the tracer dies, its rights are
released, the notification comes and the session ends: a dead tool does not leave
tracing on.
"""

from __future__ import annotations

import itertools
import time
from collections import deque

import structlog

import protocol.defs  # noqa: F401  every subsystem registered: names for every id
from kernel.ipc_port import (
    KERNEL,
    IPCPort,
    ipc_port_destroy,
    ipc_port_make_send,
    ipc_port_make_sonce,
)
from kernel.ipc_right import PORT_SEND
from protocol import message as M
from protocol.defs import machemu as X
from protocol.defs import notify as N
from protocol.kern_return import KernReturn, MachError
from protocol.mig import REGISTRY, Demux
from protocol.vm_param import PAGE_SIZE

log = structlog.get_logger("kernel.trace")

RING_DEFAULT = 16384      # records a session keeps unless its filter says
RING_MIN, RING_MAX = 16, 262144
MAX_SESSIONS = 4
PENDING_MAX = 4096        # requests awaiting their reply, per session (oldest forgotten)
BODY_PREFIX = 64          # bytes of each body kept, for the tool to show arguments
READ_MAX = 512            # records per machemu_trace_read reply (well under MAX_BODY_BYTES)
FILTER_MAX = 64           # entries per filter key

# A record, in this order (what machemu_trace_read's rows hold).
FIELDS = ("seq", "t", "sender_id", "sender", "thread", "port", "dest_name", "receiver_id",
          "receiver", "recv_name", "label", "msgh_id", "routine", "kind", "code", "inline",
          "ool_bytes", "ool_pages", "ports", "reply_port", "req_seq", "latency", "body")
# kinds: a request awaiting a reply, a message with no reply port, a reply (req_seq set
# when its request was recorded), a send the kernel refused at copyin (code set).
REQUEST, ONEWAY, REPLY, REFUSED = "request", "oneway", "reply", "refused"

_NO_RECEIVER = -1  # receiver_id of a port whose receive right is in transit


def _reply_ids() -> frozenset:
    return frozenset(rt.reply_id for rt in REGISTRY.values() if not rt.simple)


REPLY_IDS = _reply_ids()


def routine_name(msgh_id: int) -> str | None:
    """The routine a message id belongs to ("io_write", "io_write_reply" for its reply,
    MIG's name for a reply routine), None for an id no subsystem defines."""
    rt = REGISTRY.get(msgh_id)
    if rt is not None:
        return rt.name
    if msgh_id in REPLY_IDS:
        return REGISTRY[msgh_id - 100].name + "_reply"
    return None


def mig_retcode(body) -> int | None:
    """The RetCode of a MIG reply body (the first element of its msgpack array), read
    without decoding the rest; None if the body does not start like one."""
    n = len(body)
    if n < 2:
        return None
    b = body[0]
    if 0x91 <= b <= 0x9F:
        i = 1
    elif b == 0xDC:
        i = 3
    elif b == 0xDD:
        i = 5
    else:
        return None
    if i >= n:
        return None
    c = body[i]
    if c <= 0x7F:
        return c
    if c >= 0xE0:
        return c - 0x100
    width = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}.get(c)
    if width is None or i + 1 + width > n:
        return None
    return int.from_bytes(body[i + 1:i + 1 + width], "big", signed=c >= 0xD0)


class TraceFilter:
    """What a session records: messages whose sender or receiver is one of ``tasks``,
    whose destination is one of ``ports``, whose msgh_id lies in one of ``ids`` (each an
    inclusive (lo, hi)); None admits all.  Every key given must match."""

    __slots__ = ("tasks", "ports", "ids")

    def __init__(self, tasks=None, ports=None, ids=None):
        self.tasks = frozenset(tasks) if tasks is not None else None
        self.ports = frozenset(ports) if ports is not None else None
        self.ids = tuple(ids) if ids is not None else None

    def admits(self, sender_id: int, receiver_id: int, port_id: int, msgh_id: int) -> bool:
        tasks = self.tasks
        if tasks is not None and sender_id not in tasks and receiver_id not in tasks:
            return False
        if self.ports is not None and port_id not in self.ports:
            return False
        if self.ids is not None:
            for lo, hi in self.ids:
                if lo <= msgh_id <= hi:
                    return True
            return False
        return True

    def describe(self) -> dict:
        return {"tasks": sorted(self.tasks) if self.tasks is not None else None,
                "ports": sorted(self.ports) if self.ports is not None else None,
                "ids": [list(r) for r in self.ids] if self.ids is not None else None}


def _int_list(v, what, pairs=False):
    if type(v) is not list or len(v) > FILTER_MAX:
        raise MachError(KernReturn.KERN_INVALID_ARGUMENT, f"trace filter {what}")
    for x in v:
        ok = (type(x) is list and len(x) == 2 and all(type(y) is int for y in x)
              if pairs else type(x) is int)
        if not ok:
            raise MachError(KernReturn.KERN_INVALID_ARGUMENT, f"trace filter {what}")
    return v


def parse_filter(k, blob) -> tuple[TraceFilter, int]:
    """machemu_trace_start's filter: (TraceFilter, ring size).  ``port_names`` are
    [task id, name] pairs resolved in that task's space now.  Raises MachError:
    KERN_INVALID_ARGUMENT for a malformed filter, KERN_INVALID_TASK / KERN_INVALID_NAME
    for a port name that is not there."""
    if blob is None:
        blob = {}
    if type(blob) is not dict or set(blob) - {"tasks", "ports", "port_names", "ids", "ring"}:
        raise MachError(KernReturn.KERN_INVALID_ARGUMENT, "trace filter")
    ring = blob.get("ring", RING_DEFAULT)
    if type(ring) is not int or not RING_MIN <= ring <= RING_MAX:
        raise MachError(KernReturn.KERN_INVALID_ARGUMENT, "trace ring size")
    tasks = blob.get("tasks")
    if tasks is not None:
        tasks = _int_list(tasks, "tasks")
    ports = blob.get("ports")
    if ports is not None:
        ports = list(_int_list(ports, "ports"))
    names = blob.get("port_names")
    if names is not None:
        by_id = {t.id: t for t in k.tasks.values()}
        ports = ports or []
        for tid, name in _int_list(names, "port_names", pairs=True):
            t = by_id.get(tid)
            if t is None:
                raise MachError(KernReturn.KERN_INVALID_TASK, f"trace port of task {tid}")
            e = t.space.table.get(name)
            if e is None or not isinstance(e.object, IPCPort):
                raise MachError(KernReturn.KERN_INVALID_NAME, f"trace port {name:#x}")
            ports.append(e.object.id)
    ids = blob.get("ids")
    if ids is not None:
        ids = [tuple(r) for r in _int_list(ids, "ids", pairs=True)]
        if any(lo > hi for lo, hi in ids):
            raise MachError(KernReturn.KERN_INVALID_ARGUMENT, "trace filter ids")
    return TraceFilter(tasks, ports, ids), ring


class TraceSession:
    """One tracer's ring (a deque of record tuples in FIELDS order, oldest overwritten),
    its filter, and its requests awaiting replies (reply port id -> (seq, time, id))."""

    def __init__(self, port: IPCPort, tracer, filt: TraceFilter, ring: int):
        self.port = port
        self.tracer = tracer.id
        self.tracer_name = tracer.name
        self.filter = filt
        self.ring: deque = deque(maxlen=ring)
        self.seq = 0               # the next record's
        self.pending: dict = {}
        self.unmatched = 0         # requests forgotten with PENDING_MAX outstanding
        self.t0 = time.monotonic()
        self.epoch = time.time()
        self.active = True

    def add(self, now, sender_id, sender, tid, port, dest_name, receiver_id, receiver,
            kmsg, match):
        """Record ``kmsg`` (its reply matched to ``match``, a pending request, if any)."""
        seq = self.seq
        self.seq = seq + 1
        mid = kmsg.msgh_id
        reply = kmsg.reply
        req_seq = latency = code = None
        reply_port = 0
        if match is not None:
            kind, req_seq, latency = REPLY, match[0], now - match[1]
            code = mig_retcode(kmsg.body)
        elif reply is not None:
            kind, reply_port = REQUEST, reply.id
            pending = self.pending
            if len(pending) >= PENDING_MAX:
                del pending[next(iter(pending))]
                self.unmatched += 1
            pending[reply.id] = (seq, now, mid)
        elif mid in REPLY_IDS:
            kind, code = REPLY, mig_retcode(kmsg.body)
        else:
            kind = ONEWAY
        body, ool = kmsg.body, kmsg.ool
        ool_bytes = ool_pages = 0
        for f in ool:
            n = len(f)
            ool_bytes += n
            ool_pages += -(-n // PAGE_SIZE)
        recv_space = port.receiver
        recv_name = (recv_space.reverse.get(port.id, 0)
                     if recv_space is not None and recv_space is not KERNEL else 0)
        self.ring.append((
            seq, now - self.t0, sender_id, sender, tid, port.id, dest_name, receiver_id,
            receiver, recv_name, port.label if recv_space is KERNEL else "", mid, None,
            kind, code, len(body), ool_bytes, ool_pages, len(kmsg.descs), reply_port,
            req_seq, latency, body[:BODY_PREFIX] if len(body) > BODY_PREFIX else body))

    def add_refused(self, now, task, tid, msgh_id, dest_name, code):
        seq = self.seq
        self.seq = seq + 1
        self.ring.append((seq, now - self.t0, task.id, task.name, tid, 0, dest_name,
                          _NO_RECEIVER, "", 0, "", msgh_id, None, REFUSED, code, 0, 0, 0,
                          0, 0, None, None, b""))

    def read(self, since: int, nmax: int) -> tuple[list, int, int]:
        """Records from seq ``since`` on (at most ``nmax``, as lists with the routine's
        name filled in): (rows, next seq, records lost to the ring before them)."""
        ring = self.ring
        first = ring[0][0] if ring else self.seq
        dropped = 0
        if since < first:
            dropped, since = first - since, first
        since = min(since, self.seq)
        start = since - first
        rows = []
        for rec in itertools.islice(ring, start, start + nmax):
            row = list(rec)
            row[12] = routine_name(rec[11])
            rows.append(row)
        return rows, since + len(rows), dropped

    def describe(self) -> dict:
        return {"tracer": self.tracer, "tracer_name": self.tracer_name,
                "port": self.port.id, "ring": self.ring.maxlen, "records": self.seq,
                "kept": len(self.ring), "pending": len(self.pending),
                "unmatched": self.unmatched, "age": round(time.monotonic() - self.t0, 3),
                "filter": self.filter.describe()}


class IPCTrace:
    """The open sessions: ``Kernel.trace`` while there is one, None otherwise (see
    trace_open, trace_close)."""

    def __init__(self, k):
        self.k = k
        self.sessions: list[TraceSession] = []

    def record(self, kmsg, task, tid: int, dest_name: int = 0):
        """A message is being sent: from ``task`` (thread ``tid``; None: the kernel, as
        mach_msg_send_from_kernel), after its copyin, before it is queued or handed to a
        receiver.  ``dest_name``: the sender's name for the destination."""
        port = kmsg.dest
        if port is None:
            return
        r = port.receiver
        if r is KERNEL:
            receiver_id, receiver = 0, "kernel"
        elif r is None:
            receiver_id, receiver = _NO_RECEIVER, ""
        else:
            rt = r.task
            receiver_id, receiver = rt.id, rt.name
        if task is None:
            sender_id, sender = M.KERNEL_SENDER, "kernel"
        else:
            sender_id, sender = task.id, task.name
        now = time.monotonic()
        pid, mid = port.id, kmsg.msgh_id
        for s in self.sessions:
            if sender_id == s.tracer or receiver_id == s.tracer:
                continue  # rpctrace does not trace itself
            match = s.pending.pop(pid, None) if s.pending else None
            if match is not None and mid != match[2] + 100 and mid != N.MACH_NOTIFY_SEND_ONCE:
                s.pending[pid] = match  # not its reply: still waiting
                match = None
            if match is None and not s.filter.admits(sender_id, receiver_id, pid, mid):
                continue
            s.add(now, sender_id, sender, tid, port, dest_name, receiver_id, receiver,
                  kmsg, match)

    def refused(self, task, tid: int, msgh_id: int, dest_name: int, code: int):
        """A send mach_msg_trap refused at copyin (no such destination, bad rights)."""
        now = time.monotonic()
        for s in self.sessions:
            if task.id != s.tracer and s.filter.admits(task.id, _NO_RECEIVER, 0, msgh_id):
                s.add_refused(now, task, tid, msgh_id, dest_name, code)


def trace_open(k, tracer, filt: TraceFilter, ring: int) -> TraceSession:
    """A new session of ``tracer``: its kernel port with a no-senders request on it (a
    send-once right to itself, as device_open's); ``k.trace`` set."""
    tr = k.trace or IPCTrace(k)
    if len(tr.sessions) >= MAX_SESSIONS:
        raise MachError(KernReturn.KERN_RESOURCE_SHORTAGE, "machemu_trace_start")
    port = IPCPort(receiver=KERNEL, kotype="trace", label=f"trace {tracer.name}")
    s = TraceSession(port, tracer, filt, ring)
    port.kobject = s
    ipc_port_make_send(port)  # the one given to the tracer
    ipc_port_make_sonce(port)
    port.nsrequest, port.nssync = port, 1
    tr.sessions.append(s)
    k.trace = tr
    log.info("trace started", tracer=tracer.name, tracer_id=tracer.id, ring=ring,
             filter=filt.describe())
    return s


def trace_close(k, s: TraceSession, why: str):
    """End ``s``: off the kernel's sessions (``k.trace`` None after the last), its port
    destroyed (the tracer's right becomes a dead name)."""
    if not s.active:
        return
    s.active = False
    tr = k.trace
    if tr is not None and s in tr.sessions:
        tr.sessions.remove(s)
        if not tr.sessions:
            k.trace = None
    log.info("trace stopped", tracer=s.tracer_name, tracer_id=s.tracer, why=why,
             records=s.seq, kept=len(s.ring))
    ipc_port_destroy(k, s.port)


def host_routines(k, demux: Demux, need_priv):
    """Add the host_priv routines of tracing to a host server ``demux``; ``need_priv``
    (routine name) raises KERN_INVALID_HOST on the plain host port."""

    def trace_start(_host, filt):
        """machemu_trace_start (host_priv): open a session for the calling task (the
        kmsg's sender trailer) with ``filt`` (see parse_filter).  Returns the session's
        port (a send right) and {"ring", "fields", "epoch", "tracer"}."""
        need_priv("machemu_trace_start")
        kmsg = k.current_kmsg
        tracer = next((t for t in k.tasks.values()
                       if kmsg is not None and t.id == kmsg.sender), None)
        if tracer is None:
            raise MachError(KernReturn.KERN_INVALID_TASK, "machemu_trace_start")
        f, ring = parse_filter(k, filt)
        s = trace_open(k, tracer, f, ring)
        return (s.port, PORT_SEND), {"ring": ring, "fields": list(FIELDS),
                                     "epoch": s.epoch, "tracer": tracer.id,
                                     "filter": f.describe()}

    def trace_sessions(_host):
        """machemu_trace_sessions (host_priv): every open session."""
        need_priv("machemu_trace_sessions")
        return [s.describe() for s in k.trace.sessions] if k.trace is not None else []

    demux.add(X.machemu_trace_start, trace_start)
    demux.add(X.machemu_trace_sessions, trace_sessions)
    return demux


def session_demux(k) -> Demux:
    """The server of trace session ports (kotype "trace"): read, stop, and the
    no-senders notification the kernel asked for (ipc_kobject_notify)."""

    def trace_read(s, since, nmax):
        """machemu_trace_read: records from ``since`` (see TraceSession.read); at most
        ``nmax`` (0 or more than READ_MAX: READ_MAX)."""
        if s is None or not s.active:
            raise MachError(KernReturn.KERN_INVALID_ARGUMENT, "machemu_trace_read")
        if since < 0:
            raise MachError(KernReturn.KERN_INVALID_VALUE, "machemu_trace_read")
        nmax = READ_MAX if nmax == 0 or nmax > READ_MAX else nmax
        return s.read(since, nmax)

    def trace_stop(s):
        """machemu_trace_stop: the session ends; its totals."""
        if s is None or not s.active:
            raise MachError(KernReturn.KERN_INVALID_ARGUMENT, "machemu_trace_stop")
        out = s.describe()
        trace_close(k, s, "stopped")
        return out

    def no_senders(s, _mscount):
        """mach_notify_no_senders on a session port: the tracer is gone.  Believed only
        from the kernel (the sender trailer), as every notification."""
        kmsg = k.current_kmsg
        if kmsg is None or kmsg.sender != M.KERNEL_SENDER or s is None:
            return
        trace_close(k, s, "no senders: the tracer is gone")

    return Demux({X.machemu_trace_read: trace_read, X.machemu_trace_stop: trace_stop,
                  N.mach_notify_no_senders: no_senders})
