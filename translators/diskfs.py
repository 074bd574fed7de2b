"""The file-system side of the Hurd's libdiskfs that memfs and ext2fs share (node-*.c,
file-set-size's truncation, sync.c's diskfs_sync_everything, pager_memcpy's mapped I/O):
``Node`` (struct node), ``FileSystem`` (node references diskfs_nref / diskfs_nrele with
``drop_node`` at the last one, each file's pager (``FilePagerOps``) and own mapping
(translators.filemap), mapped io, truncation of the kernel's pages, sync) and the
errors handlers raise (``fs_error``).  The fs / io / fsys server routines that call it
are translators.fsserver.

A file system subclasses ``FileSystem`` (node operations, errors raised as
``MachError(protocol.defs.fs.E*)``), whose nodes are ``Node``s.
"""

from __future__ import annotations

import stat as _stat
import threading
import time

import structlog

from protocol import message as M
from protocol.defs import fs as F
from protocol.defs import mach as VM
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE, round_page, trunc_page
from translators import libpager as PG
from translators.filemap import FileMapping, MappingBudget, io_errno

log = structlog.get_logger("diskfs")

# struct dirent d_type values (dirent.h).
DT_UNKNOWN = 0
DT_DIR = 4
DT_REG = 8
# The most data one io_read returns / one readdir packs (one out-of-line frame).
MAX_IO_BYTES = M.MAX_OOL_BYTES
OPENMODES = F.O_READ | F.O_WRITE | F.O_EXEC


def fs_error(code: int, what: str = "") -> MachError:
    """An error reply (the handler raises it; the client's stub raises MachError(code))."""
    return MachError(code, what)


class Node:
    """struct node: what every file system's node has.  ``references`` counts the hard
    references (FileSystem.diskfs_nref / diskfs_nrele: open protids, walks in
    progress, the file system's own on the root).  ``dead``: the last link is gone; the
    node lives on while referenced and is dropped with its last reference
    (FileSystem.drop_node).  ``io_lock`` serializes one file's reads, writes and size
    changes; ``pager`` (libpager, made on first use) and ``mapping`` (the file system's
    own mapping of the file's memory object) belong to regular files."""

    kind = "node"  # for repr
    dead = False

    def __init__(self, ino: int, mode: int, size: int = 0):
        self.ino = ino
        self.mode = mode
        self.size = size
        self.references = 0
        self.io_lock = threading.Lock()
        self.pager = None
        self.mapping: FileMapping | None = None
        self.pager_error = 0  # the last error a pager op of this file gave (errno)

    @property
    def is_dir(self) -> bool:
        return _stat.S_ISDIR(self.mode)

    def __repr__(self):
        return f"<{self.kind} {self.ino} {'dir' if self.is_dir else 'file'} size {self.size}>"


class FilePagerOps(PG.PagerOps):
    """The libpager callbacks of one file (``node``), the part every file system shares:
    the object's extent is the file's size in whole pages.  A file system adds
    read_page, write_page / write_pages and, if it write-locks holes, unlock_page."""

    def __init__(self, node: Node):
        self.node = node

    def failed(self, e: MachError) -> MachError:
        """Note the error a pager op is about to give (for the mapped I/O that caused
        the fault, see FileSystem._mapped_io); returns it to raise."""
        self.node.pager_error = e.code
        return e

    def report_extent(self, pager) -> int:
        """pager_report_extent: the file's size, whole pages."""
        return round_page(self.node.size)


class FileSystem:
    """What a file system supplies (the diskfs_* / netfs_* callbacks) and the part of
    libdiskfs every file system here shares: node reference counting, each file's
    pager and the file system's own mapping of it, I/O through that mapping, and
    truncation and sync of the kernel's pages.

    Nodes are ``Node``s.  Every method may raise MachError(F.E*).  Methods that return
    a node return it *referenced* (diskfs_lookup's convention); the caller drops it with
    ``diskfs_nrele``.  The file system does its own locking: handlers run concurrently;
    ``lock`` guards the tree (or node table) and references.

    A subclass sets ``root_node`` (holding the file system's own reference), and
    implements lookup, create, mkdir, rmdir, unlink, readdir, stat, set_size,
    node_iterate, file_pager_ops, grow and read_direct / write_direct; it extends
    drop_node to free the node's storage.  With ``rt`` and ``pager_bucket`` files get
    pagers (io_map, mapped I/O); ``direct_io`` makes read/write skip the mapping."""

    notify_on_evict = False  # pager_create's: True supplies pages precious

    def __init__(self, rt=None, pager_bucket=None, direct_io: bool = False):
        self.rt = rt
        self.pager_bucket = pager_bucket
        self.direct_io = direct_io
        self.lock = threading.RLock()
        self._stats_lock = threading.Lock()
        self.stats: dict[str, int] = {}
        self.root_node: Node | None = None
        self.map_budget = MappingBudget()  # address space the files' windows may hold

    def map_stats(self) -> dict:
        """The file windows' address space now and the idle windows evicted for it."""
        return {"map_bytes": self.map_budget.mapped,
                "map_evictions": self.map_budget.evictions}

    def count(self, **kw):
        """Add to ``stats``."""
        with self._stats_lock:
            for k, v in kw.items():
                self.stats[k] += v

    # ------------------------------------------------------------ references

    def diskfs_nref(self, node: Node) -> Node:
        """diskfs_nref (libdiskfs/node-nref.c): add a reference; returns ``node``."""
        with self.lock:
            node.references += 1
        return node

    def diskfs_nrele(self, node: Node):
        """diskfs_nrele (libdiskfs/node-nrele.c): drop a reference; the last one of a
        file with no links left drops it (``drop_node``, without ``lock`` held)."""
        with self.lock:
            if node.references <= 0:
                raise AssertionError(f"{node}: reference underflow")
            node.references -= 1
            drop = node.references == 0 and node.dead and not node.is_dir
        if drop:
            self.drop_node(node)

    def drop_node(self, node: Node):
        """diskfs_drop_node: the last user of an unlinked file is gone.  Here: its
        mapping is unmapped and its pager shut down (the kernel's pages are flushed,
        not returned: nothing more comes back); a file system extends this to forget
        the node and free its storage."""
        with node.io_lock:
            if node.mapping is not None:
                node.mapping.unmap()
                node.mapping = None
            pager, node.pager = node.pager, None
        if pager is not None:
            try:
                PG.pager_flush(pager, True)
                PG.pager_shutdown(pager)
            except MachError as e:
                log.warning("pager shutdown failed", ino=node.ino, code=e.code)
            PG.pager_deref(pager)

    def root(self) -> Node:
        """The root directory node (referenced)."""
        return self.diskfs_nref(self.root_node)

    def is_dir(self, node: Node) -> bool:
        return node.is_dir

    def node_iterate(self) -> list:
        """diskfs_node_iterate: the regular files in use now (a snapshot)."""
        raise NotImplementedError

    # ------------------------------------------------------------ checks

    @staticmethod
    def _live_dir(dir: Node):
        """ENOTDIR for a file, ENOENT for a removed directory."""
        if not dir.is_dir:
            raise fs_error(F.ENOTDIR)
        if dir.dead:
            raise fs_error(F.ENOENT, "directory removed")

    @staticmethod
    def _file(node: Node):
        if node.is_dir:
            raise fs_error(F.EISDIR)

    # ------------------------------------------------------------ directories

    def lookup(self, dir, name: str):
        """One component (also "." and ".."): the node, referenced.  ENOENT, ENOTDIR."""
        raise NotImplementedError

    def create(self, dir, name: str, mode: int):
        """Create a regular file (EEXIST if the name exists): the node, referenced."""
        raise NotImplementedError

    def mkdir(self, dir, name: str, mode: int):
        raise NotImplementedError

    def rmdir(self, dir, name: str):
        raise NotImplementedError

    def unlink(self, dir, name: str):
        raise NotImplementedError

    def readdir(self, dir) -> list:
        """All entries, in a stable order: [(name, d_type, inode), ...]."""
        raise NotImplementedError

    # ------------------------------------------------------------ pager and mapping

    def file_pager_ops(self, node: Node) -> FilePagerOps:
        """The libpager callbacks for ``node``'s pager."""
        raise NotImplementedError

    def _pager(self, node: Node):
        """The file's pager, made on first use (diskfs_get_filemap's pager_create:
        cacheable, copy delay)."""
        with self.lock:
            if node.pager is None:
                if self.pager_bucket is None:
                    raise fs_error(F.EOPNOTSUPP, "no pager bucket")
                node.pager = PG.pager_create(self.file_pager_ops(node), self.pager_bucket,
                                             True, VM.MEMORY_OBJECT_COPY_DELAY,
                                             self.notify_on_evict, upi=node)
                self.count(pagers_created=1)
            return node.pager

    def _port(self, node: Node) -> int:
        return PG.pager_get_port(self._pager(node))

    def _mapped_io(self, node: Node, write: bool, offset: int, arg):
        """pager_memcpy: read ``arg`` bytes at ``offset`` or write the bytes ``arg``
        there, through the file system's own window on the file (caller holds
        io_lock).  A failure is an errno (filemap.io_errno)."""
        if node.mapping is None:
            node.mapping = FileMapping(self.rt, lambda: self._port(node), self.map_budget,
                                       node.io_lock)
        m = node.mapping
        before = m.remaps
        node.pager_error = 0
        try:
            return m.write(offset, arg) if write else m.read(offset, arg)
        except MachError as e:
            raise fs_error(io_errno(e.code, node.pager_error), str(e)) from e
        finally:
            if m.remaps != before:
                self.count(remaps=m.remaps - before)

    def map(self, node: Node) -> int:
        """A send right (one user reference, ours to give away) to the node's memory
        object (diskfs_get_filemap / pager_get_port)."""
        if node.is_dir:
            raise fs_error(F.EOPNOTSUPP, "directories have no memory object")
        return self._port(node)

    def _flush_past(self, node: Node, size: int, old: int):
        """The kernel's pages of a file shrinking from ``old`` to ``size``: the partial
        last page is returned first (pager_return_some, so its head survives), every
        page past the new end is flushed (pager_flush_some).  Caller holds io_lock."""
        pager = node.pager
        if pager is None:
            return
        if size % PAGE_SIZE:
            PG.pager_return_some(pager, trunc_page(size), PAGE_SIZE, True)
        end = max(round_page(old), node.mapping.end if node.mapping else 0)
        if end > round_page(size):
            PG.pager_flush_some(pager, round_page(size), end - round_page(size), True)

    # ------------------------------------------------------------ file I/O

    def grow(self, node: Node, size: int):
        """diskfs_grow: make room for ``node`` to reach ``size`` bytes and set its size
        (EFBIG, ENOSPC).  Caller holds io_lock."""
        raise NotImplementedError

    def read_direct(self, node: Node, offset: int, n: int) -> bytes:
        """--direct-io: ``n`` bytes (all before EOF) from the file's storage."""
        raise NotImplementedError

    def write_direct(self, node: Node, offset: int, data: bytes) -> int:
        """--direct-io: store ``data`` at ``offset``, growing the file; returns the
        amount stored (short when the storage ran out part way)."""
        raise NotImplementedError

    def read(self, node: Node, offset: int, amount: int) -> bytes:
        """_diskfs_rdwr_internal reading: at most ``amount`` bytes from ``offset``, b""
        at or past EOF; through the file's mapping (the kernel's page cache), or its
        storage with ``direct_io``."""
        self._file(node)
        with node.io_lock:
            n = min(amount, node.size - offset)
            if n <= 0:
                return b""
            if self.direct_io:
                return self.read_direct(node, offset, n)
            return self._mapped_io(node, False, offset, n)

    def write(self, node: Node, offset: int, data: bytes) -> int:
        """_diskfs_rdwr_internal writing: store ``data`` at ``offset`` (the file grows
        first, diskfs_grow), through the file's mapping or, with ``direct_io``, its
        storage.  Returns the amount written."""
        self._file(node)
        n = len(data)
        with node.io_lock:
            old = node.size
            try:
                if self.direct_io:
                    return self.write_direct(node, offset, data)
                if offset + n > node.size:
                    self.grow(node, offset + n)
                if n:
                    self._mapped_io(node, True, offset, data)
            except MachError:
                if node.size != old:
                    self._undo_grow(node, old)
                raise
        return n

    def _undo_grow(self, node: Node, size: int):
        """A write that grew the file failed: back to ``size`` (its pages past it
        flushed, its storage there freed), so a failed io_write leaves the size as it
        was.  Caller holds io_lock."""
        try:
            self.set_size_locked(node, size)
        except MachError as e:
            log.error("restoring the size after a failed write failed", ino=node.ino,
                      size=size, code=e.code)

    def set_size_locked(self, node: Node, size: int):
        """file_set_size's work with io_lock held (see ``set_size``)."""
        raise NotImplementedError

    def set_size(self, node, size: int):
        raise NotImplementedError

    def stat(self, node) -> dict:
        raise NotImplementedError

    # ------------------------------------------------------------ sync

    def sync(self, node: Node, wait: bool):
        """file_sync: the file's dirty pages back from the kernel (pager_sync)."""
        if node.pager is not None and not PG.pager_sync(node.pager, wait):
            raise fs_error(F.EIO, "pager_sync")  # the kernel never answered

    def syncfs(self, wait: bool, timeout: float | None = None) -> bool:
        """fsys_syncfs (diskfs_sync_everything): pager_sync on every file in use that
        has a pager, within ``timeout`` in all (None: as long as it takes); a failure is
        logged and the others are still synced.  Whether every pager synced."""
        ok, end = True, None if timeout is None else time.monotonic() + timeout
        for pager in filter(None, (node.pager for node in self.node_iterate())):
            left = None if end is None else max(0.0, end - time.monotonic())
            try:
                ok = PG.pager_sync(pager, wait, left) and ok
            except MachError as e:
                log.warning("pager_sync failed", code=e.code)
                ok = False
        return ok


def file_type(mode: int) -> int:
    """The d_type of a st_mode."""
    if _stat.S_ISDIR(mode):
        return DT_DIR
    if _stat.S_ISREG(mode):
        return DT_REG
    return DT_UNKNOWN
