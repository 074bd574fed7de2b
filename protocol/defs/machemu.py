"""machemu private subsystem 4800: what GNU Mach has no routine for.

Introspection a person reads (``scripts/launch status``), the OSF-style
``mach_port_get_attributes`` that exposes kernel facts GNU Mach keeps private
(waiting receivers, blocked senders), and the kernel's message trace (``rpctrace``).
"""

from protocol.mig import Blob, Subsystem, int64_t, mach_port_name_t, mach_port_send_t, natural_t

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
