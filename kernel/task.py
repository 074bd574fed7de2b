"""Tasks (GNU Mach kern/task.c): one per connected process, with its IPC space and its
task port.  A task is destroyed when its process says goodbye, exits (its pidfd becomes
readable), stops heart-beating, or misbehaves on the wire."""

from __future__ import annotations

import itertools
import time

from kernel.ipc_mqueue import fail_waiter
from kernel.ipc_port import KERNEL, IPCPort
from kernel.ipc_right import ipc_right_destroy
from kernel.ipc_space import IPCSpace

_ids = itertools.count(1)


class Task:
    __slots__ = ("id", "name", "role", "pid", "ident", "space", "port", "waiters",
                 "blocked_bytes", "last_seen", "pidfd", "alive", "created", "traps",
                 "outbox", "map")

    def __init__(self, ident: bytes, pid: int, name: str, role: str):
        self.id = next(_ids)
        self.ident, self.pid, self.name, self.role = ident, pid, name, role
        self.space = IPCSpace(self)
        self.port = IPCPort(receiver=KERNEL, kobject=self, kotype="task", label=f"task {name}")
        self.waiters: set = set()
        self.blocked_bytes = 0
        self.last_seen = time.monotonic()
        self.pidfd = None
        self.alive = True
        self.created = time.time()
        self.traps = 0
        self.outbox: list = []  # answers not yet sent (see Kernel.emit)
        self.map = None  # VMMap, made by the kernel (vm_map_create)

    def __repr__(self):
        return f"<task {self.id} {self.name} pid {self.pid}>"


def task_terminate(k, task: Task):
    """Tear a task down: its suspended threads end, its rights die (receive rights are
    destroyed, send-once rights send their notifications, send rights are released), and
    its task port dies so holders get dead names."""
    if not task.alive:
        return
    task.alive = False
    for w in list(task.waiters):
        fail_waiter(k, w, 0, destroy_kmsg=True)
        q = w.queue
        if q is not None:
            for dq in (q.senders, q.receivers):
                try:
                    dq.remove(w)
                except ValueError:
                    pass
    task.waiters.clear()
    space = task.space
    for name in list(space.table):
        ipc_right_destroy(k, space, name)
    space.active = False
    space.table.clear()
    space.reverse.clear()
    k.ipc_port_destroy(task.port)
    vmap, task.map = task.map, None
    if vmap is not None:
        vmap.vm_map_delete(vmap.min_offset, vmap.max_offset)
