"""The host port: what the kernel tells about itself (machemu_kernel_info) and the
launcher's clean stop (machemu_shutdown)."""

from __future__ import annotations

import os
import time

import psutil

from kernel.ipc_port import ipc_port_copy_send
from kernel.ipc_right import PORT_SEND
from kernel.ipc_space import T_RECEIVE
from kernel.vm_page import PAGEOUT_EVENT
from kernel.vm_user import vm_statistics
from protocol.defs import mach as MD
from protocol.defs import machemu as X
from protocol.mig import Demux


def kernel_info(k) -> dict:
    """Tasks, ports with receive rights held by tasks (queue depth, waiting receivers,
    blocked senders), counters and the kernel's own RSS."""
    tasks, ports = [], []
    for t in k.tasks.values():
        receive = 0
        for name, e in t.space.table.items():
            if e.type & T_RECEIVE:
                receive += 1
                p = e.object
                mq = p.mqueue
                depth = len(mq.messages)
                waiting = mq.waiting_receivers() + (
                    p.pset.mqueue.waiting_receivers() if p.pset is not None else 0)
                blocked = mq.blocked_senders()
                if depth or waiting or blocked or len(ports) < 2000:
                    ports.append({"task": t.name, "task_id": t.id, "name": name,
                                  "label": p.label, "depth": depth, "qlimit": mq.qlimit,
                                  "waiting_receivers": waiting, "blocked_senders": blocked,
                                  "srights": p.srights, "in_set": p.pset is not None})
        tasks.append({"id": t.id, "name": t.name, "role": t.role, "pid": t.pid,
                      "names": len(t.space.table), "receive_rights": receive,
                      "suspended": len(t.waiters), "blocked_bytes": t.blocked_bytes,
                      "traps": t.traps, "age": round(time.time() - t.created, 1),
                      "map_entries": t.map.nentries if t.map is not None else 0})
    proc = psutil.Process(os.getpid())
    return {"tasks": tasks, "ports": ports, "stats": dict(k.stats),
            "vm": vm_statistics(k.vm),
            "kernel": {"pid": os.getpid(), "rss": proc.memory_info().rss,
                       "endpoint": k.endpoint, "uptime": round(time.time() - k.started, 1),
                       "netnames": sorted(k.netname.names)}}


def make_handlers(k) -> Demux:
    def info(_host):
        return kernel_info(k)

    def shutdown(_host):
        k.stop()

    def vm_set_default_memory_manager(_host, default_manager):
        """The caller's port becomes the default pager; the old one's right comes back.
        A null port only asks."""
        port, typ = default_manager
        old = k.vm.default_pager
        if port is None:
            if old is None:
                return (None, 0)
            ipc_port_copy_send(old)
            return (old, PORT_SEND)
        k.vm.default_pager = port  # keeps the send right made for the call
        k.consume_descs()
        k.sched.thread_wakeup(PAGEOUT_EVENT)
        return (old, PORT_SEND) if old is not None else (None, 0)

    return Demux({X.machemu_kernel_info: info, X.machemu_shutdown: shutdown,
                  MD.vm_set_default_memory_manager: vm_set_default_memory_manager})
