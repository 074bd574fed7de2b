"""machemu private subsystem 4800: what GNU Mach has no routine for.

Introspection a person reads (``scripts/launch status``), the OSF-style
``mach_port_get_attributes`` that exposes kernel facts GNU Mach keeps private
(waiting receivers, blocked senders), and what the inspection tools (lab/tools:
vminfo, portinfo) need on host_priv: another task's kernel port (the Hurd's tools get it
from proc_pid2task), its map's summary and the identity of the ports its names denote.
"""

from protocol.mig import (
    Blob,
    Subsystem,
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
