"""libpager's demuxer (Hurd libpager/demuxer.c with the MIG memory_object server): the
memory_object routines a pager port receives, mapped to their handlers, and
``PagerDemuxer`` — a libports demuxer that serves them next to the server's own routines.

Around every handler: the object must be a pager (else EOPNOTSUPP, and libports destroys
the message's rights); the handler takes its turn by the message's sequence number; the
extra user reference the message gave to the control port is deallocated (except the
one init keeps); a handler's exception is logged, never propagated (the kernel does not
wait for answers to one-way messages).

memory_object_* messages are kernel-to-pager only: one whose sender trailer is not the
kernel's (a task forging a data_request or terminate to a pager port it got) is dropped
and counted (libports' ``not_from_kernel``) before any handler sees it.
"""

from __future__ import annotations

import structlog

from protocol.defs import memory_object as MO
from protocol.kern_return import MachError
from protocol.mig import Demux
from translators import libports as LP
from translators.libpager.change_completed import _pager_S_memory_object_change_completed
from translators.libpager.data_request import _pager_S_memory_object_data_request
from translators.libpager.data_return import _pager_S_memory_object_data_return
from translators.libpager.data_unlock import _pager_S_memory_object_data_unlock
from translators.libpager.init import _pager_S_memory_object_init
from translators.libpager.lock_completed import _pager_S_memory_object_lock_completed
from translators.libpager.pager import (
    Pager,
    _pager_release_seqno,
    _pager_wait_for_seqno,
    _serving,
    current_seqno,
)
from translators.libpager.supply_completed import _pager_S_memory_object_supply_completed
from translators.libpager.terminate import _pager_S_memory_object_terminate

log = structlog.get_logger("libpager")

CONTROL_REFS_BATCH = 64  # give back the control port's extra references this many at once


def _drop_control_ref(p: Pager, control: int):
    """Each kernel message brings a reference to the control port.  Rather than one
    mach_port_deallocate per message (an RPC on every page-in), references to the
    current control port are given back in batches with mach_port_mod_refs; a stale
    control's reference goes at once."""
    n = 0
    with p.lock:
        if control == p.memobjcntl:
            p.control_refs_owed += 1
            if p.control_refs_owed >= CONTROL_REFS_BATCH:
                n, p.control_refs_owed = p.control_refs_owed, 0
        else:
            n = -1
    try:
        if n > 0:
            p.kernel.mod_refs(control, -n)
        elif n < 0:
            p.kernel.deallocate(control)
    except MachError as e:
        log.debug("control reference already gone", name=control, code=e.code)


def make_pager_handler(fn, has_control: bool = True):
    """Wrap ``fn(pager, seqno, *args) -> kept_control`` as a libports handler
    ``h(pi, *args)``.  ``has_control``: args[0] is a control send right whose reference
    is ours to drop unless ``fn`` kept it."""

    def handler(pi, *args):
        p = pi.data
        if not isinstance(p, Pager):
            raise MachError(LP.EOPNOTSUPP, "not a pager")
        seqno = current_seqno()
        kept = False
        try:
            kept = fn(p, seqno, *args)
        except Exception:
            log.exception("pager handler failed", handler=fn.__name__, port=p.port_right)
            p.count("handler_errors")
        finally:
            _take_turn(p, seqno)
        if has_control and not kept and args[0]:
            _drop_control_ref(p, args[0])
        return None

    handler.__name__ = fn.__name__
    return handler


def _take_turn(p: Pager, seqno: int):
    """Make sure message ``seqno`` took its turn (handlers release it early; a message
    that never reached one must still not hold the others up)."""
    if seqno and p.seqno < seqno:
        with p.lock:
            _pager_wait_for_seqno(p, seqno)
            _pager_release_seqno(p, seqno)


def pager_handlers() -> dict:
    """{routine: libports handler} for the memory_object subsystem."""
    return {
        MO.memory_object_init: make_pager_handler(_pager_S_memory_object_init),
        MO.memory_object_terminate: make_pager_handler(_pager_S_memory_object_terminate),
        MO.memory_object_data_request: make_pager_handler(
            _pager_S_memory_object_data_request),
        MO.memory_object_data_unlock: make_pager_handler(_pager_S_memory_object_data_unlock),
        MO.memory_object_data_return: make_pager_handler(_pager_S_memory_object_data_return),
        MO.memory_object_lock_completed: make_pager_handler(
            _pager_S_memory_object_lock_completed),
        MO.memory_object_supply_completed: make_pager_handler(
            _pager_S_memory_object_supply_completed),
        MO.memory_object_change_completed: make_pager_handler(
            _pager_S_memory_object_change_completed, has_control=False),
    }


# Every kernel-to-pager message id (memory_object and memory_object_default subsystems).
KERNEL_TO_PAGER = frozenset(MO.memory_object.routines) | frozenset(
    MO.memory_object_default.routines)


def pager_demux() -> Demux:
    """The memory_object server routines as a protocol.mig.Demux (handlers take the
    PortInfo as their object)."""
    return Demux(pager_handlers())


class PagerDemuxer(LP.PortsDemuxer):
    """A libports demuxer serving libpager's routines plus ``handlers`` (the server's
    own: file, io, fsys ... routines; they override pager ones of the same routine).

    Every message to a pager's port takes its turn by sequence number (so handlers of
    the multithread model see one object's messages in arrival order where it
    matters, as the Hurd's seqnos libpager did)."""

    def __init__(self, bucket, handlers: dict | None = None, notify: bool = True):
        table = pager_handlers()
        table.update(handlers or {})
        super().__init__(bucket, table, notify, kernel_only=KERNEL_TO_PAGER)

    def serve(self, msg):
        _serving.seqno, _serving.msg = msg.seqno, msg
        try:
            return super().serve(msg)
        finally:
            _serving.seqno, _serving.msg = 0, None
            if msg.seqno:
                self._turn(msg)

    def _turn(self, msg):
        pi = self.bucket.lookup(msg.local_port)
        if pi is None:
            return
        try:
            if isinstance(pi.data, Pager):
                _take_turn(pi.data, msg.seqno)
        finally:
            LP.ports_port_deref(pi)
