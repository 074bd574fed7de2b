"""The host ports (GNU Mach kern/host.c, kern/ipc_host.c): the plain host port every task
gets, and the privileged one (host_priv) the kernel gives only to the cluster owner's
tasks (DESIGN §8a).

On the host port: machemu_kernel_info about the kernel and the caller's own task.  On
host_priv, as well: every task's and port's kernel info, the launcher's clean stop
(machemu_shutdown), vm_set_default_memory_manager, and what the inspection tools need
(machemu_task_for_id, machemu_vm_map_info, machemu_space_info).  A host_priv routine
sent to the plain host port gets KERN_INVALID_HOST, as GNU Mach's
convert_port_to_host_priv makes it.  A host_priv port serves every host routine (convert_port_to_host takes both)."""

from __future__ import annotations

import heapq
import os
import time

import psutil

from kernel import ipc_trace
from kernel.ipc_port import KERNEL, IPCPort, ipc_port_copy_send, ipc_port_make_send
from kernel.ipc_right import PORT_SEND, release_right
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


def task_of(task_right):
    """convert_port_to_task: the live task whose kernel port ``task_right`` (a request's
    (port, type) pair) is; KERN_INVALID_ARGUMENT for anything else.  The caller releases
    the right once it succeeds (on an error the kernel releases it)."""
    port = task_right[0]
    if port is None or port.kotype != "task" or not port.active or not port.kobject.alive:
        raise MachError(KernReturn.KERN_INVALID_ARGUMENT, "not a task port")
    return port.kobject


def find_task(k, ident: int, flavor: int):
    """The task machemu_task_for_id names: by kernel task id, or the newest task of a
    process id; KERN_INVALID_ARGUMENT when there is none (or for an unknown flavor)."""
    if flavor == X.TASK_BY_ID:
        found = [t for t in k.tasks.values() if t.id == ident]
    elif flavor == X.TASK_BY_PID:
        found = [t for t in k.tasks.values() if t.pid == ident]
    else:
        raise MachError(KernReturn.KERN_INVALID_ARGUMENT, "unknown flavor")
    found = [t for t in found if t.alive]
    if not found:
        raise MachError(KernReturn.KERN_INVALID_ARGUMENT, "no such task")
    return max(found, key=lambda t: t.id)


def _object_row(obj) -> list:
    """[id, kind, pager's task, resident pages, size, ref_count, cached, label] of a VM
    object, as machemu_vm_map_info lists the objects its entries map."""
    holder = ""
    if obj.pager is not None:
        holder = _holder(obj.pager)[1]
    return [obj.id, "internal" if obj.internal else "external", holder, len(obj.resident),
            obj.size, obj.ref_count, bool(obj.cached), obj.label]


def vm_map_info(vmap, address: int, count: int) -> dict:
    """machemu_vm_map_info of one map: the summary (vm_map's nentries, size, bounds,
    lookup structure, merge mode, tree height, its merges and clips so far) and
    at most ``count`` entries from the one vm_region(``address``) finds on, each [start,
    end, protection, max_protection, inheritance, object id (0: none), offset,
    wired_count, is_shared], with ``objects`` (rows of _object_row) and ``next``."""
    counters = {"merges": vmap.merges, "clips": vmap.clips}
    out = {"nentries": vmap.nentries, "size": vmap.size, "min_offset": vmap.min_offset,
           "max_offset": vmap.max_offset, "lookup": vmap.lookup, "merge": vmap.merge,
           "tree_height": vmap.tree_height(), "counters": counters,
           "entries": [], "objects": [], "next": 0}
    count = min(count, X.MAP_INFO_MAX)
    if count == 0 or vmap.nentries == 0:
        return out
    try:
        e = vmap.vm_region(address)
    except MachError:  # KERN_NO_SPACE: nothing at or above address
        return out
    objects = {}
    while True:
        obj = e.object
        if obj is not None and obj.id not in objects:
            objects[obj.id] = _object_row(obj)
        out["entries"].append([e.vme_start, e.vme_end, e.protection, e.max_protection,
                               e.inheritance, obj.id if obj is not None else 0, e.offset,
                               e.wired_count, bool(e.is_shared)])
        nxt = e.vme_next
        if nxt.vme_start <= e.vme_start:  # back at the map's header: the last entry
            break
        if len(out["entries"]) >= count:
            out["next"] = nxt.vme_start
            break
        e = nxt
    out["objects"] = list(objects.values())
    return out


def _holder(port) -> tuple[int, str]:
    """(task id, task name) holding ``port``'s receive right: (0, "kernel") for a
    kernel-served port, (-1, "") while in transit or dead."""
    r = port.receiver
    if r is KERNEL:
        return 0, "kernel"
    if r is None or r.task is None:
        return -1, ""
    return r.task.id, r.task.name


def space_info(k, space, after: int, count: int) -> dict:
    """machemu_space_info of one IPC space: at most ``count`` names above ``after`` in
    order, each {name, what (port, pset, dead), id (the kernel's port or set id, 0 for
    a dead name), receiver and receiver_name (who holds the receive right: 0 "kernel"),
    kotype and label (a kernel port's kind), object (the VM object whose pager, control
    or name port it is; 0 for none)}; ``total`` names and ``next``."""
    count = min(count, X.SPACE_INFO_MAX)
    names = heapq.nsmallest(count + 1, (n for n in space.table if n > after))
    rows = []
    for n in names[:count]:
        e = space.table[n]
        obj = e.object
        row = {"name": n, "what": "dead", "id": 0, "receiver": -1, "receiver_name": "",
               "kotype": "", "label": "", "object": 0}
        if isinstance(obj, IPCPort):
            rid, rname = _holder(obj)
            vmo = k.vm.pager_objects.get(obj.id)
            if vmo is None and obj.kotype in ("memory_object_control", "memory_object_name"):
                vmo = obj.kobject
            row.update(what="port", id=obj.id, receiver=rid, receiver_name=rname,
                       kotype=obj.kotype or "", label=obj.label or "",
                       object=vmo.id if vmo is not None else 0)
        elif obj is not None:
            row.update(what="pset", id=obj.id)
        rows.append(row)
    nxt = names[count - 1] if len(names) > count else 0
    return {"names": rows, "total": len(space.table), "next": nxt}


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

    def task_for_id(_host, ident, flavor):
        """machemu_task_for_id (host_priv): a send right to the kernel port of the task
        ``ident`` names (the Hurd's proc_pid2task, for the inspection tools)."""
        need_priv("machemu_task_for_id")
        t = find_task(k, ident, flavor)
        ipc_port_make_send(t.port)
        return (t.port, PORT_SEND)

    def map_info(_host, task_right, address, count):
        """machemu_vm_map_info (host_priv): a task's map, summary and entries."""
        need_priv("machemu_vm_map_info")
        t = task_of(task_right)
        out = vm_map_info(t.map, address, count)
        out["task"] = t.id
        release_right(k, *task_right)
        return out

    def space(_host, task_right, after, count):
        """machemu_space_info (host_priv): what a task's names denote."""
        need_priv("machemu_space_info")
        t = task_of(task_right)
        out = space_info(k, t.space, after, count)
        out["task"] = t.id
        release_right(k, *task_right)
        return out

    return ipc_trace.host_routines(k, Demux({
        X.machemu_kernel_info: info, X.machemu_shutdown: shutdown,
        MD.vm_set_default_memory_manager: vm_set_default_memory_manager,
        X.machemu_task_for_id: task_for_id, X.machemu_vm_map_info: map_info,
        X.machemu_space_info: space}), need_priv)
