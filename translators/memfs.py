"""memfs: a file system whose file pages live in its own memory; it is their pager.

    python -m translators.memfs --run-dir DIR [--name memfs]
        [--threads multithread|workers] [--workers N] [--thread-timeout S]
        [--server-timeout S] [--direct-io] [--max-bytes N] [--log-level L]

Thread timeouts default to libdiskfs's (translators.fsserver.DISKFS_TIMEOUTS).

Each regular file has a page store (a dict page offset -> 4096 bytes; a page never written
reads as zeros) and, once used, one libpager pager whose ops (``MemPagerOps``) read and
write that store.  Pages are supplied precious (pager_create with notify_on_evict), so the
kernel hands them back with memory_object_data_return instead of dropping them.

I/O modes:
  mapped (default)  io_read / io_write go through memfs's own mapping of the file's memory
                    object (filemap.FileMapping: vm_map into memfs's task, vm_read /
                    vm_write; remapped when the file outgrows the window) — the kernel's
                    page cache holds the data, and pageout decides when it comes back.
  --direct-io       io_read / io_write use the store directly (for kernels without VM).

Space: the sum over files of round_page(st_size) may not exceed --max-bytes (ENOSPC), as
Hurd tmpfs accounts allocsize.  The root directory port is checked in with the name
server under NAME; DIR/NAME.ready holds the pid when serving; JSON logs go to
DIR/NAME.log; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import stat as S
import sys
import threading
import time

import structlog

from protocol.defs import fs as F
from protocol.vm_param import PAGE_SIZE, round_page, trunc_page
from translators import libports as LP
from translators.diskfs import DT_DIR, FilePagerOps, FileSystem, Node, file_type, fs_error
from translators.fsserver import (
    DISKFS_TIMEOUTS,
    FsServer,
    check_diskfs_args,
    diskfs_startup,
    pager_bucket_stats,
)

log = structlog.get_logger("memfs")

ZERO_PAGE = bytes(PAGE_SIZE)
MAX_FILE_SIZE = 1 << 40


# ---------------------------------------------------------------- the page store

class PageStore:
    """A file's pages in memfs's memory: page offset -> PAGE_SIZE bytes.  Pages never
    written are zeros (and take no space)."""

    def __init__(self):
        self.pages: dict[int, bytes] = {}
        self.lock = threading.Lock()

    def __len__(self):
        return len(self.pages)

    @property
    def nbytes(self) -> int:
        return len(self.pages) * PAGE_SIZE

    def get(self, offset: int, length: int = PAGE_SIZE) -> bytes:
        """Whole pages [offset, offset+length) (page aligned)."""
        with self.lock:
            return b"".join(self.pages.get(o, ZERO_PAGE)
                            for o in range(offset, offset + length, PAGE_SIZE))

    def put(self, offset: int, data: bytes, limit: int | None = None):
        """Store whole pages at ``offset`` (page aligned); pages at or past ``limit``
        are dropped (a data_return past the end of a truncated file)."""
        with self.lock:
            for i in range(0, len(data), PAGE_SIZE):
                o = offset + i
                if limit is not None and o >= limit:
                    break
                page = bytes(data[i:i + PAGE_SIZE])
                if len(page) < PAGE_SIZE:
                    page += bytes(PAGE_SIZE - len(page))
                self.pages[o] = page

    def read(self, offset: int, n: int) -> bytes:
        """Bytes [offset, offset+n) (any alignment)."""
        if n <= 0:
            return b""
        start, end = trunc_page(offset), round_page(offset + n)
        return self.get(start, end - start)[offset - start:offset - start + n]

    def write(self, offset: int, data: bytes):
        """Store bytes at ``offset`` (any alignment)."""
        n = len(data)
        if not n:
            return
        with self.lock:
            pos = 0
            while pos < n:
                o = offset + pos
                po = trunc_page(o)
                k = min(PAGE_SIZE - (o - po), n - pos)
                if k == PAGE_SIZE:
                    self.pages[po] = bytes(data[pos:pos + k])
                else:
                    page = bytearray(self.pages.get(po, ZERO_PAGE))
                    page[o - po:o - po + k] = data[pos:pos + k]
                    self.pages[po] = bytes(page)
                pos += k

    def truncate(self, size: int):
        """Drop the pages past ``size`` and zero the tail of its last page."""
        with self.lock:
            end = round_page(size)
            for o in [o for o in self.pages if o >= end]:
                del self.pages[o]
            po = trunc_page(size)
            if size != po and po in self.pages:
                page = self.pages[po]
                self.pages[po] = page[:size - po] + bytes(PAGE_SIZE - (size - po))


# ---------------------------------------------------------------- nodes

class MemNode(Node):
    """One file or directory (struct node with memfs's disknode)."""

    kind = "memnode"

    def __init__(self, ino: int, mode: int, parent: "MemNode | None" = None):
        super().__init__(ino, mode)
        self.nlink = 2 if S.S_ISDIR(mode) else 1
        self.parent = parent  # directories: ".."
        self.entries: dict[str, MemNode] | None = {} if S.S_ISDIR(mode) else None
        self.store = PageStore() if S.S_ISREG(mode) else None
        now = time.time()
        self.atime = self.mtime = self.ctime = now

    @property
    def dead(self) -> bool:
        return self.nlink == 0


class MemPagerOps(FilePagerOps):
    """The libpager callbacks of one file: its pages come from and go to its store.
    Pages are never write-locked, so unlock_page has nothing to do."""

    def __init__(self, node: MemNode):
        super().__init__(node)
        self.stats = {"read_page": 0, "write_page": 0, "pages_written": 0}

    def read_page(self, pager, offset: int, length: int):
        """pager_read_page: the store's pages, not write-locked (supplied precious).  A
        page never written is not supplied at all: None makes libpager answer
        memory_object_data_unavailable and the kernel zero-fills it (nothing is lost
        if it drops that page clean)."""
        self.stats["read_page"] += 1
        store = self.node.store
        length = round_page(length)
        with store.lock:
            if not any(o in store.pages for o in range(offset, offset + length, PAGE_SIZE)):
                return None
        return store.get(offset, length), False

    def write_page(self, pager, offset: int, data):
        """pager_write_page: keep what the kernel gives back (nothing past EOF)."""
        self.stats["write_page"] += 1
        self.stats["pages_written"] += len(data) // PAGE_SIZE
        self.node.store.put(offset, data, limit=round_page(self.node.size))

    def write_pages(self, pager, offset: int, data):
        """The multi-page write: the store takes a run as easily as one page."""
        self.write_page(pager, offset, data)


# ---------------------------------------------------------------- the file system

class MemFs(FileSystem):
    """The directory tree, the stores and space accounting.  With ``rt`` and
    ``pager_bucket`` files get pagers (io_map, mapped I/O); ``direct_io`` makes
    io_read/io_write use the stores directly."""

    notify_on_evict = True  # precious pages: the kernel must give them back

    def __init__(self, max_bytes: int | None = None, direct_io: bool = True, rt=None,
                 pager_bucket=None):
        super().__init__(rt, pager_bucket, direct_io)
        self.max_bytes = max_bytes
        self.next_ino = 2
        self.root_node = MemNode(self._ino(), S.S_IFDIR | 0o755)
        self.root_node.parent = self.root_node
        self.diskfs_nref(self.root_node)  # the file system's own
        self.nodes = 1
        self.used = 0  # sum of round_page(size) over live files
        self.stats = {"files_created": 0, "dirs_created": 0, "nodes_freed": 0,
                      "pagers_created": 0, "remaps": 0, "truncations": 0}

    def _ino(self) -> int:
        ino, self.next_ino = self.next_ino, self.next_ino + 1
        return ino

    # ------------------------------------------------------------ nodes

    def node_iterate(self) -> list:
        with self.lock:
            files = []
            stack = [self.root_node]
            while stack:
                d = stack.pop()
                for c in d.entries.values():
                    (stack if c.is_dir else files).append(c)
        return files

    def drop_node(self, node: MemNode):
        """diskfs_drop_node: the file is gone; its space is given back, its pager shut
        down and its pages forgotten."""
        with self.lock:
            self.used -= round_page(node.size)
            self.nodes -= 1
        self.count(nodes_freed=1)
        super().drop_node(node)
        with node.io_lock:
            node.store.pages.clear()
            node.size = 0

    # ------------------------------------------------------------ directories

    def _child(self, dir: MemNode, name: str) -> MemNode:
        """diskfs_lookup_hard: the node entry ``name`` of live directory ``dir`` names
        (ENOENT); lock held."""
        self._live_dir(dir)
        node = dir.entries.get(name)
        if node is None:
            raise fs_error(F.ENOENT, name)
        return node

    def lookup(self, dir: MemNode, name: str) -> MemNode:
        with self.lock:
            self._live_dir(dir)
            if name == ".":
                return self.diskfs_nref(dir)
            if name == "..":
                return self.diskfs_nref(dir.parent)
            return self.diskfs_nref(self._child(dir, name))

    def _enter(self, dir: MemNode, name: str, mode: int) -> MemNode:
        if len(name.encode()) > F.NAME_MAX:
            raise fs_error(F.ENAMETOOLONG)
        if not name or "/" in name or name in (".", ".."):
            raise fs_error(F.EINVAL)
        self._live_dir(dir)
        if name in dir.entries:
            raise fs_error(F.EEXIST, name)
        node = MemNode(self._ino(), mode, parent=dir if S.S_ISDIR(mode) else None)
        dir.entries[name] = node
        dir.mtime = dir.ctime = node.ctime
        self.nodes += 1
        return node

    def create(self, dir: MemNode, name: str, mode: int) -> MemNode:
        with self.lock:
            node = self._enter(dir, name, S.S_IFREG | (mode & 0o7777))
            self.count(files_created=1)
            return self.diskfs_nref(node)

    def mkdir(self, dir: MemNode, name: str, mode: int):
        with self.lock:
            self._enter(dir, name, S.S_IFDIR | (mode & 0o7777))
            dir.nlink += 1
            self.count(dirs_created=1)

    def rmdir(self, dir: MemNode, name: str):
        with self.lock:
            node = self._child(dir, name)
            if not node.is_dir:
                raise fs_error(F.ENOTDIR, name)
            if node.entries:
                raise fs_error(F.ENOTEMPTY, name)
            del dir.entries[name]
            dir.nlink -= 1
            node.nlink = 0
            dir.mtime = dir.ctime = time.time()
            self.nodes -= 1
            self.count(nodes_freed=1)

    def unlink(self, dir: MemNode, name: str):
        with self.lock:
            node = self._child(dir, name)
            if node.is_dir:
                raise fs_error(F.EISDIR, name)
            del dir.entries[name]
            dir.mtime = dir.ctime = time.time()
            node.nlink -= 1
            node.ctime = dir.ctime
            self.diskfs_nref(node)
        self.diskfs_nrele(node)  # frees it unless it is still open

    def readdir(self, dir: MemNode) -> list:
        with self.lock:
            self._live_dir(dir)
            out = [[".", DT_DIR, dir.ino], ["..", DT_DIR, dir.parent.ino]]
            out += [[n, file_type(c.mode), c.ino] for n, c in dir.entries.items()]
            return out

    # ------------------------------------------------------------ file I/O

    def file_pager_ops(self, node: MemNode) -> MemPagerOps:
        return MemPagerOps(node)

    def grow(self, node: MemNode, size: int):
        """diskfs_grow: account for ``node`` growing to ``size``; ENOSPC past the
        limit (as Hurd tmpfs accounts allocsize).  The caller holds node.io_lock."""
        if size > MAX_FILE_SIZE:
            raise fs_error(F.EFBIG)
        with self.lock:
            delta = round_page(size) - round_page(node.size)
            if delta > 0 and self.max_bytes is not None and self.used + delta > self.max_bytes:
                raise fs_error(F.ENOSPC)
            self.used += delta
            node.size = size

    def read_direct(self, node: MemNode, offset: int, n: int) -> bytes:
        return node.store.read(offset, n)

    def write_direct(self, node: MemNode, offset: int, data: bytes) -> int:
        if offset + len(data) > node.size:
            self.grow(node, offset + len(data))
        node.store.write(offset, data)
        return len(data)

    def read(self, node: MemNode, offset: int, amount: int) -> bytes:
        data = super().read(node, offset, amount)
        if data:
            node.atime = time.time()
        return data

    def write(self, node: MemNode, offset: int, data: bytes) -> int:
        n = super().write(node, offset, data)
        node.mtime = node.ctime = time.time()
        return n

    def set_size(self, node: MemNode, size: int):
        """file_set_size: extend (new pages read as zeros) or truncate: the kernel's
        pages past the new end go first (FileSystem._flush_past), then the store drops
        what lies past the end."""
        self._file(node)
        if size < 0:
            raise fs_error(F.EINVAL)
        with node.io_lock:
            self.set_size_locked(node, size)

    def set_size_locked(self, node: MemNode, size: int):
        old = node.size
        if size >= old:
            self.grow(node, size)
        else:
            with self.lock:
                self.used -= round_page(old) - round_page(size)
                node.size = size
            self.count(truncations=1)
            self._flush_past(node, size, old)
            node.store.truncate(size)
        node.mtime = node.ctime = time.time()

    def stat(self, node: MemNode) -> dict:
        with self.lock:
            blocks = len(node.store) * (PAGE_SIZE // 512) if node.store is not None else 0
            return {"st_dev": 0, "st_ino": node.ino, "st_mode": node.mode,
                    "st_nlink": node.nlink, "st_uid": 0, "st_gid": 0,
                    "st_size": node.size if not node.is_dir else PAGE_SIZE,
                    "st_blksize": PAGE_SIZE, "st_blocks": blocks,
                    "st_atime": node.atime, "st_mtime": node.mtime,
                    "st_ctime": node.ctime}


# ---------------------------------------------------------------- the translator

def parse_args(argv=None):
    ap = LP.translator_arg_parser("translators.memfs", __doc__, "memfs",
                                  **DISKFS_TIMEOUTS)
    ap.add_argument("--direct-io", action="store_true",
                    help="io_read/io_write use the page store directly, not memfs's own "
                         "mapping of the file (for kernels without VM)")
    ap.add_argument("--max-bytes", type=int, default=None,
                    help="space limit: sum of round_page(st_size) over files (ENOSPC)")
    args = ap.parse_args(argv)
    check_diskfs_args(ap, args)
    if args.max_bytes is not None and args.max_bytes < 0:
        ap.error("--max-bytes must not be negative")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    name = args.name
    t = LP.Translator(args, "memfs", log, always_log_stopping=True)
    rt = t.connect()
    if rt is None:
        return 1
    with t:
        fs_bucket = LP.ports_create_bucket(rt)
        pager_bucket = LP.ports_create_bucket(rt)
        memfs = MemFs(max_bytes=args.max_bytes, direct_io=args.direct_io, rt=rt,
                      pager_bucket=pager_bucket)
        srv = FsServer(memfs, fs_bucket, name=name)

        def all_stats():
            return {**srv.stats, **memfs.stats, "nodes": memfs.nodes, "used": memfs.used,
                    **memfs.map_stats(), **pager_bucket_stats(pager_bucket)}

        t.stopping_stats = all_stats
        root = diskfs_startup(t, srv, pager_bucket)
        t.ready("memfs ready", model=args.threads, direct_io=args.direct_io,
                max_bytes=args.max_bytes, port=root, endpoint=t.endpoint)
        t.serve_until_stopped(all_stats)
    return t.code


if __name__ == "__main__":
    sys.exit(main())
