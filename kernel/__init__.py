"""The machemu kernel process: IPC (ports, rights, spaces, queues, mach_msg), tasks, the
name server and the host port; later the VM system.  One process, one thread, one event
loop; work that must wait is a continuation, never a blocked OS thread."""
