"""A Hurd translator's own memory, allocated as glibc on the Hurd allocated it, with real
kernel calls on the translator's own task (vm_map, vm_protect, vm_allocate,
vm_deallocate, vm_write through the task runtime), so that its address map fragments
by itself in the kernel's vm_map (MACH-FACTS §vm_map, "Where a translator's entries
come from"; Sergio Lopez, "Reduce task map fragmentation", the Hurd wiki, 2011):

- ``Brk``: the data segment of glibc's sysdeps/mach/hurd/brk.c.  init_brk reserves
  DATA_SIZE (128 MiB) with one vm_map of protection NONE, maximum ALL; _hurd_set_brk
  grows the break with vm_protect of the new pages to READ|WRITE|EXECUTE, and shrinks
  it with vm_deallocate of the pages released and a fresh vm_map of them, NONE again.
- ``Heap``: a heap of a non-main malloc arena (malloc/arena.c): new_heap reserves
  HEAP_MAX_SIZE (1 MiB on i386: 2 x DEFAULT_MMAP_THRESHOLD_MAX) aligned to its size
  (a NONE mapping of twice that, the unaligned ends deallocated) and makes its first
  part READ|WRITE; grow_heap vm_protects what it grows by, rounded to pages; shrink_heap
  only madvises (no map change) unless the process is setuid.
- ``Arena``: malloc's chunks (malloc/malloc.c, i386: 4-byte size words, 8-byte
  alignment, 16-byte minimum chunk) over the break (the main arena: sbrk of the
  request plus TOP_PAD, trimmed by sbrk(-n) when the top chunk passes TRIM_THRESHOLD)
  or over its heaps (grown by what the request lacks, no pad).  Free chunks merge with
  free neighbours and the top; a request is served best-fit, else from the top.
  Requests of MMAP_THRESHOLD and more are mmapped (vm_allocate anywhere) and unmapped
  when freed.  The first time a chunk lies in a page, its header is written there
  (vm_write): the kernel faults the page in, as malloc's header stores would.
- ``Malloc``: malloc and free over the arenas, chosen as glibc 2.13 did (arena_get):
  a thread keeps the arena it used last; if another thread holds it locked, the thread
  takes the first unlocked one, or makes a new one (``arena_max`` at most: 2 per
  processor, glibc's limit on 32-bit machines), else waits for its own.
- ``HurdMalloc``: glibc's hurd/hurdmalloc.c (cthreads' malloc.c, used by the Hurd's
  own parts of libc, e.g. each thread's signal state): power-of-two buckets, each
  refilled with a vm_allocate anywhere of one page (or of the block, if larger) whose
  blocks' free-list links are written at once; freed blocks go back to their bucket,
  the memory never back to the kernel.

Addresses are real addresses in the task's map; the Python objects the translator
works with stay where they are — the allocations here are their counterpart in the
emulated task, sized as the Hurd's structures were.  A kernel call that fails (no
room, the kernel gone) makes the allocation fail: it returns 0 and is counted
(``failures``), never an exception for the caller.
"""

from __future__ import annotations

import bisect
import struct
import threading
import weakref

import structlog

from protocol.defs import mach as VM
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE, round_page

log = structlog.get_logger("hurdmem")

MIB = 1 << 20
DATA_SIZE = 128 * MIB          # brk.c
HEAP_MAX_SIZE = 1 * MIB        # arena.c on i386: 2 * DEFAULT_MMAP_THRESHOLD_MAX
HEAP_MIN_SIZE = 32 * 1024
TOP_PAD = 128 * 1024           # DEFAULT_TOP_PAD (malloc-machine.h)
TRIM_THRESHOLD = 128 * 1024    # DEFAULT_TRIM_THRESHOLD
MMAP_THRESHOLD = 128 * 1024    # DEFAULT_MMAP_THRESHOLD
SIZE_SZ, MALLOC_ALIGN, MINSIZE = 4, 8, 16  # i386
# sizeof (heap_info) + sizeof (struct malloc_state) + alignment, at a heap's start
ARENA_HEADER = 1152
CALL_TIMEOUT = 30.0            # seconds; only a wedged kernel takes this long
_LOG_FIRST, _LOG_EVERY = 10, 1000
PROT_RWX = VM.VM_PROT_ALL


def request2size(n: int) -> int:
    """malloc's request2size on i386: the chunk holding ``n`` bytes."""
    return max(MINSIZE, (n + SIZE_SZ + MALLOC_ALIGN - 1) & ~(MALLOC_ALIGN - 1))


def arena_limit(processors: int = 1) -> int:
    """glibc's arena_max on a 32-bit machine: 2 per processor (NARENAS_FROM_NCORES).
    GNU Mach ran the Hurd on one processor (2011, 2022), hence 2 by default — and the
    same on any host."""
    return 2 * processors


class TaskVM:
    """The kernel calls of one task on itself, each counted; a failure is counted,
    logged (the first few, then every _LOG_EVERY-th) and raised as MachError."""

    def __init__(self, rt, name: str = "hurdmem"):
        self.rt = rt
        self.name = name
        self.lock = threading.Lock()
        self.calls: dict[str, int] = {}
        self.failures = 0

    def _call(self, what: str, fn, *args):
        with self.lock:
            self.calls[what] = self.calls.get(what, 0) + 1
        try:
            return fn(self.rt.task_self, *args, timeout=CALL_TIMEOUT, rt=self.rt)
        except MachError as e:
            with self.lock:
                self.failures += 1
                n = self.failures
            if n <= _LOG_FIRST or n % _LOG_EVERY == 0:
                log.warning("allocation call failed", allocator=self.name, call=what,
                            code=e.code, failures=n)
            raise

    def allocate(self, size: int) -> int:
        return self._call("vm_allocate", VM.vm_allocate, 0, size, True)

    def deallocate(self, address: int, size: int):
        self._call("vm_deallocate", VM.vm_deallocate, address, size)

    def protect(self, address: int, size: int, prot: int):
        self._call("vm_protect", VM.vm_protect, address, size, False, prot)

    def map_none(self, address: int | None, size: int) -> int:
        """vm_map of zero-fill memory, protection NONE, maximum ALL, inherit COPY, at
        ``address`` (None: anywhere)."""
        return self._call("vm_map", VM.vm_map, address or 0, size, 0, address is None,
                          0, 0, False, VM.VM_PROT_NONE, PROT_RWX, VM.VM_INHERIT_COPY)

    def write(self, address: int, data: bytes):
        self._call("vm_write", VM.vm_write, address, data)

    def copy(self, source: int, size: int, dest: int):
        self._call("vm_copy", VM.vm_copy, source, size, dest)

    def stats(self) -> dict:
        with self.lock:
            return {"calls": dict(self.calls), "failures": self.failures}


class Brk:
    """The data segment (sysdeps/mach/hurd/brk.c).  ``brk`` is _hurd_brk; the reserve
    is [start, data_end).  Callers hold ``lock`` (_hurd_brk_lock)."""

    def __init__(self, vm: TaskVM, size: int = DATA_SIZE):
        self.vm = vm
        self.lock = threading.Lock()
        # init_brk: one vm_map of the whole reserve, no access allowed.  (brk.c maps
        # it right after the program's data; here, wherever the kernel puts it.)
        self.start = vm.map_none(None, size)
        self.brk = self.start
        self.data_end = self.start + size

    def set_brk(self, addr: int) -> bool:
        """_hurd_set_brk: move the break to ``addr``; False (ENOMEM) past the reserve
        or when the kernel refused."""
        pagend, pagebrk = round_page(addr), round_page(self.brk)
        try:
            if pagend < pagebrk:
                # Deallocate to release the backing store, map again with no access.
                self.vm.deallocate(pagend, pagebrk - pagend)
                self.vm.map_none(pagend, pagebrk - pagend)
            elif pagend > pagebrk:
                if pagend > self.data_end:
                    return False
                self.vm.protect(pagebrk, pagend - pagebrk, PROT_RWX)
        except MachError:
            return False
        self.brk = addr
        return True


class Heap:
    """A heap of a non-main arena (arena.c heap_info): [base, base + size) usable,
    [base, base + mprotect_size) READ|WRITE, HEAP_MAX_SIZE reserved."""

    def __init__(self, vm: TaskVM, size: int):
        """new_heap: ``size`` (rounded to pages, at most HEAP_MAX_SIZE) made usable."""
        self.vm = vm
        size = round_page(size)
        # Twice the size, so that an aligned HEAP_MAX_SIZE lies inside; the ends go.
        p1 = vm.map_none(None, 2 * HEAP_MAX_SIZE)
        base = (p1 + HEAP_MAX_SIZE - 1) & ~(HEAP_MAX_SIZE - 1)
        try:
            if base > p1:
                vm.deallocate(p1, base - p1)
            vm.deallocate(base + HEAP_MAX_SIZE, p1 + 2 * HEAP_MAX_SIZE - base - HEAP_MAX_SIZE)
            vm.protect(base, size, VM.VM_PROT_DEFAULT)
        except MachError:
            vm.deallocate(base, HEAP_MAX_SIZE)
            raise
        self.base, self.size, self.mprotect_size = base, size, size

    def grow(self, diff: int) -> bool:
        """grow_heap: ``diff`` more bytes (rounded to pages) usable; False past
        HEAP_MAX_SIZE or when the kernel refused."""
        new_size = self.size + round_page(diff)
        if new_size > HEAP_MAX_SIZE:
            return False
        if new_size > self.mprotect_size:
            try:
                self.vm.protect(self.base + self.mprotect_size,
                                new_size - self.mprotect_size, VM.VM_PROT_DEFAULT)
            except MachError:
                return False
            self.mprotect_size = new_size
        self.size = new_size
        return True


class Arena:
    """struct malloc_state: the chunks of one arena.  The main arena (``brk`` given)
    lives on the break, the others on heaps.  ``lock`` is the arena's mutex, held by
    the caller of malloc / free.  Chunks are (address, size) with the size word's
    overhead included; the top chunk is [top, top_end)."""

    def __init__(self, vm: TaskVM, brk: Brk | None = None, first_request: int = 0):
        self.vm, self.brk = vm, brk
        self.lock = threading.Lock()
        self.heaps: list[Heap] = []
        self.used: dict[int, int] = {}
        self.free_at: dict[int, int] = {}   # free chunk start -> size
        self.free_end: dict[int, int] = {}  # free chunk end -> start
        self.bins: list[tuple[int, int]] = []  # (size, start) of free chunks, sorted
        self.touched: set[int] = set()      # pages holding a chunk header already
        self.grows = self.trims = 0
        if brk is not None:
            self.top = self.top_end = brk.brk
        else:
            # _int_new_arena: a first heap for the request, plus the pad.
            size = first_request + ARENA_HEADER + MALLOC_ALIGN
            size = HEAP_MIN_SIZE if size + TOP_PAD < HEAP_MIN_SIZE else min(
                size + TOP_PAD, HEAP_MAX_SIZE)
            h = Heap(vm, size)
            self.heaps.append(h)
            self.top, self.top_end = h.base + ARENA_HEADER, h.base + h.size

    # --- free chunks

    def _insert_free(self, start: int, size: int):
        self.free_at[start] = size
        self.free_end[start + size] = start
        bisect.insort(self.bins, (size, start))

    def _remove_free(self, start: int) -> int:
        size = self.free_at.pop(start)
        del self.free_end[start + size]
        del self.bins[bisect.bisect_left(self.bins, (size, start))]
        return size

    # --- malloc / free

    def malloc(self, nb: int) -> int:
        """_int_malloc of a chunk of ``nb`` bytes (request2size'd): its address, 0 if
        the arena could not grow."""
        i = bisect.bisect_left(self.bins, (nb, 0))
        if i < len(self.bins):
            size, start = self.bins[i]
            self._remove_free(start)
            if size - nb >= MINSIZE:
                self._insert_free(start + nb, size - nb)
            else:
                nb = size
        else:
            if self.top_end - self.top < nb + MINSIZE and not self._sysmalloc(nb):
                return 0
            start = self.top
            self.top += nb
        self.used[start] = nb
        self._touch(start, nb)
        return start

    def _sysmalloc(self, nb: int) -> bool:
        """sysmalloc: make the top chunk hold ``nb`` (and a minimal chunk after)."""
        have = self.top_end - self.top
        if self.brk is not None:
            incr = round_page(nb + TOP_PAD + MINSIZE - have)
            with self.brk.lock:
                if self.brk.brk != self.top_end or not self.brk.set_brk(self.brk.brk + incr):
                    return False
                self.top_end = self.brk.brk
            self.grows += 1
            return True
        h = self.heaps[-1]
        if h.grow(MINSIZE + nb - have):
            self.top_end = h.base + h.size
            self.grows += 1
            return True
        # The heap is full: a new one; the old top becomes a free chunk.
        try:
            h = Heap(self.vm, min(HEAP_MAX_SIZE, nb + ARENA_HEADER + MINSIZE + TOP_PAD))
        except MachError:
            return False
        if have >= MINSIZE:
            self._insert_free(self.top, have)
        self.heaps.append(h)
        self.top, self.top_end = h.base + ARENA_HEADER, h.base + h.size
        self.grows += 1
        return True

    def free(self, start: int):
        """_int_free: the chunk at ``start`` merges with free neighbours and the top;
        the main arena trims the break when its top passes TRIM_THRESHOLD."""
        size = self.used.pop(start, None)
        if size is None:
            raise ValueError(f"free of {start:#x}: not a chunk in use")
        prev = self.free_end.get(start)
        if prev is not None:
            size += self._remove_free(prev)
            start = prev
        if start + size in self.free_at:
            size += self._remove_free(start + size)
        if start + size == self.top:
            self.top = start
            if self.brk is not None and self.top_end - self.top >= TRIM_THRESHOLD:
                self._systrim()
        else:
            self._insert_free(start, size)

    def _systrim(self):
        """systrim(TOP_PAD): give whole pages of the top back to the break."""
        extra = (self.top_end - self.top - TOP_PAD - MINSIZE - 1) // PAGE_SIZE * PAGE_SIZE
        if extra <= 0:
            return
        with self.brk.lock:
            if self.brk.brk != self.top_end or not self.brk.set_brk(self.brk.brk - extra):
                return
            self.top_end = self.brk.brk
        gone = round_page(self.top_end) // PAGE_SIZE
        self.touched = {p for p in self.touched if p < gone}
        self.trims += 1

    def _touch(self, start: int, size: int):
        """Write the chunk's size word, and a word in each further page it spans that
        no chunk touched yet (one vm_write), so the kernel faults those pages in."""
        first, last = start // PAGE_SIZE, (start + size - 1) // PAGE_SIZE
        new = [p for p in range(first, last + 1) if p not in self.touched]
        if not new:
            return
        lo = max(start, new[0] * PAGE_SIZE)
        hi = min(start + size, max(lo, new[-1] * PAGE_SIZE) + SIZE_SZ)
        data = bytearray(hi - lo)
        if lo == start:
            data[:SIZE_SZ] = struct.pack("<I", size | 1)  # PREV_INUSE
        try:
            self.vm.write(lo, bytes(data))
        except MachError:
            return  # counted by TaskVM; the page stays untouched for the next chunk
        self.touched.update(new)


class _ThreadArena:
    """A thread's arena (thread_arena), held in its thread-local storage: when the
    thread ends, the reference goes and the arena is offered to the next thread."""

    __slots__ = ("arena", "__weakref__")

    def __init__(self, arena):
        self.arena = arena


class Malloc:
    """glibc's malloc and free over a brk main arena and up to ``arena_max`` arenas
    (all of them counted), as a task of ``rt`` (see the module docstring)."""

    def __init__(self, rt, arena_max: int | None = None, name: str = "malloc"):
        self.vm = TaskVM(rt, name)
        self.brk = Brk(self.vm)
        self.arena_max = arena_max or arena_limit()
        if self.arena_max < 1:
            raise ValueError("arena_max must be at least 1")
        self.arenas = [Arena(self.vm, self.brk)]
        self._heap_owner: dict[int, Arena] = {}  # heap base -> its arena (heap_for_ptr)
        self._mmapped: dict[int, int] = {}
        self._lock = threading.Lock()  # list_lock
        self._tls = threading.local()
        self._free_list: list[Arena] = []
        self._next_to_use = 0
        self.failures = 0

    def _arena_get(self, nb: int) -> Arena:
        """arena_get: the thread's arena, locked (waited for).  A thread's first call
        gets one (arena_get2): an arena a finished thread left (get_free_list), else a
        new one while there are fewer than arena_max, else the next one in turn that
        is not locked, or the next one in turn (reused_arena)."""
        ref = getattr(self._tls, "ref", None)
        if ref is None:
            if threading.current_thread() is threading.main_thread():
                ref = self._tls.ref = _ThreadArena(self.arenas[0])  # ptmalloc_init's
            else:
                ref = self._tls.ref = _ThreadArena(self._arena_get2(nb))
                weakref.finalize(ref, self._thread_done, ref.arena)
        ref.arena.lock.acquire()
        return ref.arena

    def _arena_get2(self, nb: int) -> Arena:
        with self._lock:
            if self._free_list:
                return self._free_list.pop()
            if len(self.arenas) < self.arena_max:
                try:
                    a = Arena(self.vm, first_request=nb)
                except MachError:
                    a = None
                if a is not None:
                    self.arenas.append(a)
                    self._heap_owner[a.heaps[0].base] = a
                    return a
            n = len(self.arenas)
            for i in range(n):
                a = self.arenas[(self._next_to_use + i) % n]
                if not a.lock.locked():
                    break
            else:
                a = self.arenas[self._next_to_use % n]
            self._next_to_use = (self.arenas.index(a) + 1) % n
            return a

    def _thread_done(self, arena: Arena):
        """arena_thread_freeres: a finished thread's arena may go to the next new one
        (if no other thread uses it: a reused arena is not put back)."""
        with self._lock:
            if arena is not self.arenas[0] and arena not in self._free_list:
                self._free_list.append(arena)

    def malloc(self, n: int) -> int:
        """malloc(n): the chunk's address in the task, 0 on failure (counted)."""
        nb = request2size(n)
        if nb >= MMAP_THRESHOLD:
            size = round_page(nb + SIZE_SZ)
            try:
                addr = self.vm.allocate(size)
                self.vm.write(addr, struct.pack("<I", size | 2))  # IS_MMAPPED
            except MachError:
                self.failures += 1
                return 0
            with self._lock:
                self._mmapped[addr] = size
            return addr
        a = self._arena_get(nb)
        try:
            before = len(a.heaps)
            addr = a.malloc(nb)
            if len(a.heaps) != before:
                with self._lock:
                    self._heap_owner[a.heaps[-1].base] = a
        finally:
            a.lock.release()
        if not addr:
            self.failures += 1
        return addr

    def free(self, addr: int):
        """free: back to its arena (found as glibc does: the break's range is the main
        arena's, else the heap the address is in) or unmapped; 0 is ignored."""
        if not addr:
            return
        with self._lock:
            size = self._mmapped.pop(addr, None)
            a = (self.arenas[0] if self.brk.start <= addr < self.brk.data_end
                 else self._heap_owner.get(addr & ~(HEAP_MAX_SIZE - 1)))
        if size is not None:
            try:
                self.vm.deallocate(addr, size)
            except MachError:
                pass  # counted by TaskVM
            return
        if a is None:
            raise ValueError(f"free of {addr:#x}: not a malloc chunk")
        with a.lock:
            a.free(addr)

    def stats(self) -> dict:
        with self._lock:
            arenas = list(self.arenas)
            mmapped = len(self._mmapped)
        vm = self.vm.stats()
        return {"malloc_arenas": len(arenas),
                "malloc_heaps": sum(len(a.heaps) for a in arenas),
                "malloc_chunks": sum(len(a.used) for a in arenas),
                "malloc_brk_kib": (self.brk.brk - self.brk.start) >> 10,
                "malloc_grows": sum(a.grows for a in arenas),
                "malloc_trims": arenas[0].trims, "malloc_mmapped": mmapped,
                "malloc_failures": self.failures + vm["failures"],
                **{f"malloc_{k}": v for k, v in vm["calls"].items()}}


class HurdMalloc:
    """hurd/hurdmalloc.c: blocks of 2^(i+3) bytes (with a 4-byte header) from
    per-size free lists, refilled by vm_allocate anywhere; never given back."""

    MIN_SIZE = 8
    HEADER = 4

    def __init__(self, rt, name: str = "hurdmalloc"):
        self.vm = TaskVM(rt, name)
        self.lock = threading.Lock()
        self.free_lists: dict[int, list[int]] = {}
        self.block_size: dict[int, int] = {}  # allocated block -> its bucket's size
        self.refills = 0
        self.failures = 0

    def malloc(self, n: int) -> int:
        """malloc: the block's address, 0 if more_memory's vm_allocate failed."""
        size = self.MIN_SIZE
        while size < n + self.HEADER:
            size <<= 1
        with self.lock:
            fl = self.free_lists.setdefault(size, [])
            if not fl and not self._more_memory(size, fl):
                self.failures += 1
                return 0
            h = fl.pop()
            self.block_size[h] = size
        return h

    def _more_memory(self, size: int, fl: list[int]) -> bool:
        """more_memory: a page (or the block) from the kernel, cut into blocks whose
        free-list links are written at once (one vm_write: the page faults in)."""
        amount = PAGE_SIZE if size <= PAGE_SIZE else round_page(size)
        n = amount // size if size <= PAGE_SIZE else 1
        try:
            where = self.vm.allocate(amount)
            links = bytearray(amount if n > 1 else self.HEADER)
            for i in range(1, n):
                struct.pack_into("<I", links, i * size, (where + (i - 1) * size) & 0xFFFFFFFF)
            self.vm.write(where, bytes(links))
        except MachError:
            return False
        fl.extend(where + i * size for i in range(n))
        self.refills += 1
        return True

    def free(self, h: int):
        """free: back to its free list (0 ignored)."""
        if not h:
            return
        with self.lock:
            size = self.block_size.pop(h, None)
            if size is None:
                raise ValueError(f"free of {h:#x}: not a block in use")
            self.free_lists[size].append(h)

    def stats(self) -> dict:
        with self.lock:
            live = len(self.block_size)
        vm = self.vm.stats()
        return {"hurdmalloc_blocks": live, "hurdmalloc_pages": vm["calls"].get(
                    "vm_allocate", 0),
                "hurdmalloc_failures": self.failures + vm["failures"]}



def _prot(p: int) -> str:
    return "".join(c if p & b else "-" for c, b in (("r", VM.VM_PROT_READ),
                                                    ("w", VM.VM_PROT_WRITE),
                                                    ("x", VM.VM_PROT_EXECUTE)))


def map_census(rt, limit: int = 100_000) -> dict:
    """The task's own map, entry by entry (vm_region from the bottom up, at most
    ``limit`` calls): entries counted by protection / maximum, shared or not, and size
    in pages (past 64: "big").  For looking at what a fragmented map is made of."""
    out: dict[str, int] = {}
    addr = n = 0
    while n < limit:
        try:
            start, size, prot, maxp, _, shared, _, _ = VM.vm_region(rt.task_self, addr,
                                                                    timeout=CALL_TIMEOUT,
                                                                    rt=rt)
        except MachError:  # KERN_NO_SPACE: nothing above
            break
        pages = size // PAGE_SIZE
        key = (f"{_prot(prot)}/{_prot(maxp)}{' shared' if shared else ''} "
               f"{pages if pages <= 64 else 'big'}")
        out[key] = out.get(key, 0) + 1
        addr, n = start + size, n + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
