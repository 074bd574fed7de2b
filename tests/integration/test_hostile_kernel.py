"""Hostile requests at the kernel's own ports from an ordinary task (tests/hostile.py):
every routine of every subsystem, near-valid, at the task port, the host port, the name
server and the control port of a memory object the task itself manages.  The kernel must
answer every case within the bound, stay alive with bounded RSS, log no internal error,
and then serve another task's VM and IPC calls with the right bytes.

tests/integration/test_fuzz.py fuzzes the kernel's wire (headers, frames, junk bodies);
this file is about well-framed requests with one wrong thing in their arguments."""

from __future__ import annotations

import pytest

from protocol import message as M
from protocol.defs import mach as VM
from protocol.defs import mach_port as P
from protocol.defs import machemu as X
from protocol.defs import memory_object as MO
from protocol.runtime import TaskRuntime
from tests.conftest import log_records
from tests.hostile import RSS_BOUND, Hostile, alive, legit_result, pattern, rss

pytestmark = pytest.mark.timeout(240)
T = 30


def control_port_of_own_object(rt) -> int:
    """vm_map a port of our own: the kernel's memory_object_init brings its control port."""
    pager = P.mach_port_allocate(rt.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=rt)
    P.mach_port_insert_right(rt.task_self, pager, (pager, M.MACH_MSG_TYPE_MAKE_SEND), rt=rt)
    VM.vm_map(rt.task_self, 0, 4 * 4096, 0, True, pager, 0, False, VM.VM_PROT_DEFAULT,
              VM.VM_PROT_ALL, VM.VM_INHERIT_COPY, timeout=T, rt=rt)
    init = rt.receive(pager, timeout=T)
    assert init.msgh_id == MO.memory_object_init.msgh_id, init
    return init.descs[0][0]


def legit_vm_and_ipc(endpoint) -> str:
    """Another task's vm_allocate / vm_write / vm_read and a message to itself."""
    with TaskRuntime(endpoint, "legit") as rt:
        data = pattern(3 * 4096 + 17, seed=7)
        addr = VM.vm_allocate(rt.task_self, 0, 4 * 4096, True, timeout=T, rt=rt)
        VM.vm_write(rt.task_self, addr, data, timeout=T, rt=rt)
        got = VM.vm_read(rt.task_self, addr, len(data), timeout=T, rt=rt)
        assert bytes(got) == data
        n = P.mach_port_allocate(rt.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=rt)
        P.mach_port_insert_right(rt.task_self, n, (n, M.MACH_MSG_TYPE_MAKE_SEND), rt=rt)
        rt.send(M.Message(4242, n, M.MACH_MSG_TYPE_COPY_SEND, ool=[data]), timeout=T)
        m = rt.receive(n, timeout=T)
        assert m.msgh_id == 4242 and bytes(m.ool[0]) == data
        stats = X.machemu_kernel_info(rt.host, timeout=T, rt=rt)["stats"]
    return f"vm_write/vm_read {len(data)} bytes equal, message intact; stats {stats}"


def test_hostile_requests_at_kernel_ports(kernel, tasks, run_dir):
    pid = kernel.proc.pid
    rt = tasks.new("hostile")
    h = Hostile(rt)
    rss0 = rss(pid)
    try:
        for label, port in (("task port", rt.task_self), ("host port", rt.host),
                            ("name server", rt.name_server)):
            h.walk(label, port)
        # A fresh object's: a valid memory_object_destroy would end it and move the
        # control port's receive right to our pager port, where nobody receives (Mach).
        h.walk("control port", control_port_of_own_object(rt),
               never_valid={"memory_object_destroy"})
    finally:
        up = alive(pid)
        rss1 = rss(pid) if up else 0
        served, legit = legit_result(legit_vm_and_ipc, kernel) if up else (False, "kernel dead")
        print("\n" + h.report("kernel", up, rss0, rss1, legit))
    assert up and served, legit
    assert rss1 - rss0 < RSS_BOUND
    errors = [r for r in log_records(run_dir / "kernel.log")
              if r.get("level") in ("error", "critical")]
    assert not errors, errors[:5]
    assert "internal_errors" not in legit, legit
