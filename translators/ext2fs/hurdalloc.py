"""ext2fs's own memory allocated as the Hurd's ext2fs allocated it (translators.hurdmem,
libpager's pagemap storage, pager_memcpy's windows), each a switch of the translator:

  --hurd-heap            glibc's malloc on the Hurd (brk main arena, mprotected arena
                         heaps) for the file system's structures: each node (struct
                         node with ext2fs's struct disknode, diskfs_make_node_alloc),
                         each file's pager (struct pager with its port_info,
                         ports_create_port) while they live, and a directory
                         operation's struct dirstat and name (diskfs_lookup) for the
                         operation.
  --malloc-arenas N      arena_max (default 2: glibc's 2 per processor on 32 bits, and
                         GNU Mach ran the Hurd on one).
  --hurdmalloc           each server thread's signal state (struct hurd_sigstate,
                         hurdsig.c _hurd_thread_sigstate, made at the thread's first
                         pager_memcpy: its signal preemption needs it) from
                         hurdmalloc.c's buckets; never freed, as in 2011 (sigstates of
                         dead threads were kept until 2012's _hurd_sigstate_delete).
  --pagemap none|mmap|heap
                         libpager's pagemap storage (libpager.pagemap): none (machemu's
                         dict only, the default), mmap (the Hurd until 2021: a region
                         per pager, remapped as it grows, unmapped at terminate), heap
                         (since ec5632b9: reallocarray on the malloc heap; needs
                         --hurd-heap).
  --io-window moving|per-call
                         io_read / io_write through a window kept per file and moved
                         (machemu's FileMapping, the default) or pager_memcpy's window
                         mapped and unmapped for every call (filemap.PagerMemcpy).
  --map-census           at exit, "map census" in the log: the entries of ext2fs's
                         own map by protection and size (hurdmem.map_census).

Sizes are the Hurd's structures on i386, rounded (they set how fast the heap grows, not
what the experiment shows: the map's entries come from the calls, whatever the sizes).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

from translators import hurdmem
from translators.filemap import PagerMemcpy
from translators.libpager import pagemap as PM

NODE_SIZE = 520      # struct node (libdiskfs, ~380 B) + struct disknode (ext2fs, ~140 B)
PAGER_SIZE = 160     # struct pager with its struct port_info (libpager priv.h)
DIRSTAT_SIZE = 32    # ext2fs's struct dirstat (diskfs_dirstat_size)
SIGSTATE_SIZE = 1200  # struct hurd_sigstate (actions and pending details for NSIG 33)
PAGEMAP_MODES = ("none", "mmap", "heap")
IO_WINDOWS = ("moving", "per-call")
DIR_OPS = ("lookup", "create", "mkdir", "rmdir", "unlink", "readdir")


def add_arguments(ap):
    """ext2fs's allocation switches (the module docstring)."""
    g = ap.add_argument_group("the Hurd's allocations (translators.ext2fs.hurdalloc)")
    g.add_argument("--hurd-heap", action="store_true",
                   help="glibc's malloc on the Hurd (a brk heap grown by vm_protect, "
                        "arena heaps mprotected page by page) for nodes, pagers and "
                        "directory lookups")
    g.add_argument("--malloc-arenas", type=int, default=None, metavar="N",
                   help="malloc arenas at most (default 2: glibc's 2 per processor "
                        "on 32 bits, the Hurd on one)")
    g.add_argument("--hurdmalloc", action="store_true",
                   help="each server thread's signal state from hurdmalloc's buckets "
                        "(vm_allocate anywhere, never freed)")
    g.add_argument("--pagemap", choices=PAGEMAP_MODES, default="none",
                   help="libpager's pagemap storage: none (default), mmap (a region per "
                        "pager remapped as it grows: the Hurd until 2021), heap (on the "
                        "malloc heap, since 2021; needs --hurd-heap)")
    g.add_argument("--io-window", choices=IO_WINDOWS, default="moving",
                   help="io_read/io_write through a window kept per file (moving, "
                        "default) or pager_memcpy's window mapped and unmapped per call")
    g.add_argument("--map-census", action="store_true",
                   help="at exit, log what ext2fs's own map is made of (vm_region walk)")


def check_args(ap, args):
    if args.pagemap == "heap" and not args.hurd_heap:
        ap.error("--pagemap heap needs --hurd-heap")
    if args.malloc_arenas is not None and args.malloc_arenas < 1:
        ap.error("--malloc-arenas must be at least 1")


class Ext2Allocations:
    """What ext2fs allocates in its own task (each part on if its switch is).  Every
    method is cheap when its part is off."""

    def __init__(self, rt=None, heap: bool = False, hurdmalloc: bool = False,
                 pagemap: str = "none", io_window: str = "moving",
                 arenas: int | None = None):
        if pagemap not in PAGEMAP_MODES:
            raise ValueError(f"pagemap must be one of {', '.join(PAGEMAP_MODES)}")
        if io_window not in IO_WINDOWS:
            raise ValueError(f"io_window must be one of {', '.join(IO_WINDOWS)}")
        if pagemap == "heap" and not heap:
            raise ValueError("a heap pagemap needs the heap")
        if rt is None and (heap or hurdmalloc or pagemap != "none"):
            raise ValueError("the Hurd's allocations need the task (rt)")
        self.rt, self.io_window, self.pagemap = rt, io_window, pagemap
        self.malloc = hurdmem.Malloc(rt, arenas) if heap else None
        self.hurdmalloc = hurdmem.HurdMalloc(rt) if hurdmalloc else None
        self._tls = threading.local()
        self._pagemaps = None
        if pagemap != "none":
            self._pagemaps = hurdmem.TaskVM(rt, "pagemap")
            storage = (PM.HeapPagemap if pagemap == "heap" else PM.MappedPagemap)
            arg = self.malloc if pagemap == "heap" else self._pagemaps
            PM.set_pagemap_storage(lambda: storage(arg))
        self.sigstates = 0

    @property
    def active(self) -> bool:
        return bool(self.malloc or self.hurdmalloc or self._pagemaps
                    or self.io_window != "moving")

    # --- the file system's structures

    def _alloc(self, node, field: str, size: int):
        if self.malloc is not None:
            setattr(node, field, self.malloc.malloc(size))

    def _free(self, node, field: str):
        if self.malloc is not None:
            self.malloc.free(getattr(node, field))
            setattr(node, field, 0)

    def node_alloc(self, node):
        """diskfs_make_node_alloc: the node's memory (``node.heap``)."""
        self._alloc(node, "heap", NODE_SIZE)

    def node_free(self, node):
        self._free(node, "heap")

    def pager_alloc(self, node):
        """pager_create's ports_create_port: the pager's memory (``node.pager_heap``)."""
        self._alloc(node, "pager_heap", PAGER_SIZE)

    def pager_free(self, node):
        self._free(node, "pager_heap")

    @contextmanager
    def dirstat(self, name: str = ""):
        """diskfs_lookup's struct dirstat and the name, for one directory operation."""
        m = self.malloc
        addr = m.malloc(DIRSTAT_SIZE + len(name) + 1) if m is not None else 0
        try:
            yield
        finally:
            if addr:
                m.free(addr)

    def with_dirstat(self, fn):
        """``fn(dir, name, ...)`` wrapped in ``dirstat(name)``."""
        if self.malloc is None:
            return fn

        def wrapped(dir, *args, **kw):
            with self.dirstat(args[0] if args and isinstance(args[0], str) else ""):
                return fn(dir, *args, **kw)
        return wrapped

    def thread_state(self):
        """_hurd_thread_sigstate: the calling thread's signal state, made at its first
        call (hurdmalloc'd, never freed)."""
        if self.hurdmalloc is not None and not getattr(self._tls, "sigstate", 0):
            self._tls.sigstate = self.hurdmalloc.malloc(SIGSTATE_SIZE) or 0
            if self._tls.sigstate:
                self.sigstates += 1

    def file_mapping(self, rt, get_port):
        """The object io goes through for a file: PagerMemcpy with --io-window
        per-call, else None (the file system's own FileMapping)."""
        if self.io_window != "per-call":
            return None
        return PagerMemcpy(rt, get_port)

    def stats(self) -> dict:
        out = {}
        if self.malloc is not None:
            out.update(self.malloc.stats())
        if self.hurdmalloc is not None:
            out.update(self.hurdmalloc.stats(), sigstates=self.sigstates)
        if self._pagemaps is not None:
            s = self._pagemaps.stats()
            out.update({f"pagemap_{k}": v for k, v in s["calls"].items()},
                       pagemap_failures=s["failures"])
        return out
