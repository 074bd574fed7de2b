"""A memfs file bigger than physical memory, through the kernel's page cache: one task
writes it through its own mapping and unmaps; another reads the same bytes with io_read
and through its own mapping.  Under memory pressure memfs's precious pages go back to it
as data_returns and are supplied again unchanged."""

from __future__ import annotations

import hashlib

import pytest

from protocol.defs import fs as F
from protocol.defs import mach as MD
from protocol.defs import netname as NS
from protocol.runtime import TaskRuntime
from protocol.vm_param import PAGE_SIZE
from tests.conftest import start_kernel, start_server

PAGE = PAGE_SIZE
PHYS = 384
NPAGES = 1024  # more than twice the physical memory


def pattern(i: int) -> bytes:
    return hashlib.sha256(b"memfs page %d" % i).digest() * (PAGE // 32)


def open_file(rt, name, flags):
    root = NS.netname_look_up(rt.name_server, "", "memfs", rt=rt)
    _retry, _rname, port = F.dir_lookup(root, name, flags, 0o644, rt=rt, timeout=30)
    return port


def map_file(rt, port, size, prot):
    """io_map gives a read object, and a write object only to writers (as in the Hurd)."""
    rd, wt = F.io_map(port, rt=rt, timeout=30)
    obj = wt if prot & MD.VM_PROT_WRITE else rd
    assert obj
    return MD.vm_map(rt.task_self, 0, size, 0, True, obj, 0, False, prot, MD.VM_PROT_ALL,
                     MD.VM_INHERIT_NONE, rt=rt, timeout=30)


@pytest.mark.timeout(240)
def test_file_larger_than_memory_round_trips(run_dir, procs):
    endpoint = start_kernel(run_dir, procs, physical_pages=PHYS)
    start_server(procs, run_dir, "translators.memfs", "memfs")
    size = NPAGES * PAGE
    a = TaskRuntime(endpoint, "writer")
    f = open_file(a, "big", F.O_CREAT | F.O_READ | F.O_WRITE)
    F.file_set_size(f, size, rt=a, timeout=30)
    addr = map_file(a, f, size, MD.VM_PROT_DEFAULT)
    for i in range(NPAGES):
        MD.vm_write(a.task_self, addr + i * PAGE, pattern(i), rt=a, timeout=60)
    MD.vm_deallocate(a.task_self, addr, size, rt=a)
    s = MD.vm_statistics(a.task_self, rt=a)
    assert s["data_returns"] > 0 and s["pageouts"] > 0, s  # memory pressure sent pages back
    a.close()

    b = TaskRuntime(endpoint, "reader")
    g = open_file(b, "big", F.O_READ)
    chunk = 64 * PAGE
    for off in range(0, size, chunk):
        data = F.io_read(g, off, chunk, rt=b, timeout=60)
        for j in range(chunk // PAGE):
            assert data[j * PAGE:(j + 1) * PAGE] == pattern(off // PAGE + j), off // PAGE + j
    requests = MD.vm_statistics(b.task_self, rt=b)["data_requests"]
    addr = map_file(b, g, size, MD.VM_PROT_READ)
    for i in range(0, NPAGES, 7):
        assert MD.vm_read(b.task_self, addr + i * PAGE, PAGE, rt=b, timeout=60) == pattern(i), i
    s = MD.vm_statistics(b.task_self, rt=b)
    assert s["data_requests"] > requests  # pages evicted earlier were supplied again
    assert s["free_count"] + s["active_count"] + s["inactive_count"] + s["wire_count"] \
        + s["transit_count"] == s["physical_pages"]
    b.close()
