"""The VM system's state (GNU Mach vm/vm_init.c and the globals of vm/vm_object.c,
vm/vm_resident.c, vm/vm_pageout.c): physical memory, the object cache, the pager -> object
table, the default pager, the pageout policy and the counters.

The routines that work on it take it first: vm_object_* (kernel.vm_object), vm_page_*
(kernel.vm_page), vm_pageout_* (kernel.vm_pageout), memory_object_* (kernel.memory_object),
vm_map_create (kernel.vm_map), vm_map_copyout (kernel.vm_map_copy), vm_statistics (kernel.vm_user).
"""

from __future__ import annotations

import collections

from kernel.vm_object import VMObject, VMObjectCache
from kernel.vm_page import VMResident


class VMSystem:
    """vm_init: what the VM routines share."""

    def __init__(self, k, config):
        self.k = k
        self.config = config
        self.mem = VMResident(config.physical_pages)
        self.cache = VMObjectCache(config.object_cache_max)
        self.pager_objects: dict[int, VMObject] = {}  # pager port id -> object
        self.default_pager = None  # IPCPort (kernel's send right)
        self.stats = collections.Counter()
        self.objects = 0
        self.pageout = None  # the daemon's policy object (vm_pageout)
