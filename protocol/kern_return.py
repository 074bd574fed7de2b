"""Return codes with GNU Mach's numeric values.

``KernReturn`` is ``kern_return_t`` (include/mach/kern_return.h); ``MachMsgReturn`` is
``mach_msg_return_t`` (include/mach/message.h); the MIG codes are from mig_errors.h.
"""

from __future__ import annotations

import enum


class KernReturn(enum.IntEnum):
    KERN_SUCCESS = 0
    KERN_INVALID_ADDRESS = 1
    KERN_PROTECTION_FAILURE = 2
    KERN_NO_SPACE = 3
    KERN_INVALID_ARGUMENT = 4
    KERN_FAILURE = 5
    KERN_RESOURCE_SHORTAGE = 6
    KERN_NOT_RECEIVER = 7
    KERN_NO_ACCESS = 8
    KERN_MEMORY_FAILURE = 9
    KERN_MEMORY_ERROR = 10
    KERN_ALREADY_IN_SET = 11
    KERN_NOT_IN_SET = 12
    KERN_NAME_EXISTS = 13
    KERN_ABORTED = 14
    KERN_INVALID_NAME = 15
    KERN_INVALID_TASK = 16
    KERN_INVALID_RIGHT = 17
    KERN_INVALID_VALUE = 18
    KERN_UREFS_OVERFLOW = 19
    KERN_INVALID_CAPABILITY = 20
    KERN_RIGHT_EXISTS = 21
    KERN_INVALID_HOST = 22
    KERN_MEMORY_PRESENT = 23
    KERN_WRITE_PROTECTION_FAILURE = 24
    KERN_TERMINATED = 26


class MachMsgReturn(enum.IntEnum):
    MACH_MSG_SUCCESS = 0x00000000
    MACH_SEND_IN_PROGRESS = 0x10000001
    MACH_SEND_INVALID_DATA = 0x10000002
    MACH_SEND_INVALID_DEST = 0x10000003
    MACH_SEND_TIMED_OUT = 0x10000004
    MACH_SEND_WILL_NOTIFY = 0x10000005
    MACH_SEND_NOTIFY_IN_PROGRESS = 0x10000006
    MACH_SEND_INTERRUPTED = 0x10000007
    MACH_SEND_MSG_TOO_SMALL = 0x10000008
    MACH_SEND_INVALID_REPLY = 0x10000009
    MACH_SEND_INVALID_RIGHT = 0x1000000A
    MACH_SEND_INVALID_NOTIFY = 0x1000000B
    MACH_SEND_INVALID_MEMORY = 0x1000000C
    MACH_SEND_NO_BUFFER = 0x1000000D
    MACH_SEND_NO_NOTIFY = 0x1000000E
    MACH_SEND_INVALID_TYPE = 0x1000000F
    MACH_SEND_INVALID_HEADER = 0x10000010
    MACH_RCV_IN_PROGRESS = 0x10004001
    MACH_RCV_INVALID_NAME = 0x10004002
    MACH_RCV_TIMED_OUT = 0x10004003
    MACH_RCV_TOO_LARGE = 0x10004004
    MACH_RCV_INTERRUPTED = 0x10004005
    MACH_RCV_PORT_CHANGED = 0x10004006
    MACH_RCV_INVALID_NOTIFY = 0x10004007
    MACH_RCV_INVALID_DATA = 0x10004008
    MACH_RCV_PORT_DIED = 0x10004009
    MACH_RCV_IN_SET = 0x1000400A
    MACH_RCV_HEADER_ERROR = 0x1000400B
    MACH_RCV_BODY_ERROR = 0x1000400C


class MigReturn(enum.IntEnum):
    MIG_TYPE_ERROR = -300
    MIG_REPLY_MISMATCH = -301
    MIG_REMOTE_ERROR = -302
    MIG_BAD_ID = -303
    MIG_BAD_ARGUMENTS = -304
    MIG_NO_REPLY = -305
    MIG_EXCEPTION = -306
    MIG_ARRAY_TOO_LARGE = -307
    MIG_SERVER_DIED = -308
    MIG_DESTROY_REQUEST = -309


def code_name(code: int) -> str:
    """Symbolic name of a kern_return_t, mach_msg_return_t or MIG code."""
    for enum_type in (KernReturn, MachMsgReturn, MigReturn):
        try:
            return enum_type(code).name
        except ValueError:
            continue
    return f"error {code:#x}" if code > 0 else f"error {code}"


class MachError(Exception):
    """A Mach call returned something other than KERN_SUCCESS."""

    def __init__(self, code: int, what: str = ""):
        self.code = int(code)
        self.what = what
        super().__init__(f"{what + ': ' if what else ''}{code_name(self.code)} ({self.code:#x})")


def ok(code: int) -> bool:
    return code == 0
