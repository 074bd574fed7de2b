"""MIG-style routine definitions: one definition per routine, both sides derived from it.

A ``Routine`` names its message id, its request fields and its reply fields, as a MIG
``routine`` or ``simpleroutine`` in a ``.defs`` file does.  From that one definition come
the user-side stub (``routine(dest, *args)``), the request encoder, the server-side
decoder that checks every field for type and range (``MIG_BAD_ARGUMENTS`` on failure)
and the reply encoder.  Replies use ``msgh_id + 100``, as MIG does.

Body layout: a msgpack array of the data fields in order; port fields travel as header
descriptors (in order) so the kernel can translate them without touching the body;
out-of-line fields travel as raw frames (in order).  A reply body is ``[RetCode, ...]``;
an error reply carries only the RetCode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from protocol import message as M
from protocol.kern_return import KernReturn, MachError, MigReturn


def _no_runtime():
    raise RuntimeError("this process is not a task: call protocol.runtime.connect()")


# The calling thread's task runtime when a stub is called without ``rt``: set by
# protocol.runtime when it loads (as libmach's mach_msg is linked under MIG's stubs), so
# the stubs never import the runtime that itself calls stubs (mig_dealloc_reply_port).
_current_runtime: Callable[[], Any] = _no_runtime


def set_current_runtime(fn: Callable[[], Any]):
    """Make ``fn`` what a stub called without ``rt`` sends through."""
    global _current_runtime
    _current_runtime = fn

MACH_NOTIFY_SEND_ONCE = 71  # see protocol.defs.notify


# ---------------------------------------------------------------- field types

class FieldType:
    """A MIG type: where the value travels and what values are admitted."""

    where = "body"  # body | port | ool

    def check(self, value) -> bool:
        raise NotImplementedError

    def wire(self, value):
        return value


class Int(FieldType):
    def __init__(self, lo: int, hi: int, name: str):
        self.lo, self.hi, self.name = lo, hi, name

    def check(self, value) -> bool:
        return type(value) is int and self.lo <= value <= self.hi

    def __repr__(self):
        return self.name


natural_t = Int(0, 0xFFFFFFFF, "natural_t")
integer_t = Int(-(2**31), 2**31 - 1, "integer_t")
int64_t = Int(-(2**63), 2**63 - 1, "int64_t")
vm_address_t = Int(0, 2**64 - 1, "vm_address_t")
vm_size_t = Int(0, 2**64 - 1, "vm_size_t")
vm_offset_t = vm_address_t
kern_return_t = Int(-(2**31), 2**32 - 1, "kern_return_t")
mach_port_name_t = Int(0, 0xFFFFFFFF, "mach_port_name_t")


class _Bool(FieldType):
    def check(self, value) -> bool:
        return type(value) is bool

    def __repr__(self):
        return "boolean_t"


boolean_t = _Bool()


class Bytes(FieldType):
    """Inline data (``array[*:N] of char``)."""

    def __init__(self, max_len: int):
        self.max_len = max_len

    def check(self, value) -> bool:
        return type(value) is bytes and len(value) <= self.max_len


class Str(FieldType):
    """A C string (``string_t``), bounded, without NUL."""

    def __init__(self, max_len: int = 1024):
        self.max_len = max_len

    def check(self, value) -> bool:
        if type(value) is not str or len(value) > self.max_len or "\x00" in value:
            return False
        try:
            value.encode("utf-8")  # lone surrogates cannot cross the wire
        except UnicodeEncodeError:
            return False
        return True


class Array(FieldType):
    def __init__(self, elem: FieldType, max_len: int):
        self.elem, self.max_len = elem, max_len

    def check(self, value) -> bool:
        return (
            type(value) is list
            and len(value) <= self.max_len
            and all(self.elem.check(v) for v in value)
        )

    def wire(self, value):
        return list(value)


class Blob(FieldType):
    """Any msgpack structure, for reports read by people (status, statistics)."""

    def check(self, value) -> bool:
        return True


class Port(FieldType):
    """A port right.  ``disposition`` None makes it polymorphic (mach_port_poly_t):
    the caller passes ``(name, disposition)``."""

    where = "port"

    def __init__(self, disposition: int | None):
        self.disposition = disposition

    def check(self, value) -> bool:
        return True  # the kernel checked the right when it copied it in


class OOL(FieldType):
    """Out-of-line data: one raw frame (page contents)."""

    where = "ool"

    def __init__(self, max_len: int = M.MAX_OOL_BYTES):
        self.max_len = max_len

    def check(self, value) -> bool:
        return isinstance(value, (bytes, bytearray, memoryview)) and len(value) <= self.max_len


mach_port_send_t = Port(M.MACH_MSG_TYPE_COPY_SEND)
mach_port_make_send_t = Port(M.MACH_MSG_TYPE_MAKE_SEND)
mach_port_make_send_once_t = Port(M.MACH_MSG_TYPE_MAKE_SEND_ONCE)
mach_port_move_receive_t = Port(M.MACH_MSG_TYPE_MOVE_RECEIVE)
mach_port_move_send_t = Port(M.MACH_MSG_TYPE_MOVE_SEND)
mach_port_poly_t = Port(None)


@dataclass(frozen=True)
class Field:
    name: str
    type: FieldType


def fields(*pairs) -> tuple[Field, ...]:
    return tuple(Field(n, t) for n, t in pairs)


# ---------------------------------------------------------------- routines

REGISTRY: dict[int, "Routine"] = {}


class Subsystem:
    """A MIG subsystem: a name and a base message id."""

    def __init__(self, name: str, base: int):
        self.name, self.base = name, base
        self.routines: dict[int, Routine] = {}

    def routine(self, name, number, request=(), reply=(), simple=False,
                dest_disp=M.MACH_MSG_TYPE_COPY_SEND) -> "Routine":
        rt = Routine(self, name, self.base + number, fields(*request), fields(*reply),
                     simple, dest_disp)
        if rt.msgh_id in REGISTRY:
            raise ValueError(f"message id {rt.msgh_id} of {name} already used by "
                             f"{REGISTRY[rt.msgh_id].name}")
        REGISTRY[rt.msgh_id] = rt
        self.routines[rt.msgh_id] = rt
        return rt

    def simpleroutine(self, name, number, request=(), **kw) -> "Routine":
        return self.routine(name, number, request, (), simple=True, **kw)

    def __repr__(self):
        return f"Subsystem({self.name}, {self.base})"


def _split(flds: Sequence[Field]):
    body = [i for i, f in enumerate(flds) if f.type.where == "body"]
    ports = [i for i, f in enumerate(flds) if f.type.where == "port"]
    ool = [i for i, f in enumerate(flds) if f.type.where == "ool"]
    return body, ports, ool


class Routine:
    """One MIG routine: id, request fields, reply fields (after the implicit RetCode)."""

    def __init__(self, subsystem, name, msgh_id, request, reply, simple, dest_disp):
        self.subsystem, self.name, self.msgh_id = subsystem, name, msgh_id
        self.request, self.reply, self.simple = request, reply, simple
        self.dest_disp = dest_disp
        self.reply_id = msgh_id + 100
        self._req = _split(request)
        self._rep = _split(reply)

    def __repr__(self):
        return f"<routine {self.name} {self.msgh_id}>"

    # -------- encoding (either side)

    @staticmethod
    def _encode(flds, split, values, what, rights):
        body_idx, port_idx, ool_idx = split
        if len(values) != len(flds):
            raise TypeError(f"{what} takes {len(flds)} arguments, got {len(values)}")
        body = [flds[i].type.wire(values[i]) for i in body_idx]
        descs = []
        for i in port_idx:
            v = values[i]
            if not rights:
                disp = flds[i].type.disposition
                if disp is None:
                    v, disp = v
                v = (v, disp)
            descs.append(v)
        ool = [values[i] for i in ool_idx]
        return body, descs, ool

    def encode_request(self, args, rights: bool = False) -> tuple[bytes, list, list]:
        """The request for ``args`` (in field order): (msgpack body, port descriptors,
        OOL frames).  A port field is a name, sent with the field's disposition, or for
        a polymorphic field a (name, disposition) pair.  With ``rights`` every port field
        is a (right, type) pair carried as it is: the kernel sends rights it holds and
        has made, not names."""
        body, descs, ool = self._encode(self.request, self._req, args, self.name, rights)
        return M.packb(body), descs, ool

    def encode_reply(self, code: int, values=(), rights: bool = False
                     ) -> tuple[bytes, list, list]:
        """The reply: RetCode ``code`` and, on success, the reply fields ``values``
        (port fields as for encode_request)."""
        if code != KernReturn.KERN_SUCCESS:
            return encode_error_reply(code), [], []
        body, descs, ool = self._encode(self.reply, self._rep, values, self.name + " reply",
                                        rights)
        return M.packb([0, *body]), descs, ool

    # -------- decoding with checks (either side)

    @staticmethod
    def _decode(flds, split, body_vals, ports, ool):
        """Merge body values, port values and OOL frames back into argument order;
        None if anything is missing, extra, or of the wrong type or range."""
        body_idx, port_idx, ool_idx = split
        if (type(body_vals) is not list or len(body_vals) != len(body_idx)
                or len(ports) != len(port_idx) or len(ool) != len(ool_idx)):
            return None
        out = [None] * len(flds)
        for i, v in zip(body_idx, body_vals):
            if not flds[i].type.check(v):
                return None
            out[i] = v
        for i, v in zip(port_idx, ports):
            out[i] = v
        for i, v in zip(ool_idx, ool):
            if not flds[i].type.check(v):
                return None
            out[i] = v
        return out

    def decode_request(self, body: bytes, ports: Sequence, ool: Sequence):
        """Server side: the arguments, or None (the caller answers MIG_BAD_ARGUMENTS)."""
        try:
            vals = M.unpackb(body)
        except Exception:
            return None
        return self._decode(self.request, self._req, vals, ports, ool)

    def decode_reply(self, body: bytes, ports: Sequence, ool: Sequence):
        """User side: (code, values).  A malformed reply is MIG_TYPE_ERROR."""
        try:
            vals = M.unpackb(body)
        except Exception:
            return MigReturn.MIG_TYPE_ERROR, None
        if type(vals) is not list or not vals or type(vals[0]) is not int:
            return MigReturn.MIG_TYPE_ERROR, None
        if vals[0] != 0:
            return vals[0], None
        out = self._decode(self.reply, self._rep, vals[1:], ports, ool)
        if out is None:
            return MigReturn.MIG_TYPE_ERROR, None
        return 0, out

    # -------- user-side stub

    def message(self, dest: int, args, reply_port: int = M.MACH_PORT_NULL,
                dest_disp: int | None = None) -> M.Message:
        body, descs, ool = self.encode_request(args)
        return M.Message(
            msgh_id=self.msgh_id,
            remote_port=dest,
            remote_disp=self.dest_disp if dest_disp is None else dest_disp,
            local_port=reply_port,
            local_disp=M.MACH_MSG_TYPE_MAKE_SEND_ONCE if reply_port else 0,
            descs=descs,
            body=body,
            ool=ool,
        )

    def __call__(self, dest: int, *args, timeout: float | None = None,
                 dest_disp: int | None = None, rt=None):
        """Call the routine on ``dest`` (a send right in this task).  Returns None, the
        single reply value, or a tuple of them (a port field, polymorphic or not, gives the
        name only, as a C stub's out parameter does); raises MachError for a non-zero RetCode,
        a mach_msg error, MIG_SERVER_DIED when the server dropped the reply right."""
        rt = rt or _current_runtime()
        if self.simple:
            rt.send(self.message(dest, args, dest_disp=dest_disp), timeout=timeout)
            return None
        msg = self.message(dest, args, rt.reply_port(), dest_disp)
        try:
            reply = rt.rpc(msg, timeout=timeout)
        except MachError as e:
            if e.code & 0xFFFFC000 == 0x10004000:  # a MACH_RCV_* error: the reply may come late
                rt.drop_reply_port()
            raise
        if reply.msgh_id != self.reply_id:
            if reply.msgh_id == MACH_NOTIFY_SEND_ONCE:
                raise MachError(MigReturn.MIG_SERVER_DIED, self.name)
            rt.drop_reply_port()
            raise MachError(MigReturn.MIG_REPLY_MISMATCH, self.name)
        code, vals = self.decode_reply(reply.body, [d[0] for d in reply.descs], reply.ool)
        if code != 0:
            raise MachError(code, self.name)
        if not vals:
            return None
        return vals[0] if len(vals) == 1 else tuple(vals)


# ---------------------------------------------------------------- server side

Handler = Callable[..., Any]


class Demux:
    """Server-side dispatch for one or more subsystems (MIG's ``*_server`` routines).

    ``handlers`` maps a routine to ``fn(obj, *args)``, which returns the reply values
    (None, one value, or a tuple), or raises MachError, or returns ``MIG_NO_REPLY`` when
    it will reply later itself.  A routine with one reply field takes the handler's value
    as that field (even a tuple: a port right); with more, a tuple of them.
    """

    NO_REPLY = MigReturn.MIG_NO_REPLY

    def __init__(self, handlers: dict[Routine, Handler] | None = None):
        self.table: dict[int, tuple[Routine, Handler]] = {}
        for rt, fn in (handlers or {}).items():
            self.add(rt, fn)

    def add(self, rt: Routine, fn: Handler):
        self.table[rt.msgh_id] = (rt, fn)

    def handles(self, msgh_id: int) -> bool:
        return msgh_id in self.table

    def dispatch(self, obj, msgh_id: int, body: bytes, ports: Sequence, ool: Sequence):
        """Run the handler for one request.  Returns (routine or None, code, reply values);
        code MIG_NO_REPLY means the handler will reply itself; routine None is MIG_BAD_ID."""
        entry = self.table.get(msgh_id)
        if entry is None:
            return None, MigReturn.MIG_BAD_ID, ()
        rt, fn = entry
        args = rt.decode_request(body, ports, ool)
        if args is None:
            return rt, MigReturn.MIG_BAD_ARGUMENTS, ()
        try:
            result = fn(obj, *args)
        except MachError as e:
            return rt, e.code, ()
        if result is MigReturn.MIG_NO_REPLY:
            return rt, MigReturn.MIG_NO_REPLY, ()
        nrep = len(rt.reply)
        if nrep == 0:
            vals = ()
        elif nrep == 1:
            vals = (result,)
        else:
            vals = tuple(result)
        if len(vals) != len(rt.reply):
            raise TypeError(f"handler for {rt.name} returned {len(vals)} values, "
                            f"the routine replies with {len(rt.reply)}")
        return rt, KernReturn.KERN_SUCCESS, vals


def encode_error_reply(code: int) -> bytes:
    """The body of an error reply: the RetCode alone (also for a request no routine
    serves, MIG_BAD_ID)."""
    return M.packb([int(code)])


def bad_id_reply_id(msgh_id: int) -> int:
    """The reply id MIG uses for an unknown request: msgh_id + 100."""
    return (msgh_id + 100) & 0x7FFFFFFF
