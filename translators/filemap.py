"""The translator's own mapping of a file's memory object (what libdiskfs does with
diskfs_get_filemap and libpager's pager_memcpy): vm_map of the pager port into the
translator's task, and io_read / io_write as vm_read / vm_write on it, so the kernel's
page cache holds the data and its pageout decides when it reaches the pager."""

from __future__ import annotations

from typing import Callable

import structlog

from protocol.defs import fs as F
from protocol.defs import mach as VM
from protocol.defs import mach_port as P
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE

log = structlog.get_logger("fsserver")


class FileMapping:
    """The translator's own mapping of a file's memory object: vm_map of the pager port
    into this task (rt.task_self), and io as vm_read / vm_write on it (what diskfs does
    with pager_memcpy through node->dn->fileinfo's mapping).  The window grows by
    doubling (a remap) when the file outgrows it.  Transfers are split into CHUNK-sized
    vm_read / vm_write calls (machemu's vm_read/vm_write take any alignment).

    ``get_port()`` returns a send right (one user reference) to the memory object; the
    mapping gives it back after vm_map (the kernel keeps its own).  Callers serialize
    calls on one mapping (the file's I/O lock)."""

    MIN_WINDOW = 16 * PAGE_SIZE
    CHUNK = 1024 * 1024  # bytes per vm_read / vm_write

    def __init__(self, rt, get_port: Callable[[], int]):
        self.rt = rt
        self.get_port = get_port
        self.address = 0
        self.size = 0
        self.remaps = 0

    def ensure(self, size: int):
        """Map at least [0, size) of the object."""
        if size <= self.size:
            return
        window = max(self.MIN_WINDOW, self.size)
        while window < size:
            window *= 2
        rt = self.rt
        port = self.get_port()
        try:
            addr = VM.vm_map(rt.task_self, 0, window, 0, True, port, 0, False,
                             VM.VM_PROT_DEFAULT, VM.VM_PROT_DEFAULT, VM.VM_INHERIT_NONE,
                             rt=rt)
        finally:
            P.mach_port_deallocate(rt.task_self, port, rt=rt)
        if self.size:
            self.remaps += 1
            self._deallocate()
        self.address, self.size = addr, window

    def _deallocate(self):
        if self.size:
            addr, size, self.address, self.size = self.address, self.size, 0, 0
            VM.vm_deallocate(self.rt.task_self, addr, size, rt=self.rt)

    def unmap(self):
        """vm_deallocate the window."""
        try:
            self._deallocate()
        except MachError as e:
            log.warning("vm_deallocate of a file mapping failed", code=e.code)

    def read(self, offset: int, n: int) -> bytes:
        """Bytes [offset, offset+n) through the mapping (vm_read; must be mapped)."""
        if n <= 0:
            return b""
        if offset + n > self.size:
            raise MachError(F.EINVAL, "read past the mapped window")
        rt, out = self.rt, []
        a = offset
        while a < offset + n:
            k = min(self.CHUNK, offset + n - a)
            out.append(bytes(VM.vm_read(rt.task_self, self.address + a, k, rt=rt)))
            a += k
        return b"".join(out)

    def write(self, offset: int, data: bytes):
        """Store ``data`` at ``offset`` through the mapping (vm_write; must be mapped)."""
        n = len(data)
        if offset + n > self.size:
            raise MachError(F.EINVAL, "write past the mapped window")
        rt = self.rt
        a = 0
        while a < n:
            k = min(self.CHUNK, n - a)
            VM.vm_write(rt.task_self, self.address + offset + a, data[a:a + k], rt=rt)
            a += k
