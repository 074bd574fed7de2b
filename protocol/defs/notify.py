"""notify subsystem 64 (GNU Mach include/mach/notify.defs): messages the kernel sends.

All are simpleroutines sent to the notify port with the send-once right that
mach_port_request_notification registered (MACH_NOTIFY_FIRST = 0100).
"""

from protocol import message as M
from protocol.mig import Subsystem, mach_port_move_receive_t, mach_port_name_t, natural_t

notify = Subsystem("notify", 0o100)
MACH_NOTIFY_FIRST = 0o100
MACH_NOTIFY_PORT_DELETED = 0o101
MACH_NOTIFY_MSG_ACCEPTED = 0o102
MACH_NOTIFY_PORT_DESTROYED = 0o105
MACH_NOTIFY_NO_SENDERS = 0o106
MACH_NOTIFY_SEND_ONCE = 0o107
MACH_NOTIFY_DEAD_NAME = 0o110
MACH_NOTIFY_LAST = 0o777

_so = {"dest_disp": M.MACH_MSG_TYPE_MOVE_SEND_ONCE}

mach_notify_port_deleted = notify.simpleroutine(
    "mach_notify_port_deleted", 1, [("name", mach_port_name_t)], **_so)
mach_notify_msg_accepted = notify.simpleroutine(
    "mach_notify_msg_accepted", 2, [("name", mach_port_name_t)], **_so)
mach_notify_port_destroyed = notify.simpleroutine(
    "mach_notify_port_destroyed", 5, [("rights", mach_port_move_receive_t)], **_so)
mach_notify_no_senders = notify.simpleroutine(
    "mach_notify_no_senders", 6, [("mscount", natural_t)], **_so)
mach_notify_send_once = notify.simpleroutine("mach_notify_send_once", 7, [], **_so)
mach_notify_dead_name = notify.simpleroutine(
    "mach_notify_dead_name", 8, [("name", mach_port_name_t)], **_so)
