"""Kernel memory (GNU Mach vm/vm_kern.c): wired pages the kernel fills itself."""

from __future__ import annotations

from kernel.vm_object import VMObject
from kernel.vm_page import vm_page_free, vm_page_grab, vm_page_insert
from protocol.vm_param import PAGE_SIZE


def kmem_alloc_wired(vm, data):
    """Wired kernel memory holding ``data``: new wired pages of a new internal object,
    which vm_map_copyout maps into a receiver (out-of-line data of a page or more that
    no object backs yet).  None when no frame is left (the data still travels in the
    message)."""
    n = (len(data) + PAGE_SIZE - 1) // PAGE_SIZE
    obj = VMObject(n * PAGE_SIZE, internal=True, label="ool")
    mem = vm.mem
    for i in range(n):
        q = vm_page_grab(vm, privileged=True)
        if q is None:
            for r in list(obj.resident.values()):
                vm_page_free(vm, r)
            vm.stats["ool_no_memory"] += 1
            return None
        chunk = data[i * PAGE_SIZE:(i + 1) * PAGE_SIZE]
        mem.write(q, chunk)
        if len(chunk) < PAGE_SIZE:
            mem.write(q, bytes(PAGE_SIZE - len(chunk)), len(chunk))
        vm_page_insert(q, obj, i * PAGE_SIZE)
        mem.vm_page_wire(q)
    vm.objects += 1
    vm.stats["ool_regions"] += 1
    return obj
