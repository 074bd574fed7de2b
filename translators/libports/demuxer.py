"""Serving one request: look the object up, run the MIG routine, build the reply (the
internal demuxer of libports' manage-*.c together with the MIG ``*_server`` routines and
libports' own ``ports_notify_server`` for kernel notifications).

``PortsDemuxer.serve(msg)`` is what every thread model calls for each message it takes;
it returns the reply Message to send, or None when nothing is to be sent (no reply port,
a one-way routine, a handler that replies itself with MIG_NO_REPLY).

Notifications (mach_notify_*, ids 0o100..) are believed only when the kernel sent them:
the message's sender trailer (``Message.sender``, filled by the kernel) must be 0.  Any
other is a forgery by a task (a no-senders that would destroy a root port, a dead-name
that would make us deallocate one of our own rights): dropped, its rights destroyed, and
counted as ``not_from_kernel``.  They are simpleroutines, so no reply goes back.
"""

from __future__ import annotations

import threading

import structlog

from protocol import message as M
from protocol.defs import mach_port as P
from protocol.defs import notify as N
from protocol.kern_return import KernReturn, MachError, MigReturn
from protocol.mig import Demux, Routine, bad_id_reply_id
from translators.libports.bucket import PortBucket, PortInfo, ports_no_senders, ports_port_deref

log = structlog.get_logger("libports")

# The Hurd's EOPNOTSUPP (_HURD_ERRNO (45)): the answer for a message to a port the bucket
# does not know, as libports' internal demuxer gives it.
EOPNOTSUPP = (0x10 << 26) | 45

MACH_SEND_ERRORS_MASK = 0x10000000
MACH_RCV_ERRORS = 0x10004000

_MOVED = frozenset((M.MACH_MSG_TYPE_MOVE_RECEIVE, M.MACH_MSG_TYPE_MOVE_SEND,
                    M.MACH_MSG_TYPE_MOVE_SEND_ONCE))


def mig_reply(request: M.Message, routine: Routine | None, code: int,
              values=()) -> M.Message:
    """The reply MIG's server side builds: id msgh_id + 100, to the request's reply
    right moved back with the type it arrived as (send-once, or send)."""
    if routine is None:
        reply_id = bad_id_reply_id(request.msgh_id)
        body, descs, ool = M.packb([int(code)]), [], []
    else:
        reply_id = routine.reply_id
        body, descs, ool = routine.encode_reply(code, values)
    return M.Message(msgh_id=reply_id, remote_port=request.remote_port,
                     remote_disp=request.remote_disp, local_port=M.MACH_PORT_NULL,
                     local_disp=0, descs=descs, body=body, ool=ool)


class PortsDemuxer:
    """One server's dispatch: the server's routines (``handlers``: {routine: fn(pi,
    *args)}) and, for routines the server does not define, libports' notification
    handlers.  ``handlers`` receive the PortInfo of the port the message came to."""

    def __init__(self, bucket: PortBucket, handlers: dict, notify: bool = True,
                 kernel_only=()):
        """``kernel_only``: further message ids served only when the kernel sent them
        (libpager's memory_object_* routines); notification ids always are."""
        self.bucket = bucket
        self.kernel_only = frozenset(N.notify.routines) | frozenset(kernel_only)
        table = {}
        if notify:
            table.update({
                N.mach_notify_no_senders: self._no_senders,
                N.mach_notify_dead_name: self._dead_name,
                N.mach_notify_port_deleted: self._ignored,
                N.mach_notify_msg_accepted: self._ignored,
                N.mach_notify_send_once: self._send_once,
                N.mach_notify_port_destroyed: self._port_destroyed,
            })
        table.update(handlers)
        self.demux = Demux(table)
        self._lock = threading.Lock()
        self.stats = {"served": 0, "replies": 0, "bad_id": 0, "bad_args": 0,
                      "no_object": 0, "errors": 0, "handler_exceptions": 0,
                      "not_from_kernel": 0}

    def _count(self, key):
        with self._lock:
            self.stats[key] += 1

    # ------------------------------------------------------------ notifications

    def _no_senders(self, pi: PortInfo, mscount: int):
        """ports_do_mach_notify_no_senders."""
        self._note()
        ports_no_senders(pi, mscount)

    def _dead_name(self, pi: PortInfo, name: int):
        """ports_do_mach_notify_dead_name: the notification carries a reference to the
        dead name; give it back."""
        rt = self.bucket.rt
        if rt is not None and name:
            try:
                P.mach_port_deallocate(rt.task_self, name, rt=rt)
            except MachError as e:
                log.warning("dead name already gone", name=name, code=e.code)
        with self.bucket.lock:
            self.bucket.stats["dead_names"] += 1
        self._note()

    def _port_destroyed(self, pi: PortInfo, right):
        """A receive right came back to us: nothing here asked for it; destroy it."""
        self._note()
        rt = self.bucket.rt
        if rt is not None and right:
            try:
                P.mach_port_mod_refs(rt.task_self, right, M.MACH_PORT_RIGHT_RECEIVE, -1,
                                     rt=rt)
            except MachError:
                pass

    def _send_once(self, pi: PortInfo):
        self._note()

    def _ignored(self, pi: PortInfo, name: int):
        self._note()

    def _note(self):
        with self.bucket.lock:
            self.bucket.stats["notifications"] += 1

    # ------------------------------------------------------------ one message

    def serve(self, msg: M.Message) -> M.Message | None:
        """Look up the object for ``msg.local_port``, dispatch, return the reply (or
        None).  Never raises for anything a client sent."""
        self._count("served")
        if msg.msgh_id in self.kernel_only and msg.sender != M.KERNEL_SENDER:
            self._count("not_from_kernel")
            log.warning("message only the kernel sends, from a task: dropped",
                        msgh_id=msg.msgh_id, sender=msg.sender, port=msg.local_port)
            self._destroy_request_rights(msg)
            return None
        pi = self.bucket.lookup(msg.local_port)
        ports = [d[0] for d in msg.descs]
        if pi is None:
            # libports answers a message to a port it no longer knows with EOPNOTSUPP.
            self._count("no_object")
            code, routine, vals = EOPNOTSUPP, self.demux.table.get(msg.msgh_id, (None,))[0], ()
        else:
            with self.bucket.lock:
                pi.rpcs += 1
            try:
                routine, code, vals = self.demux.dispatch(pi, msg.msgh_id, msg.body, ports,
                                                          msg.ool)
            except Exception:
                # A handler bug must not take the server thread down: answer and go on.
                log.exception("handler failed", msgh_id=msg.msgh_id, port=msg.local_port)
                self._count("handler_exceptions")
                routine = self.demux.table.get(msg.msgh_id, (None,))[0]
                code, vals = KernReturn.KERN_FAILURE, ()
            finally:
                with self.bucket.lock:
                    pi.rpcs -= 1
                ports_port_deref(pi)
        if code == MigReturn.MIG_NO_REPLY:
            return None
        if code != KernReturn.KERN_SUCCESS:
            if code == MigReturn.MIG_BAD_ID:
                self._count("bad_id")
            elif code == MigReturn.MIG_BAD_ARGUMENTS:
                self._count("bad_args")
            else:
                self._count("errors")
            # mach_msg_server destroys a failed request's rights (mach_msg_destroy).
            self._destroy_request_rights(msg)
        if not msg.remote_port or (routine is not None and routine.simple):
            return None
        self._count("replies")
        return mig_reply(msg, routine, code, vals)

    def _destroy_request_rights(self, msg: M.Message):
        rt = self.bucket.rt
        if rt is None:
            return
        for name, typ in msg.descs:
            if not name or name == M.MACH_PORT_DEAD:
                continue
            try:
                if typ == M.MACH_MSG_TYPE_PORT_RECEIVE:
                    P.mach_port_mod_refs(rt.task_self, name, M.MACH_PORT_RIGHT_RECEIVE, -1,
                                         rt=rt)
                else:
                    P.mach_port_deallocate(rt.task_self, name, rt=rt)
            except MachError:
                pass

    def discard_reply(self, reply: M.Message):
        """A reply that could not be sent (MACH_SEND_INVALID_DEST, _TIMED_OUT): the rights
        it carried came back to us; release them, as mach_msg_server does."""
        moved = [(n, d) for n, d in reply.descs if d in _MOVED]
        if reply.remote_port:
            moved.append((reply.remote_port, reply.remote_disp))
        self._destroy_request_rights(M.Message(msgh_id=0, descs=moved))


def is_send_error(code: int) -> bool:
    return code & 0xFFFFC000 == MACH_SEND_ERRORS_MASK


def is_rcv_error(code: int) -> bool:
    return code & 0xFFFFC000 == MACH_RCV_ERRORS


def reply_send_timeout(reply: M.Message):
    """mach_msg_server's rule: a reply through a send-once right cannot block; a reply
    through a send right is sent with a zero timeout so a full queue cannot wedge us."""
    return None if reply.remote_disp == M.MACH_MSG_TYPE_MOVE_SEND_ONCE else 0
