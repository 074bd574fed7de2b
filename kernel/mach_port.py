"""The mach_port_* calls, served by the kernel on task ports (GNU Mach ipc/mach_port.c).

Each handler is ``fn(task, *args)``: ``task`` is the task whose port the request came
to, names are in that task's space.  Port arguments arrive as (port, type) pairs already
copied in; on an error return the kernel releases them, so a handler checks everything
before it consumes a right.
"""

from __future__ import annotations

from kernel.ipc_mqueue import admit_senders, deliver, fail_waiter
from kernel.ipc_port import IPCPort, IPCPset, ipc_port_clear_receiver, ipc_port_release_send
from kernel.ipc_right import (
    PORT_RECEIVE,
    PORT_SEND,
    PORT_SEND_ONCE,
    ipc_right_copyin,
    ipc_right_copyout,
    ipc_right_destroy,
    release_right,
)
from kernel.ipc_space import T_DEAD_NAME, T_PORT_SET, T_RECEIVE, T_SEND, T_SEND_ONCE
from protocol import message as M
from protocol.defs import mach_port as P
from protocol.defs import machemu as X
from protocol.defs import notify as N
from protocol.kern_return import KernReturn as K
from protocol.kern_return import MachError
from protocol.kern_return import MachMsgReturn as R
from protocol.mig import Demux


def fail(code):
    raise MachError(code)


def _entry(task, name, need=0):
    if name in (M.MACH_PORT_NULL, M.MACH_PORT_DEAD):
        fail(K.KERN_INVALID_NAME)
    e = task.space.lookup(name)
    if e is None:
        fail(K.KERN_INVALID_NAME)
    if need and not e.type & need:
        fail(K.KERN_INVALID_RIGHT)
    return e


def _check_new_name(task, name):
    if name in (M.MACH_PORT_NULL, M.MACH_PORT_DEAD):
        fail(K.KERN_INVALID_VALUE)
    if name in task.space.table:
        fail(K.KERN_NAME_EXISTS)


def _allocate(k, task, right, name=None):
    space = task.space
    if right == M.MACH_PORT_RIGHT_RECEIVE:
        port = IPCPort(receiver=space, qlimit=k.config.qlimit_default)
        k.stats["ports_allocated"] += 1
        return space.insert(port, T_RECEIVE, 0, name)
    if right == M.MACH_PORT_RIGHT_PORT_SET:
        return space.insert(IPCPset(space), T_PORT_SET, 0, name)
    if right == M.MACH_PORT_RIGHT_DEAD_NAME:
        return space.insert(None, T_DEAD_NAME, 1, name)
    fail(K.KERN_INVALID_VALUE)


def make_handlers(k):
    """The mach_port demux, bound to kernel ``k``."""

    def names(task):
        ns, ts = [], []
        for name in list(task.space.table):
            e = task.space.lookup(name)
            ns.append(name)
            ts.append(e.type)
        return ns, ts

    def type_(task, name):
        e = _entry(task, name)
        t = e.type
        if e.object is not None and (task.space, name) in getattr(e.object, "dnrequests", {}):
            t |= M.MACH_PORT_TYPE_DNREQUEST
        return t

    def rename(task, old, new):
        e = _entry(task, old)
        _check_new_name(task, new)
        space = task.space
        space.table[new] = space.table.pop(old)
        obj = e.object
        if obj is not None and e.type & (T_SEND | T_RECEIVE):
            space.reverse[obj.id] = new
        if isinstance(obj, IPCPort) and (space, old) in obj.dnrequests:
            obj.dnrequests[(space, new)] = obj.dnrequests.pop((space, old))

    def allocate_name(task, right, name):
        _check_new_name(task, name)
        _allocate(k, task, right, name)

    def allocate(task, right):
        return _allocate(k, task, right)

    def destroy(task, name):
        _entry(task, name)
        ipc_right_destroy(k, task.space, name)

    def deallocate(task, name):
        space = task.space
        e = _entry(task, name)
        if e.type & T_DEAD_NAME:
            e.urefs -= 1
            if e.urefs <= 0:
                space.remove(name)
        elif e.type & T_SEND_ONCE:
            space.remove(name)
            k.cancel_dnrequest(space, name, e.object)
            release_right(k, e.object, PORT_SEND_ONCE)
        elif e.type & T_SEND:
            port = e.object
            e.urefs -= 1
            if e.urefs == 0:
                e.type &= ~T_SEND
                if not e.type:
                    space.remove(name)
                    k.cancel_dnrequest(space, name, port)
                ipc_port_release_send(k, port)
        else:
            fail(K.KERN_INVALID_RIGHT)

    def get_refs(task, name, right):
        if right >= M.MACH_PORT_RIGHT_NUMBER:
            fail(K.KERN_INVALID_VALUE)
        e = _entry(task, name)
        bit = 1 << (right + 16)
        if not e.type & bit:
            return 0
        if right in (M.MACH_PORT_RIGHT_SEND, M.MACH_PORT_RIGHT_DEAD_NAME):
            return e.urefs
        return 1

    def mod_refs(task, name, right, delta):
        if right >= M.MACH_PORT_RIGHT_NUMBER:
            fail(K.KERN_INVALID_VALUE)
        e = _entry(task, name)
        bit = 1 << (right + 16)
        if not e.type & bit:
            fail(K.KERN_INVALID_RIGHT)
        if right in (M.MACH_PORT_RIGHT_SEND, M.MACH_PORT_RIGHT_DEAD_NAME):
            n = e.urefs + delta
            if n < 0:
                fail(K.KERN_INVALID_VALUE)
            if n > 0xFFFF:
                fail(K.KERN_UREFS_OVERFLOW)
            if n == 0:
                e.urefs = 1
                deallocate(task, name)
            else:
                e.urefs = n
            return
        if delta == 0:
            return
        if delta != -1:
            fail(K.KERN_INVALID_VALUE)
        if right == M.MACH_PORT_RIGHT_RECEIVE:
            port = e.object
            e.type &= ~T_RECEIVE
            if not e.type:
                task.space.remove(name)
            k.ipc_port_destroy(port)
        elif right == M.MACH_PORT_RIGHT_SEND_ONCE:
            deallocate(task, name)
        else:
            ipc_right_destroy(k, task.space, name)

    def set_qlimit(task, name, qlimit):
        e = _entry(task, name, T_RECEIVE)
        if qlimit > M.MACH_PORT_QLIMIT_MAX:
            fail(K.KERN_INVALID_VALUE)
        e.object.mqueue.qlimit = qlimit
        admit_senders(k, e.object)

    def set_mscount(task, name, mscount):
        _entry(task, name, T_RECEIVE).object.mscount = mscount

    def get_set_status(task, name):
        pset = _entry(task, name, T_PORT_SET).object
        return [task.space.reverse[p.id] for p in pset.members.values()
                if p.id in task.space.reverse]

    def move_member(task, member, after):
        port = _entry(task, member, T_RECEIVE).object
        if after == M.MACH_PORT_NULL:
            if port.pset is None:
                fail(K.KERN_NOT_IN_SET)
            port.pset.members.pop(port.id, None)
            port.pset = None
            return
        pset = _entry(task, after, T_PORT_SET).object
        if port.pset is pset:
            return
        if port.pset is not None:
            port.pset.members.pop(port.id, None)
        mq = port.mqueue
        while mq.receivers:  # they were receiving on the port itself
            fail_waiter(k, mq.receivers.popleft(), R.MACH_RCV_PORT_CHANGED)
        port.pset = pset
        pset.members[port.id] = port
        while mq.messages and pset.mqueue.receivers:
            w = pset.mqueue.first_receiver()
            if w is None:
                break
            deliver(k, w.task, w, port, mq.messages.popleft())
            admit_senders(k, port)

    def request_notification(task, name, variant, sync, notify):
        nport, ntype = notify
        if nport is not None and ntype != PORT_SEND_ONCE:
            fail(K.KERN_INVALID_CAPABILITY)
        space = task.space
        if variant == N.MACH_NOTIFY_NO_SENDERS:
            port = _entry(task, name, T_RECEIVE).object
            prev, port.nsrequest, port.nssync = port.nsrequest, nport, sync
            if nport is not None and port.srights == 0 and port.mscount >= sync:
                port.nsrequest = None
                k.notify.no_senders(nport, port.mscount)
        elif variant == N.MACH_NOTIFY_PORT_DESTROYED:
            port = _entry(task, name, T_RECEIVE).object
            if sync != 0:
                fail(K.KERN_INVALID_VALUE)
            prev, port.pdrequest = port.pdrequest, nport
        elif variant == N.MACH_NOTIFY_DEAD_NAME:
            e = _entry(task, name, T_SEND | T_SEND_ONCE | T_DEAD_NAME)
            if e.type & T_DEAD_NAME:
                if nport is not None:
                    if sync == 0:
                        fail(K.KERN_INVALID_ARGUMENT)
                    e.urefs += 1
                    k.notify.dead_name(nport, name)
                return (None, 0)
            port = e.object
            key = (space, name)
            prev = port.dnrequests.pop(key, None)
            if nport is not None:
                port.dnrequests[key] = nport
        else:
            fail(K.KERN_INVALID_VALUE)
        return (prev, PORT_SEND_ONCE) if prev is not None else (None, 0)

    def insert_right(task, name, poly):
        port, typ = poly
        if name in (M.MACH_PORT_NULL, M.MACH_PORT_DEAD):
            fail(K.KERN_INVALID_VALUE)
        if port is None:
            fail(K.KERN_INVALID_CAPABILITY)
        space = task.space
        e = space.lookup(name)
        if typ == PORT_SEND_ONCE:
            if e is not None:
                fail(K.KERN_NAME_EXISTS)
        elif typ in (PORT_SEND, PORT_RECEIVE):
            have = space.reverse.get(port.id)
            if have is not None and have != name:
                fail(K.KERN_RIGHT_EXISTS)
            if e is not None and e.object is not port:
                fail(K.KERN_NAME_EXISTS)
            if typ == PORT_RECEIVE and e is not None and e.type & T_RECEIVE:
                fail(K.KERN_RIGHT_EXISTS)
        else:
            fail(K.KERN_INVALID_VALUE)
        ipc_right_copyout(k, space, port, typ, prefer=name)

    def extract_right(task, name, msgt_name):
        if msgt_name not in M.DISPOSITIONS:
            fail(K.KERN_INVALID_VALUE)
        _entry(task, name)
        r = ipc_right_copyin(k, task.space, name, msgt_name)
        if r is None:
            fail(K.KERN_INVALID_RIGHT)
        return (r[0], r[1])

    def get_receive_status(task, name):
        port = _entry(task, name, T_RECEIVE).object
        pset_name = 0
        if port.pset is not None:
            for n, e in task.space.table.items():
                if e.object is port.pset:
                    pset_name = n
                    break
        return [pset_name, port.seqno, port.mscount, port.mqueue.qlimit,
                len(port.mqueue.messages), port.sorights, int(port.srights > 0),
                int(port.pdrequest is not None), int(port.nsrequest is not None)]

    def set_seqno(task, name, seqno):
        _entry(task, name, T_RECEIVE).object.seqno = seqno

    def get_attributes(task, name, flavor):
        if flavor != X.MACH_PORT_RECEIVE_STATUS:
            fail(K.KERN_INVALID_ARGUMENT)
        port = _entry(task, name, T_RECEIVE).object
        mq = port.mqueue
        waiting = mq.waiting_receivers()
        if port.pset is not None:
            waiting += port.pset.mqueue.waiting_receivers()
        return {"seqno": port.seqno, "mscount": port.mscount, "qlimit": mq.qlimit,
                "msgcount": len(mq.messages), "waiting_receivers": waiting,
                "blocked_senders": mq.blocked_senders(), "srights": port.srights,
                "sorights": port.sorights, "in_set": port.pset is not None,
                "dnrequests": len(port.dnrequests), "nsrequest": port.nsrequest is not None,
                "pdrequest": port.pdrequest is not None}

    return Demux({
        P.mach_port_names: names,
        P.mach_port_type: type_,
        P.mach_port_rename: rename,
        P.mach_port_allocate_name: allocate_name,
        P.mach_port_allocate: allocate,
        P.mach_port_destroy: destroy,
        P.mach_port_deallocate: deallocate,
        P.mach_port_get_refs: get_refs,
        P.mach_port_mod_refs: mod_refs,
        P.mach_port_set_qlimit: set_qlimit,
        P.mach_port_set_mscount: set_mscount,
        P.mach_port_get_set_status: get_set_status,
        P.mach_port_move_member: move_member,
        P.mach_port_request_notification: request_notification,
        P.mach_port_insert_right: insert_right,
        P.mach_port_extract_right: extract_right,
        P.mach_port_get_receive_status: get_receive_status,
        P.mach_port_set_seqno: set_seqno,
        X.mach_port_get_attributes: get_attributes,
    })


__all__ = ["make_handlers", "ipc_port_clear_receiver", "PORT_RECEIVE"]
