"""machemu private subsystem 4800: what GNU Mach has no routine for.

Introspection a person reads (``scripts/launch status``), the OSF-style
``mach_port_get_attributes`` that exposes kernel facts GNU Mach keeps private
(waiting receivers, blocked senders), and what the inspection tools (lab/tools:
vminfo, portinfo) need on host_priv: another task's kernel port (the Hurd's tools get it
from proc_pid2task), its map's summary and the identity of the ports its names denote;
and the kernel's message trace (``rpctrace``).
"""

from protocol.mig import (
    Blob,
    Subsystem,
    int64_t,
    mach_port_name_t,
    mach_port_send_t,
    natural_t,
    vm_address_t,
)

machemu = Subsystem("machemu", 4800)

MACH_PORT_RECEIVE_STATUS = 2  # flavor of mach_port_get_attributes

# Request port: the host port.  Reply: {"tasks": [...], "ports": [...], "stats": {...}}.
machemu_kernel_info = machemu.routine("machemu_kernel_info", 0, [], [("info", Blob())])
# Request port: a task port.  Reply: a dict of the receive right's status.
mach_port_get_attributes = machemu.routine(
    "mach_port_get_attributes", 1, [("name", mach_port_name_t), ("flavor", natural_t)],
    [("info", Blob())])
# Request port: the host port.  Ends the kernel cleanly (the launcher's stop).
machemu_shutdown = machemu.routine("machemu_shutdown", 2, [])

# 4803..4809: the inspection tools' routines, on host_priv (KERN_INVALID_HOST on the
# plain host port).  A task argument is a send right to a task's kernel port.
TASK_BY_ID = 0   # machemu_task_for_id flavors: ``id`` is the kernel's task id,
TASK_BY_PID = 1  #   or a process id (the newest task of that process)
# Reply: a send right to the task's kernel port; KERN_INVALID_ARGUMENT for no such task.
machemu_task_for_id = machemu.routine(
    "machemu_task_for_id", 3, [("id", natural_t), ("flavor", natural_t)],
    [("task", mach_port_send_t)])
# Reply: the map's summary and at most ``count`` of its entries from ``address`` on
# (the one containing it first), with their objects; ``next`` is where the following
# page starts (0: no more).
machemu_vm_map_info = machemu.routine(
    "machemu_vm_map_info", 4,
    [("task", mach_port_send_t), ("address", vm_address_t), ("count", natural_t)],
    [("info", Blob())])
# Reply: at most ``count`` of the task's names above ``after``, in order, each with the
# identity of what it denotes (port id, the task holding the receive right, kernel
# object, pager); ``next``: the name to pass as ``after`` for the following page (0: no
# more).  No right is made or moved, so no no-senders accounting is disturbed.
machemu_space_info = machemu.routine(
    "machemu_space_info", 5,
    [("task", mach_port_send_t), ("after", mach_port_name_t), ("count", natural_t)],
    [("info", Blob())])
MAP_INFO_MAX = 1024    # entries per machemu_vm_map_info reply at most (about 100 KiB)
SPACE_INFO_MAX = 1024  # names per machemu_space_info reply at most (about 150 KiB)

# rpctrace (kernel.ipc_trace): 4810..4819.  Request port of start and sessions: host_priv
# (KERN_INVALID_HOST on the plain host port).  ``filter``: {"tasks": [task id...],
# "ports": [port id...], "port_names": [[task id, name]...], "ids": [[lo, hi]...],
# "ring": records kept}; a message is recorded when it matches every key given (a task
# as sender or receiver), and a reply when its request was.  ``session``: a kernel port
# (no-senders ends the session); ``info``: {"ring", "fields", "epoch", "tracer"}.
machemu_trace_start = machemu.routine(
    "machemu_trace_start", 10, [("filter", Blob())],
    [("session", mach_port_send_t), ("info", Blob())])
# Request port: the session.  Records seq >= since (at most max_records, list rows in
# info["fields"] order), the seq to ask for next, records lost to the ring since then.
machemu_trace_read = machemu.routine(
    "machemu_trace_read", 11, [("since", int64_t), ("max_records", natural_t)],
    [("records", Blob()), ("next_seq", int64_t), ("dropped", int64_t)])
# Request port: the session.  Ends it (the port dies); its totals.
machemu_trace_stop = machemu.routine("machemu_trace_stop", 12, [], [("totals", Blob())])
# Request port: host_priv.  The sessions tracing now.
machemu_trace_sessions = machemu.routine("machemu_trace_sessions", 13, [],
                                         [("sessions", Blob())])
