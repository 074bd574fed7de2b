"""Directories (the Hurd's ext2fs/dir.c): linear directories of ext2_dir_entry_2
records, read through the disk cache block by block.  Looking a name up
(diskfs_lookup_hard, dirscanblock), adding an entry (diskfs_direnter_hard), removing one
(diskfs_dirremove_hard), pointing one elsewhere (diskfs_dirrewrite_hard), the emptiness
test (diskfs_dirempty), listing (diskfs_get_directs), a new directory's . and ..
(libdiskfs's diskfs_init_dir) and path resolution.

An htree (dir_index) directory is read as the linear directory it also is; any change
drops its index flag, as Linux does when it cannot keep the index."""

from __future__ import annotations

import errno
import struct

from . import ondisk as D
from .common import U32, Ext2Error, locked
from .ondisk import DirEntry, Inode

_DIRENT_HDR = struct.Struct("<IHB")


def check_name(name) -> bytes:
    """A directory entry's name as bytes (``str`` is UTF-8): EINVAL for an empty name or
    one with "/" or NUL, ENAMETOOLONG past EXT2_NAME_LEN."""
    if isinstance(name, str):
        name = name.encode("utf-8", "surrogateescape")
    if not name or b"/" in name or b"\0" in name:
        raise Ext2Error(errno.EINVAL, f"invalid name {name!r}")
    if len(name) > D.EXT2_NAME_LEN:
        raise Ext2Error(errno.ENAMETOOLONG, f"name too long ({len(name)} bytes)")
    return name


class Dir:
    """Mixin of ``Ext2``: directory blocks and entries."""

    def _dir_blocks(self, inode: Inode):
        """(logical block, disk block, cached buffer) of each mapped directory block
        (holes skipped a whole indirect subtree at a time)."""
        nblocks = inode.i_size // self.block_size
        lb = 0
        while lb < nblocks:
            pb, n = self._bmap_span(inode, lb)
            if pb:
                yield lb, pb, self._meta(pb)
            lb += n

    def _check_dir_size(self, inode: Inode) -> None:
        """A directory's i_size must be whole blocks, and no more blocks than i_blocks
        accounts for (ext2fs's diskfs_user_read_node / Linux's ext2_check_page: a
        corrupt size would send every scan through millions of holes)."""
        bs = self.block_size
        if inode.i_size % bs or inode.i_size // bs > inode.i_blocks // (bs >> 9):
            raise Ext2Error(errno.EIO, f"corrupt directory inode {inode.ino}: i_size "
                            f"{inode.i_size} with {inode.i_blocks} sectors allocated")

    def _entries(self, inode: Inode, pb: int, buf):
        """dirscanblock's walk: the entries of one directory block (EIO if corrupt)."""
        bs = self.block_size
        off = 0
        while off < bs:
            e = DirEntry.parse(buf, off, self.filetype)
            if (e.rec_len < 8 or e.rec_len % 4 or off + e.rec_len > bs
                    or e.name_len + 8 > e.rec_len or e.inode > self.sb.s_inodes_count
                    or (e.inode and not e.name_len)):
                raise Ext2Error(errno.EIO, f"corrupt directory inode {inode.ino} "
                                f"block {pb} offset {off}")
            yield e
            off += e.rec_len

    def _dir_inode(self, ino) -> Inode:
        inode = self._as_inode(ino)
        if inode.i_mode & D.S_IFMT not in self._FILE_TYPES:
            raise Ext2Error(errno.EIO, f"corrupt inode {inode.ino}: mode {inode.i_mode:#o}")
        if not inode.is_dir():
            raise Ext2Error(errno.ENOTDIR, f"inode {inode.ino} is not a directory")
        self._check_dir_size(inode)
        return inode

    @locked
    def readdir(self, ino) -> list[DirEntry]:
        """diskfs_get_directs: the live entries (inode != 0) of a linear directory, in
        order; an htree (dir_index) directory reads the same way."""
        inode = self._dir_inode(ino)
        out = []
        for _lb, pb, buf in self._dir_blocks(inode):
            out.extend(e for e in self._entries(inode, pb, buf) if e.inode)
        return out

    def listdir(self, ino) -> list[str]:
        """Names in a directory, without . and .."""
        return [e.name.decode("utf-8", "surrogateescape") for e in self.readdir(ino)
                if e.name not in (b".", b"..")]

    def _find(self, inode: Inode, name: bytes):
        """diskfs_lookup_hard's scan: (disk block, buffer, entry) of ``name``, or None."""
        for _lb, pb, buf in self._dir_blocks(inode):
            if buf.find(name) < 0:  # cheap rejection of most blocks
                continue
            for e in self._entries(inode, pb, buf):
                if e.inode and e.name == name:
                    return pb, buf, e
        return None

    def _find_entry(self, inode: Inode, name: bytes):
        """``_find``, with Ext2Error(ENOENT) for a missing name."""
        hit = self._find(inode, name)
        if hit is None:
            raise Ext2Error(errno.ENOENT, f"{name!r} not found")
        return hit

    @locked
    def lookup(self, dir_ino, name) -> int:
        """diskfs_lookup_hard of one component: the inode number, or
        Ext2Error(ENOENT)."""
        inode = self._dir_inode(dir_ino)
        nm = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name
        hit = self._find(inode, nm)
        if hit is None:
            raise Ext2Error(errno.ENOENT, f"{nm!r} not found in inode {inode.ino}")
        return hit[2].inode

    @locked
    def namei(self, path, follow: bool = True, _depth: int = 0, cwd: int = D.EXT2_ROOT_INO
              ) -> int:
        """Resolve a path (from the root, or ``cwd`` for a relative one) to an inode
        number; symbolic links are followed (the last one only when ``follow``)."""
        if isinstance(path, str):
            path = path.encode("utf-8", "surrogateescape")
        if _depth > 8:
            raise Ext2Error(errno.ELOOP, "too many symbolic links")
        ino = D.EXT2_ROOT_INO if path.startswith(b"/") else cwd
        parts = [p for p in path.split(b"/") if p]
        for i, part in enumerate(parts):
            parent = ino
            ino = self.lookup(ino, part)
            last = i == len(parts) - 1
            if (follow or not last):
                inode = self.read_inode(ino)
                if inode.is_symlink():
                    ino = self.namei(self.readlink(ino), True, _depth + 1, parent)
        return ino

    def _dir_modified(self, inode: Inode) -> None:
        # No htree maintenance: drop the index as Linux does when it cannot keep it.
        inode.i_flags &= ~D.EXT2_INDEX_FL
        inode.i_mtime = inode.i_ctime = int(self.clock())

    def _ft(self, mode: int) -> int:
        """The entry's file_type byte for ``mode`` (0 without the filetype feature)."""
        return D.mode_to_file_type(mode) if self.filetype else 0

    def _add_entry(self, dinode: Inode, name: bytes, ino: int, ft: int) -> None:
        """diskfs_direnter_hard: put an entry in the first gap big enough, else in a new
        block at the end of the directory."""
        need = DirEntry.min_rec_len(len(name))
        self._dir_modified(dinode)
        hdr = _DIRENT_HDR
        bs = self.block_size
        for _lb, pb, buf in self._dir_blocks(dinode):
            # Header-only scan for room first (fast); parse entries only where it is.
            off = 0
            room = False
            while off < bs:
                e_ino, rec_len, name_len = hdr.unpack_from(buf, off)
                if not self.filetype:
                    name_len = buf[off + 6] | (buf[off + 7] << 8)
                if rec_len < 8 or off + rec_len > bs:
                    break
                if rec_len - (0 if e_ino == 0 else (8 + name_len + 3) & ~3) >= need:
                    room = True
                    break
                off += rec_len
            if not room:
                continue
            for e in self._entries(dinode, pb, buf):
                if e.inode == 0 and e.rec_len >= need:
                    new = DirEntry(ino, name, ft, e.rec_len)
                    buf[e.offset:e.offset + e.rec_len] = new.pack(self.filetype)
                    self._mark_dirty(pb, buf)
                    self.write_inode(dinode)
                    return
                if e.inode and e.rec_len - e.actual_len >= need:
                    struct.pack_into("<H", buf, e.offset + 4, e.actual_len)
                    off = e.offset + e.actual_len
                    new = DirEntry(ino, name, ft, e.rec_len - e.actual_len)
                    buf[off:off + new.rec_len] = new.pack(self.filetype)
                    self._mark_dirty(pb, buf)
                    self.write_inode(dinode)
                    return
        lb = dinode.i_size // bs
        goal = self._bmap(dinode, lb - 1)[0] + 1 if lb else 0
        try:
            pb, _ = self._bmap(dinode, lb, True, goal, meta_leaf=True)
        except Ext2Error:
            self._free_blocks_from(dinode, lb)  # an indirect block without its leaf
            self.write_inode(dinode)
            raise
        buf = self._meta(pb)
        buf[:] = DirEntry(ino, name, ft, bs).pack(self.filetype)
        self._mark_dirty(pb, buf)
        dinode.i_size += bs
        self.write_inode(dinode)

    def _remove_entry(self, dinode: Inode, name: bytes) -> DirEntry:
        """diskfs_dirremove_hard: merge the entry into the previous one, or clear the
        inode number of an entry that starts a block."""
        for _lb, pb, buf in self._dir_blocks(dinode):
            prev = None
            for e in self._entries(dinode, pb, buf):
                if e.inode and e.name == name:
                    if prev is None:
                        U32.pack_into(buf, e.offset, 0)
                    else:
                        struct.pack_into("<H", buf, prev.offset + 4, prev.rec_len + e.rec_len)
                    self._mark_dirty(pb, buf)
                    self._dir_modified(dinode)
                    self.write_inode(dinode)
                    return e
                prev = e
        raise Ext2Error(errno.ENOENT, f"{name!r} not found")

    def _set_entry(self, dinode: Inode, name: bytes, ino: int, ft: int) -> None:
        """diskfs_dirrewrite_hard: entry ``name`` now names inode ``ino``."""
        pb, buf, e = self._find_entry(dinode, name)
        U32.pack_into(buf, e.offset, ino)
        if self.filetype:
            buf[e.offset + 7] = ft
        self._mark_dirty(pb, buf)
        self._dir_modified(dinode)
        self.write_inode(dinode)

    def _prepare_entry(self, dir_ino: int, name) -> tuple[Inode, bytes]:
        """(directory inode, name) for a new entry: a writable mount, a live directory,
        a valid name not there yet."""
        self._check_rw()
        dinode = self._dir_inode(dir_ino)
        nm = check_name(name)
        if dinode.i_links_count == 0:
            raise Ext2Error(errno.ENOENT, "directory was removed")
        if self._find(dinode, nm) is not None:
            raise Ext2Error(errno.EEXIST, f"{nm!r} exists")
        return dinode, nm

    def _init_dir(self, ino: int, parent: int, mode: int, uid: int, gid: int) -> Inode:
        """diskfs_init_dir: inode ``ino`` becomes a directory of one block holding .
        and .. (``parent``), with two links."""
        inode = self._new_inode(ino, D.S_IFDIR | (mode & 0o7777), uid, gid)
        inode.i_links_count = 2
        bs = self.block_size
        pb, _ = self._bmap(inode, 0, True, self._group_start(self._ino_group(ino)),
                           meta_leaf=True)
        buf = self._meta(pb)
        dot = DirEntry(ino, b".", self._ft(D.S_IFDIR), 12).pack(self.filetype)
        dotdot = DirEntry(parent, b"..", self._ft(D.S_IFDIR), bs - 12).pack(self.filetype)
        buf[:] = dot + dotdot
        self._mark_dirty(pb, buf)
        inode.i_size = bs
        self.write_inode(inode)
        return inode

    def _dir_is_empty(self, inode: Inode) -> bool:
        """diskfs_dirempty: nothing but . and .."""
        return all(e.name in (b".", b"..") for e in self.readdir(inode))
