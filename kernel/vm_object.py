"""Memory objects inside the kernel (GNU Mach vm/vm_object.c).

Internal objects are anonymous memory: zero-filled on first touch, given to the default
pager (memory_object_create) the first time one of their pages is paged out.  External
objects are backed by a translator's pager port.  An object whose last reference goes
while ``can_persist`` is set enters the object cache; a later vm_map of the same pager
finds it there with its pages still resident.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

from kernel.ipc_port import KERNEL, IPCPort
from protocol.vm_param import PAGE_SIZE

_ids = itertools.count(1)


class VMObject:
    __slots__ = ("id", "ref_count", "size", "resident", "internal", "temporary", "pager",
                 "pager_request", "pager_name", "pager_created", "pager_initialized",
                 "pager_ready", "paging_in_progress", "absent_count", "can_persist",
                 "copy_strategy", "shadow", "shadow_offset", "cached", "alive",
                 "privileged", "label")

    def __init__(self, size: int, internal: bool = True, label: str = ""):
        self.id = next(_ids)
        self.ref_count = 1
        self.size = size
        self.resident: dict[int, object] = {}  # offset -> VMPage
        self.internal = internal
        self.temporary = internal
        self.pager = None  # IPCPort: the kernel's send right to the pager
        self.pager_request = None  # IPCPort: the control port (served by the kernel)
        self.pager_name = None  # IPCPort: the name port (vm_region reports it)
        self.pager_created = False
        self.pager_initialized = False
        self.pager_ready = internal
        self.paging_in_progress = 0
        self.absent_count = 0
        self.can_persist = False
        self.copy_strategy = 2  # MEMORY_OBJECT_COPY_DELAY
        self.shadow = None
        self.shadow_offset = 0
        self.cached = False
        self.alive = True
        self.privileged = False
        self.label = label

    def __repr__(self):
        kind = "internal" if self.internal else "external"
        return f"<vm_object {self.id} {kind} {len(self.resident)} pages>"


def make_control_ports(obj: VMObject):
    """The control and name ports of an object with a pager (kernel-served ports)."""
    obj.pager_request = IPCPort(receiver=KERNEL, kobject=obj, kotype="memory_object_control",
                                label=f"control {obj.id}")
    obj.pager_name = IPCPort(receiver=KERNEL, kobject=obj, kotype="memory_object_name",
                             label=f"name {obj.id}")


class VMObjectCache:
    """vm_object_cached_list: persisting objects at zero references, oldest first."""

    def __init__(self, max_objects: int | None):
        self.objects: OrderedDict[int, VMObject] = OrderedDict()
        self.max_objects = max_objects
        self.lookups = 0
        self.hits = 0

    def __len__(self):
        return len(self.objects)

    def enter(self, obj: VMObject):
        obj.cached = True
        self.objects[obj.id] = obj

    def remove(self, obj: VMObject):
        obj.cached = False
        self.objects.pop(obj.id, None)

    def overflow(self):
        """Objects to terminate because the cache is over its limit."""
        out = []
        if self.max_objects is not None:
            while len(self.objects) > self.max_objects:
                _, obj = self.objects.popitem(last=False)
                obj.cached = False
                out.append(obj)
        return out


def pages_of(obj: VMObject, offset: int, size: int):
    """The resident pages of ``obj`` in [offset, offset + size), in offset order."""
    res = obj.resident
    if size // PAGE_SIZE < len(res):
        for off in range(offset, offset + size, PAGE_SIZE):
            p = res.get(off)
            if p is not None:
                yield p
    else:
        for off in sorted(o for o in res if offset <= o < offset + size):
            yield res[off]
