"""The translator's own mapping of a file's memory object (what libdiskfs does with
diskfs_get_filemap and libpager's pager_memcpy): a bounded window of the file vm_mapped
from the pager port into the translator's task, moved as the I/O proceeds, and io_read /
io_write as vm_read / vm_write on it, so the kernel's page cache holds the data and its
pageout decides when it reaches the pager.

``MappingBudget`` bounds the address space all of one file system's windows hold, so
many open files (or a file past the address space's size) cannot exhaust it.

``PagerMemcpy`` is the Hurd's own way instead (libpager/pager-memcpy.c): no window kept,
a window of at most 32 pages vm_mapped for each transfer and vm_deallocated after it —
a map entry made and removed for every io_read and io_write."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

import structlog

from protocol.defs import fs as F
from protocol.defs import mach as VM
from protocol.defs import mach_port as P
from protocol.kern_return import KernReturn as K
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE, round_page

log = structlog.get_logger("fsserver")

MiB = 1 << 20


def io_errno(code: int, pager_error: int = 0) -> int:
    """The errno (error_t) an io_read / io_write answers for a failed vm_map / vm_read /
    vm_write: Hurd errnos pass through; a page the pager refused is the pager's own
    error (``pager_error``: ENOSPC from unlock_page, EIO from read_page — what Mach
    passes to the faulting thread; machemu's fault reports only KERN_MEMORY_ERROR), else
    EIO; no room in the address space is ENOMEM; anything else EIO."""
    if code & 0x40000000:
        return code
    if code in (K.KERN_NO_SPACE, K.KERN_RESOURCE_SHORTAGE):
        return F.ENOMEM
    return pager_error or F.EIO


class MappingBudget:
    """The bytes a file system's own file mappings may hold at once.  A mapping that
    needs room evicts (unmaps) the least recently used windows of other files that are
    idle (their I/O lock free); windows in use are never taken, so the budget is
    exceeded by at most one window per I/O in progress (bounded by the server
    threads)."""

    def __init__(self, limit: int = 256 * MiB):
        self.limit = limit
        self.lock = threading.Lock()
        self.mapped = 0
        self.evictions = 0
        self._lru: OrderedDict[FileMapping, threading.Lock] = OrderedDict()

    def reserve(self, m: "FileMapping", nbytes: int, io_lock: threading.Lock):
        """Account ``nbytes`` more for ``m`` (whose caller holds ``io_lock``), evicting
        idle windows first if that would pass the limit."""
        victims = []
        with self.lock:
            need = self.mapped + nbytes - self.limit
            for v, vlock in list(self._lru.items()):
                if need <= 0:
                    break
                if v is m or not vlock.acquire(blocking=False):
                    continue
                victims.append((v, vlock))
                need -= v.size
            self.mapped += nbytes
            self._lru[m] = io_lock
            self._lru.move_to_end(m)
        for v, vlock in victims:
            try:
                v.unmap()
                self.evictions += 1
            finally:
                vlock.release()

    def touch(self, m: "FileMapping"):
        with self.lock:
            if m in self._lru:
                self._lru.move_to_end(m)

    def release(self, m: "FileMapping", nbytes: int):
        with self.lock:
            self.mapped -= nbytes
            if not m.size:
                self._lru.pop(m, None)


class FileMapping:
    """The translator's own mapping of a file's memory object: a window of it vm_mapped
    into this task (rt.task_self), and io as vm_read / vm_write on it (what diskfs does
    with pager_memcpy).  The window starts at offset 0 and grows by doubling (a remap)
    while the file is small; past MAX_WINDOW it is a MAX_WINDOW-sized window, aligned
    to its size, moved to where the I/O is.  Transfers are split into CHUNK-sized
    vm_read / vm_write calls.

    ``get_port()`` returns a send right (one user reference) to the memory object; the
    mapping gives it back after vm_map (the kernel keeps its own).  Callers serialize
    calls on one mapping by holding ``io_lock`` (the file's I/O lock)."""

    MIN_WINDOW = 16 * PAGE_SIZE
    MAX_WINDOW = 16 * MiB
    CHUNK = 1024 * 1024  # bytes per vm_read / vm_write

    def __init__(self, rt, get_port: Callable[[], int], budget: MappingBudget | None = None,
                 io_lock: threading.Lock | None = None):
        self.rt = rt
        self.get_port = get_port
        self.budget = budget
        self.io_lock = io_lock or threading.Lock()
        self.offset = 0
        self.address = 0
        self.size = 0
        self.remaps = 0

    @property
    def end(self) -> int:
        """The object offset just past the window."""
        return self.offset + self.size

    def _window_for(self, a: int, end: int) -> tuple[int, int]:
        """(offset, size) of the window to map for an I/O at ``a`` ending at ``end``."""
        if end <= self.MAX_WINDOW:
            window = max(self.MIN_WINDOW, self.size if not self.offset else 0)
            while window < end:
                window *= 2
            return 0, min(window, self.MAX_WINDOW)
        return a - a % self.MAX_WINDOW, self.MAX_WINDOW

    def _cover(self, a: int, end: int) -> int:
        """Map a window holding object offset ``a`` (for an I/O ending at ``end``);
        returns the address of ``a`` in this task."""
        if not (self.size and self.offset <= a < self.end
                and (end <= self.end or self.size == self.MAX_WINDOW)):
            offset, window = self._window_for(a, end)
            rt = self.rt
            if self.budget is not None:
                self.budget.reserve(self, window, self.io_lock)
            try:
                port = self.get_port()
                try:
                    addr = VM.vm_map(rt.task_self, 0, window, 0, True, port, offset, False,
                                     VM.VM_PROT_DEFAULT, VM.VM_PROT_DEFAULT,
                                     VM.VM_INHERIT_NONE, rt=rt)
                finally:
                    P.mach_port_deallocate(rt.task_self, port, rt=rt)
            except BaseException:
                if self.budget is not None:
                    self.budget.release(self, window)
                raise
            if self.size:
                self.remaps += 1
                self._deallocate()
            self.offset, self.address, self.size = offset, addr, window
        elif self.budget is not None:
            self.budget.touch(self)
        return self.address + a - self.offset

    def ensure(self, size: int):
        """Map a window holding [0, size) if it fits one (the start of the file)."""
        self._cover(0, max(size, 1))

    def _deallocate(self):
        if self.size:
            addr, size, self.address, self.size = self.address, self.size, 0, 0
            self.offset = 0
            try:
                VM.vm_deallocate(self.rt.task_self, addr, size, rt=self.rt)
            finally:
                if self.budget is not None:
                    self.budget.release(self, size)

    def unmap(self):
        """vm_deallocate the window."""
        try:
            self._deallocate()
        except MachError as e:
            log.warning("vm_deallocate of a file mapping failed", code=e.code)

    def read(self, offset: int, n: int) -> bytes:
        """pager_memcpy reading: bytes [offset, offset+n) of the object, through
        windows moved as needed (vm_read)."""
        if n <= 0:
            return b""
        rt, out = self.rt, []
        a, end = offset, offset + n
        while a < end:
            addr = self._cover(a, end)
            k = min(self.CHUNK, end - a, self.end - a)
            out.append(bytes(VM.vm_read(rt.task_self, addr, k, rt=rt)))
            a += k
        return b"".join(out)

    def write(self, offset: int, data: bytes):
        """pager_memcpy writing: store ``data`` at object offset ``offset`` through
        windows moved as needed (vm_write)."""
        rt = self.rt
        a, end = offset, offset + len(data)
        while a < end:
            addr = self._cover(a, end)
            k = min(self.CHUNK, end - a, self.end - a)
            VM.vm_write(rt.task_self, addr, data[a - offset:a - offset + k], rt=rt)
            a += k


class PagerMemcpy:
    """pager_memcpy (libpager/pager-memcpy.c) as diskfs's _diskfs_rdwr_internal calls it:
    for each io_read / io_write, a send right to the file's memory object
    (diskfs_get_filemap: ``get_port()``), then per window of at most WINDOW bytes —
    the rest of the transfer, rounded out to pages — a vm_map anywhere of that part of
    the object (protection READ, or READ|WRITE for a write; VM_INHERIT_NONE), the copy
    (vm_read / vm_write), and the window's vm_deallocate; then the right's
    mach_port_deallocate.  Nothing stays mapped between calls.

    ``on_call``, if given, runs at the start of each transfer (the Hurd's signal
    preemption there needs the thread's sigstate: see translators.ext2fs.hurdalloc).
    The interface is FileMapping's; ``end`` is 0 (no window past a call)."""

    WINDOW = 32 * PAGE_SIZE  # MEMCPY_WINDOW_DEFAULT_SIZE
    end = 0
    size = 0

    def __init__(self, rt, get_port: Callable[[], int], on_call: Callable[[], None] | None
                 = None):
        self.rt = rt
        self.get_port = get_port
        self.on_call = on_call
        self.remaps = 0  # never: each window is a mapping of its own (``windows``)
        self.windows = 0

    def _transfer(self, offset: int, n: int, write: bool, data: bytes = b""):
        rt = self.rt
        if self.on_call is not None:
            self.on_call()
        prot = VM.VM_PROT_DEFAULT if write else VM.VM_PROT_READ
        out = []
        port = self.get_port()
        try:
            a, end = offset, offset + n
            while a < end:
                pageoff = a % PAGE_SIZE
                window = min(self.WINDOW, round_page(pageoff + end - a))
                k = min(window - pageoff, end - a)
                addr = VM.vm_map(rt.task_self, 0, window, 0, True, port, a - pageoff, False,
                                 prot, prot, VM.VM_INHERIT_NONE, rt=rt)
                self.windows += 1
                try:
                    if write:
                        VM.vm_write(rt.task_self, addr + pageoff,
                                    data[a - offset:a - offset + k], rt=rt)
                    else:
                        out.append(bytes(VM.vm_read(rt.task_self, addr + pageoff, k,
                                                    rt=rt)))
                finally:
                    VM.vm_deallocate(rt.task_self, addr, window, rt=rt)
                a += k
        finally:
            P.mach_port_deallocate(rt.task_self, port, rt=rt)
        return b"".join(out)

    def read(self, offset: int, n: int) -> bytes:
        """pager_memcpy with VM_PROT_READ: bytes [offset, offset+n) of the object."""
        return self._transfer(offset, n, False) if n > 0 else b""

    def write(self, offset: int, data: bytes):
        """pager_memcpy with VM_PROT_WRITE: ``data`` stored at ``offset``."""
        if data:
            self._transfer(offset, len(data), True, data)

    def unmap(self):
        """Nothing is mapped between calls."""
