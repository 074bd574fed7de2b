"""Ports and port sets (GNU Mach ipc/ipc_port.c, ipc/ipc_pset.c): their reference counts,
the circularity check, destruction.

A port's reference counts follow Mach: ``srights`` counts send rights (a space holding a
send right with any number of user references counts once; a right in a message counts
once), ``sorights`` counts send-once rights, ``mscount`` is the make-send count used by
no-senders notifications.  ``receiver`` is the space holding the receive right, None
while the right is in transit, ``KERNEL`` for ports the kernel serves itself.
"""

from __future__ import annotations

import itertools

from protocol.kern_return import MachMsgReturn as R
from protocol.message import MACH_PORT_QLIMIT_DEFAULT

KERNEL = "kernel"  # receiver of kernel-served (kobject) ports

_ids = itertools.count(1)


class IPCPort:
    __slots__ = ("id", "active", "receiver", "kobject", "kotype", "mqueue", "srights",
                 "sorights", "mscount", "nsrequest", "nssync", "pdrequest", "dnrequests",
                 "pset", "seqno", "label", "destination", "__weakref__")

    def __init__(self, receiver=None, kobject=None, kotype=None,
                 qlimit: int = MACH_PORT_QLIMIT_DEFAULT, label: str = ""):
        # ipc_mqueue's routines work on ports: its struct is imported at use.
        from kernel.ipc_mqueue import IPCMQueue

        self.id = next(_ids)
        self.active = True
        self.receiver = receiver
        self.kobject = kobject
        self.kotype = kotype
        self.mqueue = IPCMQueue(qlimit)
        self.srights = 0
        self.sorights = 0
        self.mscount = 0
        self.nsrequest = None  # IPCPort the no-senders notification goes to (send-once)
        self.nssync = 0
        self.pdrequest = None  # IPCPort the port-destroyed notification goes to
        self.dnrequests = {}  # (space, name) -> notify IPCPort (send-once)
        self.pset = None
        self.seqno = 0
        self.label = label
        self.destination = None  # while the receive right is in transit: where it goes

    def __repr__(self):
        state = "" if self.active else " dead"
        return f"<port {self.id}{' ' + self.label if self.label else ''}{state}>"


class IPCPset:
    """A port set: receivers wait on the set; messages stay in the member ports."""

    __slots__ = ("id", "active", "space", "members", "mqueue", "rr")

    def __init__(self, space):
        from kernel.ipc_mqueue import IPCMQueue

        self.id = next(_ids)
        self.active = True
        self.space = space
        self.members: dict[int, IPCPort] = {}  # ordered; round robin over it
        self.mqueue = IPCMQueue(0)
        self.rr = 0

    def __repr__(self):
        return f"<pset {self.id} ({len(self.members)} members)>"


# ------------------------------------------------------------ reference counts

def ipc_port_make_send(port):
    """ipc_port_make_send: a new send right, made from the receive right."""
    port.mscount += 1
    port.srights += 1


def ipc_port_copy_send(port):
    """ipc_port_copy_send: one more send right, copied from one held."""
    port.srights += 1


def ipc_port_release_send(k, port):
    """ipc_port_release_send: drop one send right; the last one going fires a requested
    no-senders notification."""
    port.srights -= 1
    if port.srights == 0 and port.nsrequest is not None and port.active:
        if port.mscount >= port.nssync:
            notify, port.nsrequest = port.nsrequest, None
            k.notify.no_senders(notify, port.mscount)


def ipc_port_make_sonce(port):
    """ipc_port_make_sonce: a new send-once right, made from the receive right."""
    port.sorights += 1


def ipc_port_release_sonce(port):
    """ipc_port_release_sonce: a send-once right goes without a message."""
    port.sorights -= 1


def ipc_port_check_circularity(port, dest) -> bool:
    """ipc_port_check_circularity: would sending ``port``'s receive right to ``dest`` put
    it inside its own queue (directly, or through ports in transit)?  GNU Mach destroys
    such a message; machemu refuses the send, which leaves the sender's rights intact."""
    x = dest
    while x is not None:
        if x is port:
            return True
        if x.receiver is not None:
            return False
        x = x.destination
    return False


# ------------------------------------------------------------ destruction

def ipc_port_clear_receiver(k, port):
    """The receive right leaves its space (moved or destroyed): out of its port set,
    and the threads waiting to receive on it are told the port is gone."""
    from kernel.ipc_mqueue import fail_waiter

    if port.pset is not None:
        port.pset.members.pop(port.id, None)
        port.pset = None
    mq = port.mqueue
    while mq.receivers:
        fail_waiter(k, mq.receivers.popleft(), R.MACH_RCV_PORT_DIED)
    port.receiver = None
    port.mscount = 0  # as GNU Mach's ipc_port_clear_receiver
    port.seqno = 0


def ipc_port_destroy(k, port):
    """Destroy a receive right (GNU Mach ipc_port_destroy).

    With a port-destroyed request the right is sent to the requester instead.  Otherwise
    the port dies: its queued messages are destroyed (their send-once reply rights
    produce send-once notifications, which is how a client waiting for a reply learns
    the server is gone), blocked senders fail with MACH_SEND_INVALID_DEST, and every
    registered dead-name request is answered.
    """
    from kernel.ipc_kmsg import ipc_kmsg_destroy
    from kernel.ipc_mqueue import fail_waiter
    from kernel.ipc_right import PORT_SEND_ONCE, release_right

    if not port.active:
        return
    if port.pdrequest is not None and port.pdrequest.active:
        notify, port.pdrequest = port.pdrequest, None
        ipc_port_clear_receiver(k, port)
        k.notify.port_destroyed(notify, port)
        return
    ipc_port_clear_receiver(k, port)
    port.active = False
    port.kobject = None
    k.stats["ports_destroyed"] += 1
    vm = getattr(k, "vm", None)
    if vm is not None and port.id in vm.pager_objects:
        k.vm_object_pager_died(vm.pager_objects[port.id])
    if port.pdrequest is not None:
        release_right(k, port.pdrequest, PORT_SEND_ONCE)
        port.pdrequest = None
    if port.nsrequest is not None:
        release_right(k, port.nsrequest, PORT_SEND_ONCE)
        port.nsrequest = None
    requests, port.dnrequests = port.dnrequests, {}
    for (space, name), notify in requests.items():
        e = space.table.get(name) if space.active else None
        if e is not None and e.object is port:
            space.make_dead(name, e)
            e.urefs += 1  # the notification carries a reference to the dead name
        k.notify.dead_name(notify, name)
    mq = port.mqueue
    while mq.senders:
        fail_waiter(k, mq.senders.popleft(), R.MACH_SEND_INVALID_DEST)
    while mq.messages:
        ipc_kmsg_destroy(k, mq.messages.popleft())


def ipc_pset_destroy(k, pset):
    """ipc_pset_destroy: the set goes; its members stay, its receivers fail."""
    from kernel.ipc_mqueue import fail_waiter

    pset.active = False
    for port in list(pset.members.values()):
        port.pset = None
    pset.members.clear()
    while pset.mqueue.receivers:
        fail_waiter(k, pset.mqueue.receivers.popleft(), R.MACH_RCV_PORT_DIED)
