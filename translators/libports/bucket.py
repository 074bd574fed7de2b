"""Port buckets, port classes and port objects (Hurd libports: bucket.c, create-class.c,
create-port.c, lookup-port.c, port-deref.c, get-right.c, no-senders.c, destroy-right.c).

A bucket owns a port set; every port created in it is a receive right moved into that set,
so server threads receive on the one set and find the object by the message's local port.
A port object (``PortInfo``) is reference counted as in libports: the creator holds one
reference, the existence of send rights holds another (``PORT_HAS_SENDRIGHTS``), every RPC
in progress holds one; when the count reaches zero the receive right is destroyed and the
class's clean routine runs.  Send rights are tracked with a no-senders notification
requested on the port itself, so the notification arrives through the server loop.

The table logic (insert, lookup, reference counts, the no-senders decision) is pure; only
the functions that change rights call the kernel, through the bucket's task runtime.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator

import structlog

from protocol import message as M
from protocol.defs import mach_port as P
from protocol.defs import notify as N
from protocol.kern_return import KernReturn, MachError

log = structlog.get_logger("libports")

# port_info flags (libports/ports.h).
PORT_HAS_SENDRIGHTS = 0x0002
PORT_INHIBITED = 0x0100


class PortClass:
    """struct port_class: what to do when an object of this class goes away.

    ``clean_routine(pi)`` runs after the last reference is dropped (the receive right is
    already gone); ``dropweak_routine(pi)`` is accepted for libports compatibility.
    """

    def __init__(self, clean_routine: Callable[["PortInfo"], Any] | None = None,
                 dropweak_routine: Callable[["PortInfo"], Any] | None = None,
                 name: str = ""):
        self.clean_routine = clean_routine
        self.dropweak_routine = dropweak_routine
        self.name = name
        self.count = 0  # live objects of this class

    def __repr__(self):
        return f"<port class {self.name or id(self)}: {self.count} ports>"


class PortInfo:
    """struct port_info: one object served on one receive right.

    ``data`` is the server's own state for the object (the part of a Hurd server's struct
    that embeds port_info)."""

    __slots__ = ("class_", "bucket", "port_right", "refcnt", "mscount", "flags", "data",
                 "rpcs", "__weakref__")

    def __init__(self, class_: PortClass, bucket: "PortBucket", port_right: int,
                 data: Any = None):
        self.class_, self.bucket = class_, bucket
        self.port_right = port_right
        self.refcnt = 1  # the creator's reference
        self.mscount = 0
        self.flags = 0
        self.data = data
        self.rpcs = 0  # RPCs in progress on this object

    def __repr__(self):
        return f"<port_info {self.port_right} refs {self.refcnt} ms {self.mscount}>"


class PortBucket:
    """struct port_bucket: a port set and the table of the objects whose ports are in it.

    ``rt`` is the task runtime used for the kernel calls; ``portset`` the set's name.  A
    bucket made with ``ports_create_bucket`` has both; the table works without them.
    """

    def __init__(self, rt=None, portset: int = M.MACH_PORT_NULL):
        self.rt = rt
        self.portset = portset
        self.lock = threading.RLock()  # _ports_lock: refcounts and the table
        self.htable: dict[int, PortInfo] = {}
        self.stats = {"ports_created": 0, "ports_destroyed": 0, "no_senders": 0,
                      "dead_names": 0, "notifications": 0, "lookups_failed": 0}

    def __len__(self):
        return len(self.htable)

    # ------------------------------------------------------------ pure table logic

    def _enter(self, pi: PortInfo):
        with self.lock:
            if pi.port_right in self.htable:
                raise ValueError(f"port {pi.port_right} already in the bucket")
            self.htable[pi.port_right] = pi
            pi.class_.count += 1
            self.stats["ports_created"] += 1

    def _remove(self, pi: PortInfo) -> bool:
        with self.lock:
            if self.htable.get(pi.port_right) is not pi:
                return False
            del self.htable[pi.port_right]
            pi.class_.count -= 1
            return True

    def lookup(self, name: int, class_: PortClass | None = None) -> PortInfo | None:
        """ports_lookup_port: the object for receive right ``name`` with a reference added
        (the caller drops it with ports_port_deref), or None."""
        with self.lock:
            pi = self.htable.get(name)
            if pi is None or (class_ is not None and pi.class_ is not class_):
                self.stats["lookups_failed"] += 1
                return None
            pi.refcnt += 1
            return pi

    def _deref(self, pi: PortInfo) -> bool:
        """Drop one reference; True when it was the last (the object must be destroyed)."""
        with self.lock:
            if pi.refcnt <= 0:
                raise AssertionError(f"{pi}: reference count underflow")
            pi.refcnt -= 1
            if pi.refcnt == 0:
                self._remove(pi)
                return True
            return False

    def _no_senders(self, pi: PortInfo, mscount: int) -> str | None:
        """The decision of ports_no_senders: "drop" the send rights' reference (no send
        right was made after the notification was generated), "rerequest" the
        notification (some were), or None (the object has no send rights)."""
        with self.lock:
            if not pi.flags & PORT_HAS_SENDRIGHTS or not pi.port_right:
                return None
            if mscount >= pi.mscount:
                pi.flags &= ~PORT_HAS_SENDRIGHTS
                return "drop"
            return "rerequest"

    def iterate(self, class_: PortClass | None = None) -> Iterator[PortInfo]:
        """ports_bucket_iterate: a snapshot of the objects (optionally of one class)."""
        with self.lock:
            items = [pi for pi in self.htable.values()
                     if class_ is None or pi.class_ is class_]
        return iter(items)


# ---------------------------------------------------------------- kernel-side operations

def ports_create_class(clean_routine=None, dropweak_routine=None, name="") -> PortClass:
    """ports_create_class."""
    return PortClass(clean_routine, dropweak_routine, name)


def ports_create_bucket(rt) -> PortBucket:
    """ports_create_bucket: allocate the bucket's port set (mach_port_allocate
    MACH_PORT_RIGHT_PORT_SET)."""
    pset = P.mach_port_allocate(rt.task_self, M.MACH_PORT_RIGHT_PORT_SET, rt=rt)
    return PortBucket(rt, pset)


def ports_create_port(class_: PortClass, bucket: PortBucket, data: Any = None,
                      qlimit: int | None = None) -> PortInfo:
    """ports_create_port: a new receive right, moved into the bucket's port set, with an
    object holding one reference (the caller's)."""
    rt = bucket.rt
    name = P.mach_port_allocate(rt.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=rt)
    try:
        if qlimit is not None:
            P.mach_port_set_qlimit(rt.task_self, name, qlimit, rt=rt)
        P.mach_port_move_member(rt.task_self, name, bucket.portset, rt=rt)
    except MachError:
        P.mach_port_mod_refs(rt.task_self, name, M.MACH_PORT_RIGHT_RECEIVE, -1, rt=rt)
        raise
    pi = PortInfo(class_, bucket, name, data)
    bucket._enter(pi)
    return pi


def ports_lookup_port(bucket: PortBucket, name: int,
                      class_: PortClass | None = None) -> PortInfo | None:
    """ports_lookup_port."""
    return bucket.lookup(name, class_)


def ports_port_ref(pi: PortInfo):
    """ports_port_ref."""
    with pi.bucket.lock:
        pi.refcnt += 1


def ports_port_deref(pi: PortInfo):
    """ports_port_deref: drop a reference; the last one destroys the receive right and
    runs the class's clean routine (_ports_complete_deallocate)."""
    if pi.bucket._deref(pi):
        _complete_deallocate(pi)


def _destroy_receive(bucket: PortBucket, name: int):
    rt = bucket.rt
    if rt is not None and not rt.dead:
        try:
            P.mach_port_mod_refs(rt.task_self, name, M.MACH_PORT_RIGHT_RECEIVE, -1, rt=rt)
        except MachError as e:
            log.warning("receive right already gone", port=name, code=e.code)
    with bucket.lock:
        bucket.stats["ports_destroyed"] += 1


def _complete_deallocate(pi: PortInfo):
    name, pi.port_right = pi.port_right, M.MACH_PORT_NULL
    if name:
        _destroy_receive(pi.bucket, name)
    if pi.class_.clean_routine is not None:
        try:
            pi.class_.clean_routine(pi)
        except Exception:
            log.exception("clean routine failed", port=name)


def ports_get_right(pi: PortInfo) -> int:
    """ports_get_right: the receive right's name, for the caller to send with
    MACH_MSG_TYPE_MAKE_SEND.  The first send right takes a reference and asks for a
    no-senders notification on the port itself; every call counts one make-send."""
    bucket = pi.bucket
    rt = bucket.rt
    with bucket.lock:
        if not pi.port_right:
            raise MachError(KernReturn.KERN_INVALID_NAME, "ports_get_right: port destroyed")
        pi.mscount += 1
        first = not pi.flags & PORT_HAS_SENDRIGHTS
        if first:
            pi.flags |= PORT_HAS_SENDRIGHTS
            pi.refcnt += 1
        sync = pi.mscount
    if first:
        prev = P.mach_port_request_notification(
            rt.task_self, pi.port_right, N.MACH_NOTIFY_NO_SENDERS, sync, pi.port_right,
            rt=rt)
        if prev:
            P.mach_port_deallocate(rt.task_self, prev, rt=rt)
    return pi.port_right


def ports_get_send_right(pi: PortInfo) -> int:
    """ports_get_send_right: a send right in this task's space (under the receive right's
    name), made with mach_port_insert_right MACH_MSG_TYPE_MAKE_SEND."""
    name = ports_get_right(pi)
    rt = pi.bucket.rt
    P.mach_port_insert_right(rt.task_self, name, (name, M.MACH_MSG_TYPE_MAKE_SEND), rt=rt)
    return name


def ports_no_senders(pi: PortInfo, mscount: int):
    """ports_no_senders: a no-senders notification for ``pi``.  Unless a send right was
    made since it was generated, drop the send rights' reference (which may destroy the
    object); otherwise ask for the notification again with the current make-send count."""
    bucket = pi.bucket
    with bucket.lock:
        bucket.stats["no_senders"] += 1
    what = bucket._no_senders(pi, mscount)
    if what == "drop":
        ports_port_deref(pi)
    elif what == "rerequest" and bucket.rt is not None:
        rt = bucket.rt
        try:
            prev = P.mach_port_request_notification(
                rt.task_self, pi.port_right, N.MACH_NOTIFY_NO_SENDERS, pi.mscount,
                pi.port_right, rt=rt)
            if prev:
                P.mach_port_deallocate(rt.task_self, prev, rt=rt)
        except MachError as e:
            log.warning("no-senders request failed", port=pi.port_right, code=e.code)


def ports_destroy_right(pi: PortInfo):
    """ports_destroy_right: destroy the receive right now (clients see a dead port); the
    object lives on until its other references are gone, then its clean routine runs."""
    bucket = pi.bucket
    with bucket.lock:
        name = pi.port_right
        if not name:
            return
        bucket._remove(pi)
        pi.port_right = M.MACH_PORT_NULL
        had_senders = bool(pi.flags & PORT_HAS_SENDRIGHTS)
        pi.flags &= ~PORT_HAS_SENDRIGHTS
    _destroy_receive(bucket, name)
    if had_senders:
        ports_port_deref(pi)


def ports_count_bucket(bucket: PortBucket) -> int:
    """ports_count_bucket."""
    return len(bucket)


def ports_destroy_bucket(bucket: PortBucket):
    """Shut a bucket down: destroy its port set, so every thread receiving on it returns
    with MACH_RCV_PORT_DIED (how the servers here are stopped).  Member ports stay."""
    rt = bucket.rt
    pset, bucket.portset = bucket.portset, M.MACH_PORT_NULL
    if pset and rt is not None and not rt.dead:
        try:
            P.mach_port_destroy(rt.task_self, pset, timeout=5, rt=rt)
        except MachError as e:
            log.warning("port set already gone", portset=pset, code=e.code)
