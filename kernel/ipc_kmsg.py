"""Kernel messages (GNU Mach ipc/ipc_kmsg.c): a message in flight, its copyin from the
sender's space and copyout into the receiver's.

The body and out-of-line frames are carried untouched; only the header's rights are
translated.
"""

from __future__ import annotations

from kernel.ipc_port import ipc_port_check_circularity
from kernel.ipc_right import (
    PORT_RECEIVE,
    SEND_DISPOSITIONS,
    ipc_right_copyin,
    ipc_right_copyin_undo,
    ipc_right_copyout,
    release_right,
)
from protocol import message as M
from protocol.kern_return import MachMsgReturn as R


class IPCKmsg:
    """ikm_header and body: destination right, reply right, port descriptors (each a
    (port, type) pair), the msgpack body and OOL frames.  ``undo`` records how to give
    a failed send's rights back to the sender.  ``sender`` is the sender trailer: the
    sending task's id, 0 (protocol.message.KERNEL_SENDER) for a message the kernel makes
    itself; only mach_msg_trap sets it, from the trapping task."""

    __slots__ = ("msgh_id", "dest", "dest_type", "reply", "reply_type", "descs", "body",
                 "ool", "undo", "size", "ool_objects", "sender")

    def __init__(self, msgh_id, dest, dest_type, reply=None, reply_type=0, descs=(),
                 body=b"\x90", ool=(), undo=None):
        self.msgh_id = msgh_id
        self.dest, self.dest_type = dest, dest_type
        self.reply, self.reply_type = reply, reply_type
        self.descs = descs
        self.body, self.ool = body, ool
        self.undo = undo
        self.size = len(body) + sum(len(f) for f in ool)
        # VM objects holding the pages of out-of-line data (one per OOL frame, or None):
        # mapped into the receiver's address space at delivery (vm_map_copyout)
        self.ool_objects = None
        self.sender = M.KERNEL_SENDER


def ipc_kmsg_copyin(k, space, msgh_id, remote, rdisp, local, ldisp, descs, body, ool):
    """Copy the header's rights in from ``space``.  Returns (kmsg, 0) or (None, code);
    on failure nothing has changed in the space."""
    if rdisp not in SEND_DISPOSITIONS:
        return None, R.MACH_SEND_INVALID_HEADER
    if local and ldisp not in SEND_DISPOSITIONS:
        return None, R.MACH_SEND_INVALID_HEADER
    if remote in (M.MACH_PORT_NULL, M.MACH_PORT_DEAD):
        return None, R.MACH_SEND_INVALID_DEST
    d = ipc_right_copyin(k, space, remote, rdisp)
    if d is None or d[0] is None:
        if d is not None:
            ipc_right_copyin_undo(k, space, *d)
        return None, R.MACH_SEND_INVALID_DEST
    if not d[0].active:
        ipc_right_copyin_undo(k, space, *d)
        return None, R.MACH_SEND_INVALID_DEST
    undo = [(d[0], d[1], d[2])]
    reply, reply_type = None, 0
    if local:
        r = ipc_right_copyin(k, space, local, ldisp)
        if r is None:
            _undo(k, space, undo)
            return None, R.MACH_SEND_INVALID_REPLY
        reply, reply_type = r[0], r[1]
        undo.append(r)
    carried = []
    for i in range(0, len(descs), 2):
        name, disp = descs[i], descs[i + 1]
        if disp not in M.DISPOSITIONS:
            _undo(k, space, undo)
            return None, R.MACH_SEND_INVALID_TYPE
        r = ipc_right_copyin(k, space, name, disp)
        if r is None:
            _undo(k, space, undo)
            return None, R.MACH_SEND_INVALID_RIGHT
        carried.append((r[0], r[1]))
        undo.append(r)
    for port, typ in carried:
        if typ == PORT_RECEIVE:
            if ipc_port_check_circularity(port, d[0]):
                _undo(k, space, undo)
                return None, R.MACH_SEND_INVALID_RIGHT
            port.destination = d[0]
    return IPCKmsg(msgh_id, d[0], d[1], reply, reply_type, carried, body, ool, undo), 0


def _undo(k, space, undo):
    for port, typ, u in reversed(undo):
        ipc_right_copyin_undo(k, space, port, typ, u)


def ipc_kmsg_copyin_undo(k, space, kmsg):
    """A send that failed after copyin (timed out, destination died): the sender gets its
    rights back as if the message had never been sent."""
    if kmsg.undo is None:
        ipc_kmsg_destroy(k, kmsg)
    else:
        _undo(k, space, kmsg.undo)
        kmsg.undo = None


def ipc_kmsg_destroy(k, kmsg):
    """ipc_kmsg_destroy / ipc_kmsg_clean: release every right the message carries.  A
    send-once reply right going away unused sends its port a send-once notification."""
    if kmsg.ool_objects:
        for obj in kmsg.ool_objects:
            if obj is not None:
                k.vm_map_copy_discard(obj)
        kmsg.ool_objects = None
    release_right(k, kmsg.dest, kmsg.dest_type if kmsg.dest is not None else 0)
    release_right(k, kmsg.reply, kmsg.reply_type)
    for port, typ in kmsg.descs:
        release_right(k, port, typ)
    kmsg.descs = ()
    kmsg.dest = kmsg.reply = None


def ipc_kmsg_copyout(k, space, kmsg):
    """Give the receiver the message's rights.  Returns (reply_name, descs_flat)."""
    reply_name = ipc_right_copyout(k, space, kmsg.reply, kmsg.reply_type)
    flat = []
    for port, typ in kmsg.descs:
        flat.append(ipc_right_copyout(k, space, port, typ))
        flat.append(typ)
    return reply_name, flat
