"""scripts/bench: machemu's IPC and VM paths measured against the transport floor.

  cli           options, the table, ``main(argv)``
  orchestrator  starts the kernels, translators and measuring roles; runs the measurements
  rows          the result rows (``{name, value, unit, floor_ratio}``) from the measurements
  role          ``python -m lab.bench.role ROLE ARGS``: how every measuring process starts
  floor         the two bare transport processes (zmq + msgpack only, nothing of machemu)
  ipc_roles     server, client, sender: tasks timing RPCs and routed messages
  vm_roles      vmclient, maplookup, toucher: VM latencies, map lookups, frames touched
  ext2_roles    ext2writer: a sequential write through ext2fs
  vmmap         the in-process cost of kernel.vm_map's list and tree
  task          what every machemu role does first: connect, look a server up
  stats         percentiles and timed loops
  pages         the payloads (bytes only)

Nothing in this package's ``__init__`` imports machemu: the floor processes load it.
"""
