"""Mach message constants and the wire layout of a message (include/mach/message.h).

A message crosses ZeroMQ as frames: a small msgpack header, a msgpack body, then one raw
frame per out-of-line datum.  The kernel decodes and rewrites only the header: names and
rights are per task.  A body addressed to a task's port is forwarded untouched.

Task -> kernel header (a msgpack array), a trap; its fields are read by the H_* indices:
    [OP_MSG, thread, seq, option, send_timeout_ms, rcv_name, rcv_timeout_ms,
     msgh_id, remote_name, remote_disp, local_name, local_disp, descs(, dealloc)]
    ``dealloc`` (optional): [address, size, ...] of out-of-line regions the task is done
    with; the kernel vm_deallocates them before the trap (the runtime's way of doing
    what a C program does with vm_deallocate after using received data).
    [OP_HELLO, thread, seq, pid, task_name, role(, secret)]
    ``secret`` (optional, bin, at most 64 bytes): the cluster owner's secret
    (protocol.host_secret); the right one earns the task a send right to the privileged
    host port, a wrong one is counted (``host_priv_refused``) and gets none.
    [OP_REPLY_PORT, thread, seq]                                      (mach_reply_port)
    [OP_HEARTBEAT]
    [OP_BYE]
Kernel -> task header, an answer; its fields are read by the A_* indices:
    [K_RESULT, thread, seq, code(, value)]    (send done / error; value: a trap's result)
    [K_MSG, thread, seq, 0, msgh_id, remote_name, remote_type,
     local_name, local_type, descs, msgh_seqno, ool_addrs, sender]    (a received message)
    ``sender``: the sender trailer, filled by the kernel (as xnu's audit trailer): the id
    of the task that sent the message, 0 for a message the kernel sent itself
    (notifications, memory_object_* to pagers, replies of kernel routines).  Task ids
    are never 0, and no task can choose what the kernel writes there.
    [K_HELLO, thread, seq, code, task_self, host, name_server, task_id, host_priv]
    ``host_priv``: the name of the privileged host port's send right, MACH_PORT_NULL
    unless the hello carried the owner's secret.
    [K_DISCONNECT, 0, 0, code]                          (the kernel dropped this task)
    [K_BATCH, n1, n2, ...]  then n1 frames of the first answer, n2 of the second...
Thread 0 is the task's I/O thread: heartbeat answers and K_DISCONNECT go to it.

``descs`` is a flat list ``[name, disposition, name, disposition, ...]`` naming the port
rights carried in the body's port fields, in order.  In a received message each
disposition is replaced by the type of right the receiver now holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

# Port names.
MACH_PORT_NULL = 0
MACH_PORT_DEAD = 0xFFFFFFFF

# Message type names (dispositions) for ports.
MACH_MSG_TYPE_MOVE_RECEIVE = 16
MACH_MSG_TYPE_MOVE_SEND = 17
MACH_MSG_TYPE_MOVE_SEND_ONCE = 18
MACH_MSG_TYPE_COPY_SEND = 19
MACH_MSG_TYPE_MAKE_SEND = 20
MACH_MSG_TYPE_MAKE_SEND_ONCE = 21
# What the receiver holds after copyout.
MACH_MSG_TYPE_PORT_NAME = 15
MACH_MSG_TYPE_PORT_RECEIVE = MACH_MSG_TYPE_MOVE_RECEIVE
MACH_MSG_TYPE_PORT_SEND = MACH_MSG_TYPE_MOVE_SEND
MACH_MSG_TYPE_PORT_SEND_ONCE = MACH_MSG_TYPE_MOVE_SEND_ONCE

DISPOSITIONS = frozenset(range(MACH_MSG_TYPE_MOVE_RECEIVE, MACH_MSG_TYPE_MAKE_SEND_ONCE + 1))

# mach_msg options.
MACH_MSG_OPTION_NONE = 0
MACH_SEND_MSG = 0x00000001
MACH_RCV_MSG = 0x00000002
MACH_SEND_TIMEOUT = 0x00000010
MACH_SEND_NOTIFY = 0x00000020
MACH_SEND_INTERRUPT = 0x00000040
MACH_SEND_CANCEL = 0x00000080
MACH_RCV_TIMEOUT = 0x00000100
MACH_RCV_NOTIFY = 0x00000200
MACH_RCV_INTERRUPT = 0x00000400
MACH_RCV_LARGE = 0x00000800
MACH_SEND_ALWAYS = 0x00010000

# mach_port_allocate rights (include/mach/port.h).
MACH_PORT_RIGHT_SEND = 0
MACH_PORT_RIGHT_RECEIVE = 1
MACH_PORT_RIGHT_SEND_ONCE = 2
MACH_PORT_RIGHT_PORT_SET = 3
MACH_PORT_RIGHT_DEAD_NAME = 4
MACH_PORT_RIGHT_NUMBER = 5

# mach_port_type_t bits.
MACH_PORT_TYPE_SEND = 1 << (MACH_PORT_RIGHT_SEND + 16)
MACH_PORT_TYPE_RECEIVE = 1 << (MACH_PORT_RIGHT_RECEIVE + 16)
MACH_PORT_TYPE_SEND_ONCE = 1 << (MACH_PORT_RIGHT_SEND_ONCE + 16)
MACH_PORT_TYPE_PORT_SET = 1 << (MACH_PORT_RIGHT_PORT_SET + 16)
MACH_PORT_TYPE_DEAD_NAME = 1 << (MACH_PORT_RIGHT_DEAD_NAME + 16)
MACH_PORT_TYPE_SEND_RECEIVE = MACH_PORT_TYPE_SEND | MACH_PORT_TYPE_RECEIVE
MACH_PORT_TYPE_DNREQUEST = 0x80000000

# Queue limits (include/mach/port.h).
MACH_PORT_QLIMIT_DEFAULT = 5
MACH_PORT_QLIMIT_MAX = 16

# Wire operations, task -> kernel.
OP_MSG = 1
OP_HELLO = 2
OP_HEARTBEAT = 3
OP_BYE = 4
OP_REPLY_PORT = 5  # the mach_reply_port trap
# Wire kinds, kernel -> task.
K_RESULT = 1
K_MSG = 2
K_HELLO = 3
K_DISCONNECT = 4  # the kernel dropped this task
K_BATCH = 5  # several answers in one message

# Header fields.  Module-level integers, so that reading a field by name costs what a
# literal index does on the kernel's per-message path.
H_OP = 0  # every trap: OP_*
H_THREAD = 1  # the sending thread (0: the runtime's I/O thread)
H_SEQ = 2  # the thread's trap number: the answer carries it back
# OP_MSG
H_OPTION = 3
H_SEND_TIMEOUT = 4
H_RCV_NAME = 5
H_RCV_TIMEOUT = 6
H_ID = 7  # msgh_id
H_REMOTE = 8  # msgh_remote_port: the destination
H_REMOTE_DISP = 9
H_LOCAL = 10  # msgh_local_port: the reply port
H_LOCAL_DISP = 11
H_DESCS = 12
H_DEALLOC = 13  # optional
# OP_HELLO
H_PID = 3
H_TASK_NAME = 4
H_ROLE = 5
H_SECRET = 6  # optional

A_KIND = 0  # every answer: K_*
A_THREAD = 1
A_SEQ = 2
A_CODE = 3  # K_RESULT, K_HELLO, K_DISCONNECT (0 in K_MSG)
A_VALUE = 4  # K_RESULT, optional: the trap's result (mach_reply_port: the name)
A_COUNTS = 1  # K_BATCH: the first frame count
# K_MSG
A_ID = 4
A_REMOTE = 5  # msgh_remote_port: the reply right
A_REMOTE_TYPE = 6
A_LOCAL = 7  # msgh_local_port: the port received on
A_LOCAL_TYPE = 8
A_DESCS = 9
A_SEQNO = 10
A_OOL_ADDRS = 11
A_SENDER = 12  # the sender trailer: the sending task's id, 0 for the kernel
# K_HELLO
A_TASK_SELF = 4
A_HOST = 5
A_NAME_SERVER = 6
A_TASK_ID = 7
A_HOST_PRIV = 8

# The sender trailer's value for a message the kernel sent (task ids start at 1).
KERNEL_SENDER = 0

# Bounds every peer is held to.
MAX_FRAMES = 2 + 8  # header, body, at most 8 out-of-line frames
MAX_HEADER_BYTES = 4096
MAX_BODY_BYTES = 256 * 1024
MAX_OOL_BYTES = 4 * 1024 * 1024  # one out-of-line frame: 1024 pages
MAX_MESSAGE_BYTES = MAX_HEADER_BYTES + MAX_BODY_BYTES + 8 * MAX_OOL_BYTES
MAX_DESCRIPTORS = 64
MAX_OOL_DEALLOC = 64  # OOL regions a trap may give back (see OP_MSG)
MAX_TIMEOUT_MS = 24 * 3600 * 1000
NATURAL_MAX = 0xFFFFFFFF
THREAD_MAX = 0x7FFFFFFF

_packb = msgpack.Packer(use_bin_type=True).pack


def packb(obj) -> bytes:
    """msgpack-encode: str as str, bytes as bin."""
    return _packb(obj)


def unpackb(data) -> object:
    """msgpack-decode strictly: no ext types, bounded container and string sizes."""
    return msgpack.unpackb(
        data,
        raw=False,
        strict_map_key=True,
        max_bin_len=MAX_BODY_BYTES,
        max_str_len=MAX_BODY_BYTES,
        max_array_len=MAX_BODY_BYTES // 2,
        max_map_len=4096,
        max_ext_len=0,
    )


@dataclass(slots=True)
class Message:
    """A Mach message as a task sees it (mach_msg_header_t plus body and OOL data).

    ``remote_port`` is msgh_remote_port: the destination when sending, the reply right
    when received.  ``local_port`` is msgh_local_port: the reply port when sending, the
    port it was received on when received.  ``descs`` holds (name, disposition) pairs on
    send, (name, type) pairs on receive.  ``body`` is msgpack bytes; ``ool`` raw frames.
    ``sender`` is the kernel's sender trailer of a received message (A_SENDER): who sent
    it, KERNEL_SENDER for the kernel; a server believes kernel-only messages
    (notifications, memory_object_*) only when it is KERNEL_SENDER.
    """

    msgh_id: int
    remote_port: int = MACH_PORT_NULL
    remote_disp: int = 0
    local_port: int = MACH_PORT_NULL
    local_disp: int = 0
    descs: list = field(default_factory=list)
    body: bytes = b"\x90"
    ool: list = field(default_factory=list)
    seqno: int = 0
    # Where the kernel mapped page-backed OOL data in this task (0: not mapped); the
    # receiver vm_deallocates each region when done with it.
    ool_addrs: list = field(default_factory=list)
    # The sender trailer of a received message: the sending task's id, KERNEL_SENDER (0)
    # when the kernel sent it; None for a message not received from the kernel.
    sender: int | None = None
