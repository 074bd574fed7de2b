"""The host ports (GNU Mach kern/host.c, kern/ipc_host.c): the plain host port every task
gets, and the privileged one (host_priv) the kernel gives only to the cluster owner's
tasks (DESIGN §8a).

On the host port: machemu_kernel_info about the kernel and the caller's own task.  On
host_priv, as well: every task's and port's kernel info, the launcher's clean stop
(machemu_shutdown) and vm_set_default_memory_manager.  A host_priv routine sent to the
plain host port gets KERN_INVALID_HOST, as GNU Mach's convert_port_to_host_priv makes
it.  A host_priv port serves every host routine (convert_port_to_host takes both)."""

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
from protocol.kern_return import KernReturn, MachError
from protocol.mig import Demux


def resident_pages(mem) -> dict:
    """The resident pages by kind: of internal (anonymous) and external (pager-backed)
    objects, and how many of each are dirty; what a recorder follows over time to see
    which kind the pageout daemon takes first."""
    out = {"internal": 0, "external": 0, "internal_dirty": 0, "external_dirty": 0}
    for p in mem.pages:
        obj = p.object
        if obj is None:
            continue
        kind = "internal" if obj.internal else "external"
        out[kind] += 1
        if p.dirty:
            out[kind + "_dirty"] += 1
    return out


def kernel_info(k, only_task: int | None = None) -> dict:
    """Tasks, ports with receive rights held by tasks (queue depth, waiting receivers,
    blocked senders; ``pager``: the port is a memory object's pager, so its queue holds
    the kernel's data_returns and data_requests to it), counters, the resident pages by
    kind and the kernel's own RSS.  ``only_task``: list only the task of that id and its
    ports (what the plain host port tells)."""
    pagers = k.vm.pager_objects
    tasks, ports = [], []
    for t in k.tasks.values():
        if only_task is not None and t.id != only_task:
            continue
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
                                  "srights": p.srights, "in_set": p.pset is not None,
                                  "pager": p.id in pagers})
        tasks.append({"id": t.id, "name": t.name, "role": t.role, "pid": t.pid,
                      "names": len(t.space.table), "receive_rights": receive,
                      "suspended": len(t.waiters), "blocked_bytes": t.blocked_bytes,
                      "traps": t.traps, "age": round(time.time() - t.created, 1),
                      "map_entries": t.map.nentries if t.map is not None else 0,
                      "map_cost": t.map.lookup_cost() if t.map is not None else None})
    proc = psutil.Process(os.getpid())
    return {"tasks": tasks, "ports": ports, "stats": dict(k.stats),
            "vm": vm_statistics(k.vm), "resident": resident_pages(k.vm.mem),
            "kernel": {"pid": os.getpid(), "rss": proc.memory_info().rss,
                       "endpoint": k.endpoint, "uptime": round(time.time() - k.started, 1),
                       "netnames": sorted(k.netname.names)}}


def make_handlers(k, priv: bool) -> Demux:
    """The host server of the plain host port (``priv`` False) or of host_priv."""

    def need_priv(routine: str):
        if not priv:
            k.stats["host_priv_denied"] += 1
            raise MachError(KernReturn.KERN_INVALID_HOST, routine)

    def info(_host):
        """machemu_kernel_info: on host_priv everything; on the host port only the
        calling task (the kmsg's sender trailer) among tasks and ports."""
        if priv:
            return kernel_info(k)
        kmsg = k.current_kmsg
        return kernel_info(k, only_task=kmsg.sender if kmsg is not None else 0)

    def shutdown(_host):
        """machemu_shutdown (host_priv): the kernel stops after this message."""
        need_priv("machemu_shutdown")
        k.stop()

    def vm_set_default_memory_manager(_host, default_manager):
        """vm_set_default_memory_manager (host_priv): the caller's port becomes the
        default pager; the old one's right comes back.  A null port only asks."""
        need_priv("vm_set_default_memory_manager")
        port, typ = default_manager
        k.vm.pageout.default_pager_ready()  # forgets a dead one: no dead name handed back
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
