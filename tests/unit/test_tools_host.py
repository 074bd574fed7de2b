"""The host_priv routines of the inspection tools, in-process through a real
``kernel.main.Kernel`` fed wire frames: machemu_task_for_id, machemu_vm_map_info,
machemu_space_info, and mach_port_get_attributes' request counts."""

from __future__ import annotations

import os

import pytest

from protocol import message as M
from protocol.defs import mach as MD
from protocol.defs import mach_port as P
from protocol.defs import machemu as X
from protocol.defs import notify as N
from protocol.kern_return import KernReturn as K
from protocol.vm_param import PAGE_SIZE
from tests.unit.test_host_priv import SECRET, HelloTask, k  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(30)


def test_they_need_host_priv(k):  # noqa: F811
    plain = HelloTask(k, "plain")
    assert plain.err(X.machemu_task_for_id, plain.task_id, X.TASK_BY_ID,
                     dest=plain.host) == K.KERN_INVALID_HOST
    for routine, extra in ((X.machemu_vm_map_info, (0, 10)), (X.machemu_space_info, (0, 10))):
        assert plain.err(routine, plain.task_self, *extra, dest=plain.host) == \
            K.KERN_INVALID_HOST
    # the task port the refused calls carried went back: our one reference is left
    assert plain.refs(plain.task_self) == 1
    assert k.stats["host_priv_denied"] == 3


def test_task_for_id_by_id_and_pid(k):  # noqa: F811
    owner = HelloTask(k, "owner", SECRET)
    a = HelloTask(k, "a")
    port = owner.ok(X.machemu_task_for_id, a.task_id, X.TASK_BY_ID, dest=owner.host_priv)
    assert owner.space.lookup(port).object is a.task.port
    # by pid: every task here is this process; the newest one wins
    b = HelloTask(k, "b")
    by_pid = owner.ok(X.machemu_task_for_id, os.getpid(), X.TASK_BY_PID,
                      dest=owner.host_priv)
    assert owner.space.lookup(by_pid).object is b.task.port
    # the port works: vm_region on it is a's map, not ours
    a.ok(MD.vm_allocate, 0, 3 * PAGE_SIZE, True)
    region = owner.ok(MD.vm_region, 0, dest=port)
    assert region[1] == 3 * PAGE_SIZE
    for bad in ((99999, X.TASK_BY_ID), (1, 7), (0, X.TASK_BY_PID)):
        assert owner.err(X.machemu_task_for_id, *bad, dest=owner.host_priv) == \
            K.KERN_INVALID_ARGUMENT
    s_before = a.task.port.srights
    owner.ok(P.mach_port_deallocate, port)
    assert a.task.port.srights == s_before - 1


def test_vm_map_info_pages_through_the_entries_with_their_objects(k):  # noqa: F811
    owner = HelloTask(k, "owner", SECRET)
    a = HelloTask(k, "a")
    addrs = [a.ok(MD.vm_allocate, 0, n * PAGE_SIZE, True) for n in (2, 5, 1)]
    # a guard page in the middle of the second: clipped into three entries
    a.ok(MD.vm_protect, addrs[1] + PAGE_SIZE, PAGE_SIZE, False, MD.VM_PROT_NONE)
    port = owner.ok(X.machemu_task_for_id, a.task_id, X.TASK_BY_ID, dest=owner.host_priv)
    srights = a.task.port.srights
    info = owner.ok(X.machemu_vm_map_info, port, 0, 1000, dest=owner.host_priv)
    assert a.task.port.srights == srights  # the right the call carried was released
    vmap = a.task.map
    assert info["task"] == a.task_id and info["nentries"] == vmap.nentries
    assert info["lookup"] == vmap.lookup and info["merge"] == vmap.merge
    assert [e[0] for e in info["entries"]] == [e.vme_start for e in vmap]
    assert [e[1] for e in info["entries"]] == [e.vme_end for e in vmap]
    assert info["next"] == 0
    guard = [e for e in info["entries"] if e[0] == addrs[1] + PAGE_SIZE]
    assert guard and guard[0][2] == MD.VM_PROT_NONE and guard[0][1] - guard[0][0] == PAGE_SIZE
    objs = {o[0]: o for o in info["objects"]}
    assert {e[5] for e in info["entries"] if e[5]} <= set(objs)
    assert all(o[1] == "internal" for o in objs.values())
    # one entry a page: the same entries, following ``next``
    seen, address = [], 0
    while True:
        page = owner.ok(X.machemu_vm_map_info, port, address, 1, dest=owner.host_priv)
        assert len(page["entries"]) <= 1
        seen += [e[0] for e in page["entries"]]
        address = page["next"]
        if not address:
            break
    assert seen == [e[0] for e in info["entries"]]
    # from an address inside an entry: that entry first (vm_region's rule)
    mid = owner.ok(X.machemu_vm_map_info, port, addrs[1] + 2 * PAGE_SIZE + 1, 1,
                   dest=owner.host_priv)
    assert mid["entries"][0][0] == addrs[1] + 2 * PAGE_SIZE
    # summary only
    assert owner.ok(X.machemu_vm_map_info, port, 0, 0, dest=owner.host_priv)["entries"] == []
    # not a task port: refused, our right untouched
    recv = owner.port()
    owner.ok(P.mach_port_insert_right, recv, (recv, M.MACH_MSG_TYPE_MAKE_SEND))
    assert owner.err(X.machemu_vm_map_info, recv, 0, 1, dest=owner.host_priv) == \
        K.KERN_INVALID_ARGUMENT
    assert owner.refs(recv) == 1


def test_space_info_tells_what_each_name_denotes(k):  # noqa: F811
    owner = HelloTask(k, "owner", SECRET)
    a = HelloTask(k, "a")
    recv = a.port()
    pset = a.ok(P.mach_port_allocate, M.MACH_PORT_RIGHT_PORT_SET)
    dead = a.ok(P.mach_port_allocate, M.MACH_PORT_RIGHT_DEAD_NAME)
    a.ok(P.mach_port_insert_right, recv, (recv, M.MACH_MSG_TYPE_MAKE_SEND))
    port = owner.ok(X.machemu_task_for_id, a.task_id, X.TASK_BY_ID, dest=owner.host_priv)
    info = owner.ok(X.machemu_space_info, port, 0, 1000, dest=owner.host_priv)
    rows = {r["name"]: r for r in info["names"]}
    assert info["task"] == a.task_id and info["next"] == 0
    assert set(rows) == set(a.space.table) and info["total"] == len(a.space.table)
    assert rows[recv]["what"] == "port" and rows[recv]["receiver"] == a.task_id
    assert rows[recv]["receiver_name"] == "a" and rows[recv]["id"] == \
        a.space.lookup(recv).object.id
    assert rows[pset]["what"] == "pset" and rows[dead]["what"] == "dead"
    me = rows[a.task_self]
    assert me["kotype"] == "task" and me["receiver"] == 0 and me["receiver_name"] == "kernel"
    assert rows[a.host]["kotype"] == "host"
    # owner's name for a's task port and a's own name for it denote one port
    assert owner.space.lookup(port).object.id == me["id"]
    # paging, one name at a time, in name order
    seen, after = [], 0
    while True:
        page = owner.ok(X.machemu_space_info, port, after, 1, dest=owner.host_priv)
        seen += [r["name"] for r in page["names"]]
        after = page["next"]
        if not after:
            break
    assert seen == sorted(rows)


def test_get_attributes_counts_requests_on_a_receive_right(k):  # noqa: F811
    a, b = HelloTask(k, "a"), HelloTask(k, "b")
    recv = a.port()
    a.ok(P.mach_port_insert_right, recv, (recv, M.MACH_MSG_TYPE_MAKE_SEND))
    st = a.attrs(recv)
    assert st["dnrequests"] == 0 and not st["nsrequest"] and not st["pdrequest"]
    n1, n2 = a.port(), b.port()
    a.notify_request(recv, N.MACH_NOTIFY_NO_SENDERS, n1, sync=1)
    a.notify_request(recv, N.MACH_NOTIFY_PORT_DESTROYED, n1)
    # b holds a send right too and asks for its dead-name notification
    owner = HelloTask(k, "owner", SECRET)
    bport = owner.ok(X.machemu_task_for_id, b.task_id, X.TASK_BY_ID, dest=owner.host_priv)
    aport = owner.ok(X.machemu_task_for_id, a.task_id, X.TASK_BY_ID, dest=owner.host_priv)
    right = owner.ok(P.mach_port_extract_right, recv, M.MACH_MSG_TYPE_MAKE_SEND, dest=aport)
    owner.ok(P.mach_port_insert_right, 0x7777, (right, M.MACH_MSG_TYPE_MOVE_SEND), dest=bport)
    b.notify_request(0x7777, N.MACH_NOTIFY_DEAD_NAME, n2, sync=1)
    st = a.attrs(recv)
    assert st["dnrequests"] == 1 and st["nsrequest"] and st["pdrequest"]
    assert b.ptype(0x7777) & M.MACH_PORT_TYPE_DNREQUEST
