"""Notifications the kernel sends (GNU Mach ipc/ipc_notify.c).

Each is a simpleroutine of the notify subsystem sent through a send-once right the
kernel holds, with MACH_SEND_ALWAYS: queue limits do not apply.
"""

from __future__ import annotations

from kernel.ipc_kmsg import IPCKmsg
from kernel.ipc_right import PORT_RECEIVE, PORT_SEND_ONCE
from protocol import message as M
from protocol.defs import notify as N

_EMPTY = M.packb([])


class IPCNotify:
    def __init__(self, k):
        self.k = k
        self.sent = 0

    def _send(self, notify_port, routine, body_vals, descs=()):
        self.sent += 1
        kmsg = IPCKmsg(routine.msgh_id, notify_port, PORT_SEND_ONCE, None, 0, list(descs),
                       M.packb(body_vals) if body_vals else _EMPTY)
        self.k.kernel_send(kmsg)

    def send_once(self, port):
        """ipc_notify_send_once: a send-once right to ``port`` went away unused."""
        self._send(port, N.mach_notify_send_once, [])

    def no_senders(self, notify, mscount):
        self._send(notify, N.mach_notify_no_senders, [mscount])

    def dead_name(self, notify, name):
        self._send(notify, N.mach_notify_dead_name, [name])

    def port_deleted(self, notify, name):
        self._send(notify, N.mach_notify_port_deleted, [name])

    def port_destroyed(self, notify, port):
        """The receive right of ``port`` travels in the notification."""
        self._send(notify, N.mach_notify_port_destroyed, [], [(port, PORT_RECEIVE)])
