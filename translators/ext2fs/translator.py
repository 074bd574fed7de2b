"""The ext2fs translator: ext2 on an image file, served with the fs protocol (the Hurd's
ext2fs: ext2fs/{pager,inode,dir}.c over libdiskfs and libpager).

File contents live in the kernel's page cache: every regular file, once read or
written, has one libpager pager (cacheable, MEMORY_OBJECT_COPY_DELAY) whose ops
(``Ext2PagerOps``) move pages between the kernel and the file's blocks in the image;
io_read / io_write go through ext2fs's own mapping of the file (filemap.FileMapping),
so the kernel's pageout (or a sync) decides when data reaches the disk.

Metadata (inodes, bitmaps, directories, indirect blocks) goes through the image
directly with the Ext2 library, not through a disk pager as in the Hurd: the library's
bounded write-back metadata cache plays the disk pager's role.  That is simpler, and
for this emulation crash-equivalent (in both, metadata reaches the image only at a
sync or when the cache evicts it).
"""

from __future__ import annotations

import time

import structlog

from protocol.defs import fs as F
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE, round_page
from translators.diskfs import (
    DT_DIR,
    DT_REG,
    DT_UNKNOWN,
    FileSystem,
    Node,
    fs_error,
)
from translators.ext2fs import ondisk as D
from translators.ext2fs.filesystem import Ext2
from translators.ext2fs.hurdalloc import DIR_OPS, Ext2Allocations
from translators.ext2fs.pager import Ext2PagerOps, Ext2PageWriteOps, ext2_error
from translators.ext2fs.store import DiskDevice

log = structlog.get_logger("ext2fs")

_DT = {D.EXT2_FT_REG_FILE: DT_REG, D.EXT2_FT_DIR: DT_DIR}
WRITE_MODES = ("bulk", "page")  # --write-mode: 2025's pager_write_pages, 2011's per page


class Ext2Node(Node):
    """struct node + ext2fs's struct disknode: one inode in use.  ``size`` is i_size,
    kept here too so pager threads need no io_lock."""

    kind = "ext2node"

    def __init__(self, ino: int, mode: int, size: int):
        super().__init__(ino, mode, size)
        self.dead = False  # unlinked / removed: its inode is to be (or was) released
        self.heap = self.pager_heap = 0  # its memory in the task (hurdalloc), if any


class Ext2Fs(FileSystem):
    """The FileSystem over one mounted image.  Nodes in use are kept in ``nodes``
    (ino -> Ext2Node, the diskfs node cache): one node, hence one pager, per inode."""

    def __init__(self, ext2: Ext2, rt=None, pager_bucket=None, direct_io: bool = False,
                 disk_latency: float = 0.0, disk_queue_depth: int = 1,
                 write_mode: str = "bulk", alloc: Ext2Allocations | None = None):
        """``disk_latency`` seconds per data write on a device of ``disk_queue_depth``
        slots (store.DiskDevice); ``write_mode`` "bulk" (pager_write_pages, 2025) or
        "page" (pager_write_page per page, 2011); ``alloc``: what ext2fs allocates in
        its own task as the Hurd did (hurdalloc; default nothing)."""
        if write_mode not in WRITE_MODES:
            raise ValueError(f"write_mode must be one of {', '.join(WRITE_MODES)}")
        super().__init__(rt, pager_bucket, direct_io)
        self.alloc = alloc or Ext2Allocations()
        for op in DIR_OPS:  # each directory operation's struct dirstat
            setattr(self, op, self.alloc.with_dirstat(getattr(self, op)))
        self.ext2 = ext2
        self.disk = DiskDevice(disk_latency, disk_queue_depth)
        self.write_mode = write_mode
        self.nodes: dict[int, Ext2Node] = {}
        # data_returns / pages_returned: the pager's write callbacks and their pages
        # (one callback per data_return in bulk mode, one per page in page mode).
        self.stats = {"read_page": 0, "hole_pages": 0, "unlock_page": 0,
                      "blocks_allocated": 0, "write_allocations": 0, "data_returns": 0,
                      "pages_returned": 0, "write_page_calls": 0, "write_pages_calls": 0,
                      "blocks_written": 0, "pagers_created": 0, "remaps": 0, "syncs": 0,
                      "nodes_freed": 0}
        self.root_node = self.diskfs_nref(self._node(D.EXT2_ROOT_INO))  # the fs's own

    def disk_stats(self) -> dict:
        """The device's counters (store.DiskDevice.stats) and the write mode."""
        return {**self.disk.stats(), "write_mode": self.write_mode}

    def _call(self, fn, *args, **kw):
        """An Ext2 library call with its errors as the Hurd's error_t."""
        try:
            return fn(*args, **kw)
        except OSError as e:
            raise ext2_error(e) from e

    # ------------------------------------------------------------ nodes

    def _node(self, ino: int) -> Ext2Node:
        """diskfs_cached_lookup (lock held by the caller or at init): not referenced."""
        node = self.nodes.get(ino)
        if node is None:
            inode = self._call(self.ext2.read_live_inode, ino)
            node = Ext2Node(ino, inode.i_mode, inode.size)
            self.alloc.node_alloc(node)
            self.nodes[ino] = node
        return node

    def node_iterate(self) -> list:
        with self.lock:
            return list(self.nodes.values())

    def drop_node(self, node: Ext2Node):
        """diskfs_drop_node: the last user of an unlinked file is gone: it leaves the
        node table, its pager is shut down (nothing more comes back), then its inode
        and blocks are released (Ext2.clear_inode)."""
        with self.lock:
            if self.nodes.get(node.ino) is node:
                del self.nodes[node.ino]
        super().drop_node(node)
        self.alloc.pager_free(node)  # ports_port_deref's free of the pager
        self.alloc.node_free(node)
        try:
            self.ext2.clear_inode(node.ino)
        except OSError as e:
            log.warning("clear_inode failed", ino=node.ino, error=str(e))
        self.count(nodes_freed=1)

    # ------------------------------------------------------------ directories

    def lookup(self, dir: Ext2Node, name: str) -> Ext2Node:
        with self.lock:
            self._live_dir(dir)
            if name == ".":
                return self.diskfs_nref(dir)
            ino = self._call(self.ext2.lookup, dir.ino, name)
            return self.diskfs_nref(self._node(ino))

    def create(self, dir: Ext2Node, name: str, mode: int) -> Ext2Node:
        with self.lock:
            self._live_dir(dir)
            ino = self._call(self.ext2.create, dir.ino, name, mode & 0o7777)
            return self.diskfs_nref(self._node(ino))

    def mkdir(self, dir: Ext2Node, name: str, mode: int):
        with self.lock:
            self._live_dir(dir)
            self._call(self.ext2.mkdir, dir.ino, name, mode & 0o7777)

    def rmdir(self, dir: Ext2Node, name: str):
        with self.lock:
            self._live_dir(dir)
            ino = self._call(self.ext2.lookup, dir.ino, name)
            self._call(self.ext2.rmdir, dir.ino, name)
            node = self.nodes.pop(ino, None)
            if node is not None:
                # the inode is free now and its number may come back for a new file: the
                # node (still held by open ports) must not be found under it any more
                node.dead = True
                self.alloc.node_free(node)

    def unlink(self, dir: Ext2Node, name: str):
        with self.lock:
            self._live_dir(dir)
            ino = self._call(self.ext2.unlink, dir.ino, name, defer_free=True)
            if self._call(self.ext2.read_inode, ino).i_links_count:
                return
            node = self.nodes.get(ino)
            if node is None:
                self._call(self.ext2.clear_inode, ino)
                self.count(nodes_freed=1)
                return
            node.dead = True
            self.diskfs_nref(node)
        self.diskfs_nrele(node)  # frees it unless it is still open

    def readdir(self, dir: Ext2Node) -> list:
        with self.lock:
            self._live_dir(dir)
            ents = self._call(self.ext2.readdir, dir.ino)
        return [[e.name.decode("utf-8", "surrogateescape"),
                 _DT.get(e.file_type, DT_UNKNOWN), e.inode] for e in ents]

    # ------------------------------------------------------------ file I/O

    def file_pager_ops(self, node: Ext2Node) -> Ext2PagerOps:
        self.alloc.pager_alloc(node)  # called once per pager, as pager_create is
        if self.write_mode == "page":
            return Ext2PageWriteOps(self, node)
        return Ext2PagerOps(self, node)

    def grow(self, node: Ext2Node, size: int):
        """diskfs_grow (ext2fs/pager.c): set i_size; the blocks come later, from
        unlock_page, except those of the old last page past the old end: the kernel may
        hold that page writable already, so they are allocated now (ENOSPC here, with
        the size unchanged, rather than a lost page at pageout)."""
        if size > self.ext2.max_file_size():
            raise fs_error(F.EFBIG)
        ext2 = self.ext2
        bs = ext2.block_size
        with ext2.lock:
            inode = self._call(ext2.read_inode, node.ino)
            old = inode.size
            if old % PAGE_SIZE and node.pager is not None:
                last = min(round_page(old), size)
                try:
                    for lb in range((old + bs - 1) // bs, (last + bs - 1) // bs):
                        if not self._call(ext2.bmap, inode, lb):
                            self._call(ext2.bmap, inode, lb, create=True)
                            self.count(blocks_allocated=1)
                except MachError:
                    ext2._free_blocks_from(inode, (old + bs - 1) // bs)  # none past EOF
                    self._call(ext2.write_inode, inode)
                    raise
            inode.size = size
            if size > 2**31 - 1:
                ext2._set_large_file()
            inode.i_mtime = inode.i_ctime = int(time.time())
            self._call(ext2.write_inode, inode)
            node.size = size

    def _mapped_io(self, node: Ext2Node, write: bool, offset: int, arg):
        """pager_memcpy's part (diskfs._mapped_io), through the window of the
        --io-window mode, with the thread's signal state made first (--hurdmalloc)."""
        self.alloc.thread_state()
        if node.mapping is None:
            node.mapping = self.alloc.file_mapping(self.rt, lambda: self._port(node))
        return super()._mapped_io(node, write, offset, arg)

    def read_direct(self, node: Ext2Node, offset: int, n: int) -> bytes:
        return self._call(self.ext2.read, node.ino, offset, n)

    def write_direct(self, node: Ext2Node, offset: int, data: bytes) -> int:
        if not data:
            return 0
        n = self._call(self.ext2.write, node.ino, offset, data)
        node.size = max(node.size, offset + n)
        return n

    def set_size(self, node: Ext2Node, size: int):
        """file_set_size: extend (sparse) or truncate: the kernel's pages past the new
        end go first (FileSystem._flush_past), then Ext2.truncate frees the blocks and
        zeroes the tail of the last block."""
        self._file(node)
        if size < 0:
            raise fs_error(F.EINVAL)
        with node.io_lock:
            self.set_size_locked(node, size)

    def set_size_locked(self, node: Ext2Node, size: int):
        if size < node.size:
            self._flush_past(node, size, node.size)
        self._call(self.ext2.truncate, node.ino, size)
        node.size = size

    def stat(self, node: Ext2Node) -> dict:
        st = self._call(self.ext2.stat, node.ino)
        st["st_dev"] = 0
        if not node.is_dir:
            st["st_size"] = node.size
        return st

    def map(self, node: Ext2Node) -> int:
        if self.direct_io and not node.is_dir:
            raise fs_error(F.EOPNOTSUPP, "--direct-io: no memory objects")
        return super().map(node)

    def sync(self, node: Ext2Node, wait: bool):
        """file_sync: the file's dirty pages back to the disk (pager_sync), then the
        metadata (Ext2.sync)."""
        super().sync(node, wait)
        self._call(self.ext2.sync, wait)

    def syncfs(self, wait: bool, timeout: float | None = None) -> bool:
        """fsys_syncfs / the periodic sync (diskfs_sync_everything): pager_sync on
        every file with a pager, then Ext2.sync.  Whether every pager synced."""
        ok = super().syncfs(wait, timeout)
        self._call(self.ext2.sync, wait)
        self.count(syncs=1)
        return ok
