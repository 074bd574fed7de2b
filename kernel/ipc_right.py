"""Rights: copyin from a space into a message, copyout into a space, release and destroy
(GNU Mach ipc/ipc_right.c, ipc/ipc_object.c).

A right in transit is a pair ``(port, type)`` with type one of MACH_MSG_TYPE_PORT_SEND,
_PORT_SEND_ONCE, _PORT_RECEIVE; a dead name in transit is ``(None, PORT_SEND)`` and
copies out as MACH_PORT_DEAD; MACH_PORT_NULL is ``(None, 0)``.
"""

from __future__ import annotations

from kernel.ipc_port import (
    ipc_port_copy_send,
    ipc_port_make_send,
    ipc_port_make_sonce,
    ipc_port_release_send,
)
from kernel.ipc_space import (
    MACH_PORT_UREFS_MAX,
    T_DEAD_NAME,
    T_RECEIVE,
    T_SEND,
    T_SEND_ONCE,
    IPCSpace,
)
from protocol import message as M

PORT_SEND = M.MACH_MSG_TYPE_PORT_SEND
PORT_SEND_ONCE = M.MACH_MSG_TYPE_PORT_SEND_ONCE
PORT_RECEIVE = M.MACH_MSG_TYPE_PORT_RECEIVE

NULL_RIGHT = (None, 0, None)
SEND_DISPOSITIONS = frozenset((M.MACH_MSG_TYPE_MOVE_SEND, M.MACH_MSG_TYPE_MOVE_SEND_ONCE,
                               M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MAKE_SEND,
                               M.MACH_MSG_TYPE_MAKE_SEND_ONCE))


def release_right(k, port, typ):
    """ipc_object_destroy: a right in transit (or held by the kernel) goes away unused."""
    if port is None:
        return
    if typ == PORT_SEND:
        ipc_port_release_send(k, port)
    elif typ == PORT_SEND_ONCE:
        if port.active:
            k.notify.send_once(port)
        else:
            port.sorights -= 1
    elif typ == PORT_RECEIVE:
        k.ipc_port_destroy(port)


# ------------------------------------------------------------ copyin

def ipc_right_copyin(k, space: IPCSpace, name: int, disp: int):
    """Take the right ``disp`` names out of ``space``.

    Returns (port, type, undo) where undo lets a failed send put everything back
    (ipc_kmsg_copyin's error path); None if the space has no such right.
    """
    if name == M.MACH_PORT_NULL:
        return NULL_RIGHT
    if name == M.MACH_PORT_DEAD:
        return (None, PORT_SEND, None) if disp in SEND_DISPOSITIONS else None
    e = space.lookup(name)
    if e is None:
        return None
    if disp == M.MACH_MSG_TYPE_MOVE_RECEIVE:
        if not e.type & T_RECEIVE:
            return None
        port = e.object
        k.ipc_port_clear_receiver(port)
        e.type &= ~T_RECEIVE
        if not e.type:
            space.remove(name)
        return port, PORT_RECEIVE, ("recv", name)
    if e.type & T_DEAD_NAME:
        if disp in (M.MACH_MSG_TYPE_COPY_SEND, M.MACH_MSG_TYPE_MOVE_SEND,
                    M.MACH_MSG_TYPE_MOVE_SEND_ONCE):
            if disp != M.MACH_MSG_TYPE_COPY_SEND:
                e.urefs -= 1
                if e.urefs <= 0:
                    space.remove(name)
            return None, PORT_SEND, None
        return None
    port = e.object
    if disp == M.MACH_MSG_TYPE_COPY_SEND:
        if not e.type & T_SEND:
            return None
        ipc_port_copy_send(port)
        return port, PORT_SEND, ("quiet_send", name)
    if disp == M.MACH_MSG_TYPE_MOVE_SEND:
        if not e.type & T_SEND:
            return None
        e.urefs -= 1
        if e.urefs == 0:
            e.type &= ~T_SEND
            if not e.type & T_RECEIVE:
                space.remove(name)
                k.cancel_dnrequest(space, name, port)
            # the space's one counted send right now travels in the message
        else:
            ipc_port_copy_send(port)
        return port, PORT_SEND, ("send", name)
    if disp == M.MACH_MSG_TYPE_MOVE_SEND_ONCE:
        if not e.type & T_SEND_ONCE:
            return None
        space.remove(name)
        k.cancel_dnrequest(space, name, port)
        return port, PORT_SEND_ONCE, ("so", name)
    if disp == M.MACH_MSG_TYPE_MAKE_SEND:
        if not e.type & T_RECEIVE:
            return None
        ipc_port_make_send(port)
        return port, PORT_SEND, ("quiet_send", name)
    if disp == M.MACH_MSG_TYPE_MAKE_SEND_ONCE:
        if not e.type & T_RECEIVE:
            return None
        ipc_port_make_sonce(port)
        return port, PORT_SEND_ONCE, ("quiet_so", name)
    return None


def ipc_right_copyin_undo(k, space: IPCSpace, port, typ, undo):
    """Put back what ipc_right_copyin took (a send that failed after copyin)."""
    if undo is None or port is None:
        return
    how, name = undo
    if how == "quiet_send":
        port.srights -= 1
    elif how == "quiet_so":
        port.sorights -= 1
    elif space.active:
        ipc_right_copyout(k, space, port, typ, prefer=name)
    else:
        release_right(k, port, typ)


# ------------------------------------------------------------ copyout

def ipc_right_copyout(k, space: IPCSpace, port, typ, prefer: int | None = None) -> int:
    """ipc_object_copyout: give ``space`` the right, return its name for it."""
    if port is None:
        return M.MACH_PORT_DEAD if typ else M.MACH_PORT_NULL
    if not port.active:
        if typ == PORT_SEND:
            port.srights -= 1
        elif typ == PORT_SEND_ONCE:
            port.sorights -= 1
        return M.MACH_PORT_DEAD
    table = space.table
    if typ == PORT_SEND_ONCE:
        if prefer is not None and prefer not in table:
            return space.insert(port, T_SEND_ONCE, 0, prefer)
        return space.insert(port, T_SEND_ONCE)
    name = space.reverse.get(port.id)
    if typ == PORT_SEND:
        if name is not None:
            e = table[name]
            if e.type & T_SEND:
                port.srights -= 1  # merged into the right the space already counts
                if e.urefs < MACH_PORT_UREFS_MAX:
                    e.urefs += 1
            else:
                e.type |= T_SEND
                e.urefs = 1
            return name
        if prefer is not None and prefer not in table:
            return space.insert(port, T_SEND, 1, prefer)
        return space.insert(port, T_SEND, 1)
    if typ == PORT_RECEIVE:
        port.receiver = space
        port.destination = None
        if name is not None:
            table[name].type |= T_RECEIVE
            return name
        if prefer is not None and prefer not in table:
            return space.insert(port, T_RECEIVE, 0, prefer)
        return space.insert(port, T_RECEIVE)
    raise ValueError(f"bad right type {typ}")


def ipc_right_destroy(k, space: IPCSpace, name: int):
    """mach_port_destroy / task teardown: every right the name denotes goes away."""
    from kernel.ipc_port import ipc_pset_destroy
    from kernel.ipc_space import T_PORT_SET

    e = space.lookup(name)
    if e is None:
        return False
    space.remove(name)
    obj, typ = e.object, e.type
    if typ & T_PORT_SET:
        ipc_pset_destroy(k, obj)
        return True
    if obj is None:
        return True  # a dead name
    if typ & (T_SEND | T_SEND_ONCE):
        k.cancel_dnrequest(space, name, obj)
    if typ & T_RECEIVE:
        k.ipc_port_destroy(obj)
        if typ & T_SEND:
            ipc_port_release_send(k, obj)
        return True
    if typ & T_SEND:
        ipc_port_release_send(k, obj)
    if typ & T_SEND_ONCE:
        release_right(k, obj, PORT_SEND_ONCE)
    return True
