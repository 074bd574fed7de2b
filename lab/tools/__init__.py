"""The inspection tools a Hurd developer reaches for, shaped like the Hurd's utils/ so
their habits carry over, and showing what machemu's kernel sees beyond GNU Mach:

  vmstat    the kernel's vm_statistics (the Hurd's utils/vmstat.c fields, plus dirty,
            potentially dirty, laundry, data_returns in flight, sleeping writers...)
  vminfo    a task's map, one line per entry as utils/vminfo.c prints it (vm_region)
  portinfo  a task's names and rights as utils/portinfo.c prints them, with queues
  mach      ls, cat, put, stat, rm, mkdir, sync on a file server of the name server
  watch     the live view of ``launch status --watch``
  rpctrace  the messages the kernel routes, as utils/rpctrace.c prints them

Shared: ``common`` (the tool's task, host_priv, resolving TASK, errors and exit
status), ``output`` (rich on a terminal, plain text otherwise, JSON).
"""
