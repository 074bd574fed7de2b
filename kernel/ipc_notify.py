"""Notifications the kernel sends (GNU Mach ipc/ipc_notify.c).

Each is a simpleroutine of the notify subsystem sent through a send-once right the
kernel holds, with MACH_SEND_ALWAYS: queue limits do not apply.  The message is encoded
by the routine's request encoder (protocol.mig).
"""

from __future__ import annotations

from kernel.ipc_kmsg import IPCKmsg
from kernel.ipc_right import PORT_RECEIVE, PORT_SEND_ONCE
from protocol.defs import notify as N


class IPCNotify:
    def __init__(self, k):
        self.k = k
        self.sent = 0

    def _send(self, notify_port, routine, args):
        self.sent += 1
        body, descs, _ = routine.encode_request(args, rights=True)
        self.k.kernel_send(IPCKmsg(routine.msgh_id, notify_port, PORT_SEND_ONCE, None, 0,
                                   descs, body))

    def send_once(self, port):
        """ipc_notify_send_once: a send-once right to ``port`` went away unused."""
        self._send(port, N.mach_notify_send_once, ())

    def no_senders(self, notify, mscount):
        """ipc_notify_no_senders."""
        self._send(notify, N.mach_notify_no_senders, (mscount,))

    def dead_name(self, notify, name):
        """ipc_notify_dead_name."""
        self._send(notify, N.mach_notify_dead_name, (name,))

    def port_deleted(self, notify, name):
        """ipc_notify_port_deleted."""
        self._send(notify, N.mach_notify_port_deleted, (name,))

    def port_destroyed(self, notify, port):
        """ipc_notify_port_destroyed: the receive right of ``port`` travels in it."""
        self._send(notify, N.mach_notify_port_destroyed, ((port, PORT_RECEIVE),))
