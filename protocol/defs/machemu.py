"""machemu private subsystem 4800: what GNU Mach has no routine for.

Introspection a person reads (``scripts/launch status``) and the OSF-style
``mach_port_get_attributes`` that exposes kernel facts GNU Mach keeps private
(waiting receivers, blocked senders).
"""

from protocol.mig import Blob, Subsystem, mach_port_name_t, natural_t

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
