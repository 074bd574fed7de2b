"""The fs / io / fsys server plumbing a file system plugs into (the part of the Hurd's
libdiskfs / libnetfs that is not the file system itself: dir-lookup.c, peropen.c,
protid.c, the io-*.c and file-*.c stubs, and pager_memcpy's mapped I/O).

A file system is a ``translators.diskfs.FileSystem`` (libdiskfs's node side: nodes,
references, pagers, mapped io, sync).  ``FsServer`` serves protocol.defs.fs on protid
ports in a libports bucket:

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
vm_read/vm_write on it).  The Hurd's pager_memcpy maps a window for one io_read or
io_write and unmaps it after, so a file nobody has mapped holds no reference to its
memory object between calls; here the window stays mapped while the file is open and is
unmapped when its last open goes (``_clean_protid``): the kernel's vm_object_deallocate
then caches the object (its pager allows caching), and the next open's vm_map finds it
there (vm_object_enter).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import structlog

from protocol import message as M
from protocol.defs import fs as F
from protocol.defs import mach_port as P
from protocol.kern_return import MachError
from translators import libpager as PG
from translators import libports as LP
from translators.diskfs import (
    MAX_IO_BYTES,
    OPENMODES,
    FileSystem,
    fs_error,
)

log = structlog.get_logger("fsserver")



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
        self._opens: dict[object, int] = {}  # node -> its live protids (one per open)
        self.stats = {"lookups": 0, "protids_made": 0, "protids_freed": 0, "reads": 0,
                      "writes": 0, "bytes_read": 0, "bytes_written": 0, "errors": 0,
                      "last_closes": 0, "mappings_released": 0}

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
        with self._lock:
            self.stats["protids_made"] += 1
            self._opens[node] = self._opens.get(node, 0) + 1
        return pi

    def root_send_right(self, openmodes: int = F.O_READ | F.O_EXEC) -> int:
        """A send right (in our space) to a new protid on the root directory."""
        pi = self.new_protid(self.fs.root(), openmodes)
        try:
            return LP.ports_get_send_right(pi)
        finally:
            LP.ports_port_deref(pi)  # the send rights hold it now

    def _clean_protid(self, pi: LP.PortInfo):
        """The protid's last reference went (libdiskfs diskfs_protid_rele with
        diskfs_release_peropen): the node's last open going lets go of the file's own
        mapping (``_last_close``); then the protid's node reference is dropped."""
        cred = pi.data
        if isinstance(cred, Protid) and cred.po.node is not None:
            node, cred.po.node = cred.po.node, None
            with self._lock:
                left = self._opens.get(node, 1) - 1
                if left > 0:
                    self._opens[node] = left
                else:
                    self._opens.pop(node, None)
            try:
                if left <= 0:
                    self._count(last_closes=1)
                    self._last_close(node)
            except Exception:
                log.exception("releasing the file's mapping failed")
            finally:
                try:
                    self.fs.diskfs_nrele(node)
                except Exception:
                    log.exception("diskfs_nrele failed")
        self._count(protids_freed=1)

    def _last_close(self, node):
        """No open of ``node`` is left: unmap the file system's own window on the file
        (FileMapping.unmap), so that the kernel holds its memory object only in its
        object cache, as the Hurd's does between two pager_memcpy calls.  An open
        that came in meanwhile keeps the window (checked again under the file's I/O
        lock, which every mapped read and write holds).  The pager stays: the kernel
        still holds its send right, and the next vm_map finds the cached object."""
        mapping = getattr(node, "mapping", None)
        if mapping is None:
            return
        with node.io_lock:
            with self._lock:
                if self._opens.get(node):
                    return
            if mapping.size:
                mapping.unmap()
                self._count(mappings_released=1)

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


# libdiskfs's thread timeouts (init-first.c thread_timeout and server_timeout, in
# seconds), the defaults of every file system started by diskfs_startup.  We follow the
# Hurd of 2011, when both of ext2fs's buckets were served by the multithread model with
# them: the server bucket by init-first.c's master_thread_function, the pager bucket by
# disk-pager.c's service_paging_requests (ports_manage_port_operations_multithread
# (pager_bucket, pager_demuxer, 1000 * 60 * 2, 1000 * 60 * 10, 0)).  Today's Hurd still
# serves the server bucket that way; its pager bucket has had fixed workers since 2014
# (pager_start_workers, no timeout: --threads workers).  An idle thread beyond the first
# thus lives two minutes; the first starts over after ten idle minutes.
DISKFS_TIMEOUTS = {"thread_timeout": 2 * 60.0, "server_timeout": 10 * 60.0}


def check_diskfs_args(ap, args):
    """ap.error for thread-model options a file system cannot use."""
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    if args.thread_timeout < 0 or args.server_timeout < 0:
        ap.error("--thread-timeout and --server-timeout must not be negative")


def diskfs_startup(t: LP.Translator, srv: FsServer, pager_bucket: LP.PortBucket) -> int:
    """diskfs_spawn_first_thread + diskfs_startup_diskfs for translator ``t``: start
    the server loops (the --threads model), the pager bucket's on threads of their own
    (an io_write blocked in vm_write waits for a data_request that only a pager thread
    can answer), then ``srv``'s; check a protid on the root in with the name server
    under ``t.name``, signed with a private port (Translator.check_in).  Returns that
    send right.

    Multithread servers get --thread-timeout and --server-timeout (DISKFS_TIMEOUTS by
    default); after the server timeout the first thread starts over, as both of
    libdiskfs's loops do (a file system in use is never shut down for idleness).
    Every server thread touches the top of its new stack as cthreads did
    (libports.stacks, TOUCH_PAGES)."""
    args = t.args
    kw = dict(thread_timeout=args.thread_timeout or None, workers=args.workers,
              global_timeout=args.server_timeout or None, start_over=True,
              stack_touch_pages=LP.TOUCH_PAGES)
    t.add_server(LP.make_server(args.threads, pager_bucket, PG.PagerDemuxer(pager_bucket),
                                name=f"{t.name}-pager", **kw).start())
    t.add_server(LP.make_server(args.threads, srv.bucket, srv.demuxer(), name=t.name,
                                **kw).start())
    root = srv.root_send_right()
    t.check_in(root)
    return root


def diskfs_server_stats(t: LP.Translator) -> dict:
    """The thread counters of the two server loops diskfs_startup started (the pager
    bucket's first), as pager_server_* and fs_server_* fields."""
    out = {}
    for prefix, server in zip(("pager_server", "fs_server"), t.servers):
        for k, v in server.stats().items():
            if not k.startswith("demux_"):
                out[f"{prefix}_{k}"] = v
    return out


def pager_bucket_stats(bucket: LP.PortBucket) -> dict:
    """libpager's counters over the pager bucket, as pager_* stats fields."""
    return {f"pager_{k}": v for k, v in PG.pager_bucket_stats(bucket).items()}
