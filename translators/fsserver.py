"""The fs / io / fsys server plumbing a file system plugs into (the part of the Hurd's
libdiskfs / libnetfs that is not the file system itself: dir-lookup.c, peropen.c,
protid.c, the io-*.c and file-*.c stubs, and pager_memcpy's mapped I/O).

A file system subclasses ``FileSystem`` (node operations, errors raised as
``MachError(protocol.defs.fs.E*)``), whose nodes are ``Node``s; the base holds what
memfs and ext2fs share of libdiskfs: node references (diskfs_nref / diskfs_nrele, with
``drop_node`` at the last one), each file's pager (``FilePagerOps``) and own mapping,
mapped io, truncation of the kernel's pages, sync.  ``FsServer`` serves
protocol.defs.fs on protid ports in a libports bucket:

  Peropen   struct peropen: one open of a node (openmodes O_READ/O_WRITE/O_EXEC, file
            pointer for offset -1), shared by the protids made from it.
  Protid    struct protid: one port (a PortInfo of ``FsServer.protid_class``) whose
            ``data`` is the Protid; it holds one node reference (FileSystem.diskfs_nref
            / diskfs_nrele) that its clean routine drops when the last send right is
            gone.

Port rights in replies: a handler returns ``SendRight.make(name)`` (MAKE_SEND from a
receive right we hold, e.g. a new protid) or ``SendRight.move(name)`` (a send right we
hold, e.g. from pager_get_port) for a mach_port_send_t reply field; ``FsDemuxer``
rewrites the reply's descriptors to that disposition (the fixed COPY_SEND of the routine
definition would need a send right in our space and keep it forever).

``FileMapping`` (translators.filemap) is the translator's own mapping of a file's memory
object (vm_map of the pager port into the translator's task; io_read/io_write become
vm_read/vm_write on it).
"""

from __future__ import annotations

import stat as _stat
import threading
import time
from dataclasses import dataclass

import structlog

from protocol import message as M
from protocol.defs import fs as F
from protocol.defs import mach as VM
from protocol.defs import mach_port as P
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE, round_page, trunc_page
from translators import libpager as PG
from translators import libports as LP
from translators.filemap import FileMapping, MappingBudget, io_errno

log = structlog.get_logger("fsserver")

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


@dataclass(frozen=True)
class SendRight:
    """A port right for a mach_port_send_t reply field, with the disposition to send it
    with (see the module docstring)."""

    name: int
    disposition: int

    @classmethod
    def make(cls, name: int) -> "SendRight":
        return cls(name, M.MACH_MSG_TYPE_MAKE_SEND)

    @classmethod
    def move(cls, name: int) -> "SendRight":
        return cls(name, M.MACH_MSG_TYPE_MOVE_SEND)

    @classmethod
    def null(cls) -> "SendRight":
        return cls(M.MACH_PORT_NULL, M.MACH_MSG_TYPE_COPY_SEND)


# ---------------------------------------------------------------- the file system's side

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


# ---------------------------------------------------------------- per-open state

class Peropen:
    """struct peropen: one open of a node."""

    __slots__ = ("node", "openmodes", "filepointer", "lock")

    def __init__(self, node, openmodes: int):
        self.node = node
        self.openmodes = openmodes & OPENMODES
        self.filepointer = 0
        self.lock = threading.Lock()


class Protid:
    """struct protid: the object behind one protid port (no user identity: machemu
    trusts every client)."""

    __slots__ = ("po", "pi")

    def __init__(self, po: Peropen):
        self.po = po
        self.pi = None

    @property
    def node(self):
        return self.po.node


def split_path(path: str) -> tuple[list[str], bool]:
    """Components of a dir_lookup path (leading and repeated slashes skipped, as
    diskfs_S_dir_lookup does) and whether it ended with a slash (must be a directory)."""
    trailing = path.endswith("/") and path.strip("/") != ""
    return [c for c in path.split("/") if c], trailing


class FsDemuxer(LP.PortsDemuxer):
    """PortsDemuxer that sends SendRight reply values with their own disposition."""

    def serve(self, msg: M.Message) -> M.Message | None:
        reply = super().serve(msg)
        if reply is not None and reply.descs:
            reply.descs = [(v.name, v.disposition) if isinstance(v, SendRight) else (v, d)
                           for v, d in reply.descs]
        return reply


class FsServer:
    """The fs/io/fsys handlers over one FileSystem, on protid ports in ``bucket``.

    ``handlers()`` is the {routine: fn(pi, *args)} table (for FsDemuxer / PortsDemuxer);
    ``new_protid(node, openmodes)`` makes a port (PortInfo, one creator reference);
    ``root_send_right(openmodes)`` a send right to a new protid on the root (for
    netname_check_in)."""

    def __init__(self, fs: FileSystem, bucket: LP.PortBucket, name: str = "fs"):
        self.fs = fs
        self.bucket = bucket
        self.name = name
        self.protid_class = LP.ports_create_class(clean_routine=self._clean_protid,
                                                  name=f"{name}-protid")
        self._lock = threading.Lock()
        self.stats = {"lookups": 0, "protids_made": 0, "protids_freed": 0, "reads": 0,
                      "writes": 0, "bytes_read": 0, "bytes_written": 0, "errors": 0}

    def _count(self, **kw):
        with self._lock:
            for k, v in kw.items():
                self.stats[k] += v

    # ------------------------------------------------------------ ports

    def new_protid(self, node, openmodes: int) -> LP.PortInfo:
        """diskfs_create_protid: a port for ``node``; consumes one node reference."""
        try:
            cred = Protid(Peropen(node, openmodes))
            pi = LP.ports_create_port(self.protid_class, self.bucket, data=cred)
        except BaseException:
            self.fs.diskfs_nrele(node)
            raise
        cred.pi = pi
        self._count(protids_made=1)
        return pi

    def root_send_right(self, openmodes: int = F.O_READ | F.O_EXEC) -> int:
        """A send right (in our space) to a new protid on the root directory."""
        pi = self.new_protid(self.fs.root(), openmodes)
        try:
            return LP.ports_get_send_right(pi)
        finally:
            LP.ports_port_deref(pi)  # the send rights hold it now

    def _clean_protid(self, pi: LP.PortInfo):
        """The protid's last reference went: drop its node reference."""
        cred = pi.data
        if isinstance(cred, Protid) and cred.po.node is not None:
            node, cred.po.node = cred.po.node, None
            try:
                self.fs.diskfs_nrele(node)
            except Exception:
                log.exception("diskfs_nrele failed")
        self._count(protids_freed=1)

    def _reply_port(self, pi: LP.PortInfo) -> SendRight:
        """A new port's creator reference handed to its send rights: MAKE_SEND in the
        reply (ports_get_right), then drop the creator's reference."""
        try:
            return SendRight.make(LP.ports_get_right(pi))
        finally:
            LP.ports_port_deref(pi)

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _cred(pi) -> Protid:
        cred = pi.data
        if not isinstance(cred, Protid) or cred.po.node is None:
            raise fs_error(F.EOPNOTSUPP, "not a protid")
        return cred

    def _dir(self, pi):
        cred = self._cred(pi)
        if not self.fs.is_dir(cred.node):
            raise fs_error(F.ENOTDIR)
        return cred.node

    @staticmethod
    def _check_name(name: str):
        if not name or "/" in name:
            raise fs_error(F.EINVAL, "bad name")
        if len(name.encode()) > F.NAME_MAX:
            raise fs_error(F.ENAMETOOLONG)

    def handlers(self) -> dict:
        return {F.dir_lookup: self.dir_lookup, F.dir_mkdir: self.dir_mkdir,
                F.dir_rmdir: self.dir_rmdir, F.dir_unlink: self.dir_unlink,
                F.dir_readdir: self.dir_readdir, F.io_read: self.io_read,
                F.io_write: self.io_write, F.io_stat: self.io_stat, F.io_map: self.io_map,
                F.file_set_size: self.file_set_size, F.file_sync: self.file_sync,
                F.fsys_syncfs: self.fsys_syncfs}

    def demuxer(self) -> FsDemuxer:
        return FsDemuxer(self.bucket, self.handlers())

    # ------------------------------------------------------------ fs

    def dir_lookup(self, pi, file_name: str, flags: int, mode: int):
        """dir_lookup: walk ``file_name`` from this directory (see ``walk``) and return
        (FS_RETRY_NORMAL, "", send right to a new protid whose openmodes are
        flags & (O_READ|O_WRITE|O_EXEC))."""
        self._count(lookups=1)
        node = self.walk(self._dir(pi), file_name, flags, mode)
        pi2 = self.new_protid(node, flags)
        return F.FS_RETRY_NORMAL, "", self._reply_port(pi2)

    def walk(self, node, file_name: str, flags: int, mode: int):
        """The path walk of diskfs_S_dir_lookup, from directory ``node``: components
        split on "/" ("" or "." is the directory itself, ".." its parent); with O_CREAT
        the last component is made a regular file of ``mode`` if missing (EEXIST with
        O_EXCL if present); O_TRUNC empties the file; O_WRITE or O_TRUNC on a directory
        is EISDIR; a trailing "/" requires a directory.  Returns the node, referenced."""
        fs = self.fs
        comps, trailing = split_path(file_name)
        for c in comps:
            if len(c.encode()) > F.NAME_MAX:
                raise fs_error(F.ENAMETOOLONG)
        if flags & F.O_CREAT and trailing:
            raise fs_error(F.EISDIR, "O_CREAT with a trailing slash")
        fs.diskfs_nref(node)
        created = False
        try:
            for i, comp in enumerate(comps):
                last = i == len(comps) - 1
                if not fs.is_dir(node):
                    raise fs_error(F.ENOTDIR)
                if last and flags & F.O_CREAT and comp not in (".", ".."):
                    nxt, created = self._open_create(node, comp, flags, mode)
                else:
                    nxt = fs.lookup(node, comp)
                fs.diskfs_nrele(node)
                node = nxt
            is_dir = fs.is_dir(node)
            if trailing and not is_dir:
                raise fs_error(F.ENOTDIR)
            if is_dir and flags & (F.O_WRITE | F.O_TRUNC):
                raise fs_error(F.EISDIR)
            if flags & F.O_CREAT and flags & F.O_EXCL and not created:
                raise fs_error(F.EEXIST)
            if flags & F.O_TRUNC and not created:
                fs.set_size(node, 0)
        except BaseException:
            fs.diskfs_nrele(node)
            raise
        return node

    def _open_create(self, dir, name: str, flags: int, mode: int):
        """(node, created) for O_CREAT."""
        fs = self.fs
        if flags & F.O_EXCL:
            return fs.create(dir, name, mode), True
        try:
            return fs.lookup(dir, name), False
        except MachError as e:
            if e.code != F.ENOENT:
                raise
        try:
            return fs.create(dir, name, mode), True
        except MachError as e:
            if e.code != F.EEXIST:
                raise
            return fs.lookup(dir, name), False  # another client made it meanwhile

    def dir_mkdir(self, pi, name: str, mode: int):
        """dir_mkdir."""
        dir = self._dir(pi)
        self._check_name(name)
        if name in (".", ".."):
            raise fs_error(F.EEXIST)
        self.fs.mkdir(dir, name, mode)

    def dir_rmdir(self, pi, name: str):
        """dir_rmdir (ENOTEMPTY for a directory with entries)."""
        dir = self._dir(pi)
        self._check_name(name)
        if name == ".":
            raise fs_error(F.EINVAL)
        if name == "..":
            raise fs_error(F.ENOTEMPTY)
        self.fs.rmdir(dir, name)

    def dir_unlink(self, pi, name: str):
        """dir_unlink."""
        dir = self._dir(pi)
        self._check_name(name)
        if name in (".", ".."):
            raise fs_error(F.EISDIR)
        self.fs.unlink(dir, name)

    def dir_readdir(self, pi, entry: int, nentries: int, bufsiz: int):
        """dir_readdir: entries from index ``entry`` on, at most ``nentries`` (-1: no
        limit), packed so the data is at most ``bufsiz`` bytes (0: no limit; at least one
        entry is always returned when any is left).  data = msgpack [[name, d_type,
        inode], ...], amount = the number of entries."""
        dir = self._dir(pi)
        if entry < 0 or nentries < -1:
            raise fs_error(F.EINVAL)
        ents = self.fs.readdir(dir)[entry:]
        if nentries >= 0:
            ents = ents[:nentries]
        limit = min(bufsiz, MAX_IO_BYTES) if bufsiz else MAX_IO_BYTES
        out, size = [], 5  # the array header
        for name, typ, ino in ents:
            rec = [name, typ, ino]
            n = len(M.packb(rec))
            if out and size + n > limit:
                break
            out.append(rec)
            size += n
        return M.packb(out), len(out)

    # ------------------------------------------------------------ io

    def _file(self, pi, need: int):
        cred = self._cred(pi)
        if self.fs.is_dir(cred.node):
            raise fs_error(F.EISDIR)
        if not cred.po.openmodes & need:
            raise fs_error(F.EBADF, "not open for " + ("reading" if need == F.O_READ
                                                        else "writing"))
        return cred

    def io_read(self, pi, offset: int, amount: int):
        """io_read: at most ``amount`` bytes (and at most MAX_IO_BYTES) from ``offset``;
        offset -1 reads at the file pointer and advances it; b"" at EOF."""
        cred = self._file(pi, F.O_READ)
        if offset < -1:
            raise fs_error(F.EINVAL)
        amount = min(amount, MAX_IO_BYTES)
        po = cred.po
        if offset == -1:
            with po.lock:
                data = self.fs.read(po.node, po.filepointer, amount)
                po.filepointer += len(data)
        else:
            data = self.fs.read(po.node, offset, amount)
        self._count(reads=1, bytes_read=len(data))
        return data

    def io_write(self, pi, data, offset: int):
        """io_write: write ``data`` at ``offset`` (extending the file); offset -1 writes
        at the file pointer and advances it.  Returns the amount written."""
        cred = self._file(pi, F.O_WRITE)
        if offset < -1:
            raise fs_error(F.EINVAL)
        data = bytes(data)
        po = cred.po
        if offset == -1:
            with po.lock:
                n = self.fs.write(po.node, po.filepointer, data)
                po.filepointer += n
        else:
            n = self.fs.write(po.node, offset, data)
        self._count(writes=1, bytes_written=n)
        return n

    def io_stat(self, pi):
        """io_stat: a dict of struct stat fields (st_ino, st_mode, st_size, st_nlink,
        st_blksize, st_blocks, ...)."""
        return self.fs.stat(self._cred(pi).node)

    def io_map(self, pi):
        """io_map: send rights to the node's memory object, memobjrd if open for reading,
        memobjwt if open for writing (null otherwise)."""
        cred = self._cred(pi)
        modes = cred.po.openmodes
        rd = wt = SendRight.null()
        try:
            if modes & F.O_READ:
                rd = SendRight.move(self.fs.map(cred.node))
            if modes & F.O_WRITE:
                wt = SendRight.move(self.fs.map(cred.node))
        except BaseException:
            if rd.name:
                self._deallocate(rd.name)
            raise
        return rd, wt

    def _deallocate(self, name: int):
        rt = self.bucket.rt
        if rt is not None:
            try:
                P.mach_port_deallocate(rt.task_self, name, rt=rt)
            except MachError:
                pass

    def file_set_size(self, pi, new_size: int):
        """file_set_size: truncate or extend."""
        cred = self._file(pi, F.O_WRITE)
        if new_size < 0:
            raise fs_error(F.EINVAL)
        self.fs.set_size(cred.node, new_size)

    def file_sync(self, pi, wait: int, omit_metadata: int):
        """file_sync."""
        cred = self._cred(pi)
        if not self.fs.is_dir(cred.node):
            self.fs.sync(cred.node, bool(wait))

    def fsys_syncfs(self, pi, wait: int, do_children: int):
        """fsys_syncfs (served on any protid here: machemu has no separate control
        port)."""
        self._cred(pi)
        if not self.fs.syncfs(bool(wait)):
            raise fs_error(F.EIO, "fsys_syncfs")


def diskfs_startup(t: LP.Translator, srv: FsServer, pager_bucket: LP.PortBucket) -> int:
    """diskfs_spawn_first_thread + diskfs_startup_diskfs for translator ``t``: start
    the server loops (the --threads model), the pager bucket's on threads of their own
    (an io_write blocked in vm_write waits for a data_request that only a pager thread
    can answer), then ``srv``'s; check a protid on the root in with the name server
    under ``t.name``, signed with a private port (Translator.check_in).  Returns that
    send right."""
    args = t.args
    kw = dict(thread_timeout=args.thread_timeout or None, workers=args.workers)
    t.add_server(LP.make_server(args.threads, pager_bucket, PG.PagerDemuxer(pager_bucket),
                                name=f"{t.name}-pager", **kw).start())
    t.add_server(LP.make_server(args.threads, srv.bucket, srv.demuxer(), name=t.name,
                                **kw).start())
    root = srv.root_send_right()
    t.check_in(root)
    return root


def pager_bucket_stats(bucket: LP.PortBucket) -> dict:
    """libpager's counters over the pager bucket, as pager_* stats fields."""
    return {f"pager_{k}": v for k, v in PG.pager_bucket_stats(bucket).items()}


def file_type(mode: int) -> int:
    """The d_type of a st_mode."""
    if _stat.S_ISDIR(mode):
        return DT_DIR
    if _stat.S_ISREG(mode):
        return DT_REG
    return DT_UNKNOWN
