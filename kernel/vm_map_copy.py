"""Out-of-line data into a receiver's map (GNU Mach vm/vm_map.c: vm_map_copyout)."""

from __future__ import annotations

from kernel.vm_kern import kmem_alloc_wired
from kernel.vm_object import vm_object_deallocate
from protocol.defs.mach import VM_INHERIT_NONE, VM_PROT_ALL, VM_PROT_DEFAULT
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE


def vm_map_copyout(k, task, kmsg):
    """vm_map_copyout: out-of-line data occupies a region of the receiver's map until it
    vm_deallocates it.  Page-backed data (data_return's laundry) brings its pages, other
    data of a page or more is copied into new wired pages.  Returns the addresses (0: not
    mapped, small data or no frame left for a copy)."""
    vm = k.vm
    addrs = []
    vmap = task.map
    objects = kmsg.ool_objects or [None] * len(kmsg.ool)
    for frame, obj in zip(kmsg.ool, objects):
        addr = 0
        if obj is None and len(frame) >= PAGE_SIZE:
            obj = kmem_alloc_wired(vm, frame)
        if obj is not None:
            try:
                addr = vmap.vm_map_enter(None, obj.size, obj, 0, VM_PROT_DEFAULT, VM_PROT_ALL,
                                         VM_INHERIT_NONE)
            except MachError:
                vm_object_deallocate(vm, obj)
        addrs.append(addr)
    kmsg.ool_objects = None
    return addrs
