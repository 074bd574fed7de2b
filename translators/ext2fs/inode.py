"""Inodes (the Hurd's ext2fs/inode.c): reading and writing an inode in its group's inode
table (diskfs_user_read_node, write_node), device numbers and fast symlinks in i_block
(read_symlink, write_symlink), the attribute calls (io_stat, file_chmod, file_utimes)
and diskfs_set_statfs.

The inode table blocks live in the disk cache, which is the inode cache here: every
``read_inode`` parses a fresh copy; change it, then ``write_inode``."""

from __future__ import annotations

import errno
import os
import struct

from . import ondisk as D
from .common import Ext2Error, locked
from .ondisk import Inode


class Inodes:
    """Mixin of ``Ext2``: the inode table and per-inode attributes."""

    def _inode_loc(self, ino: int) -> tuple[int, int]:
        """(inode table block, byte offset in it) of inode ``ino``."""
        if not 1 <= ino <= self.sb.s_inodes_count:
            raise Ext2Error(errno.EINVAL, f"bad inode number {ino}")
        g, idx = divmod(ino - 1, self.sb.s_inodes_per_group)
        off = idx * self.inode_size
        return (self.gd[g].bg_inode_table + off // self.block_size,
                off % self.block_size)

    @locked
    def read_inode(self, ino: int) -> Inode:
        """diskfs_user_read_node: the on-disk inode ``ino`` (a copy)."""
        blk, off = self._inode_loc(ino)
        return Inode.parse(self._meta(blk), off, self.inode_size, ino=ino)

    @locked
    def write_inode(self, inode: Inode) -> None:
        """write_node: store ``inode`` (its ``ino``) in the inode table."""
        self._check_rw()
        blk, off = self._inode_loc(inode.ino)
        buf = self._meta(blk)
        raw = inode.pack()
        buf[off:off + len(raw)] = raw
        self._mark_dirty(blk, buf)

    _FILE_TYPES = (D.S_IFREG, D.S_IFDIR, D.S_IFLNK, D.S_IFCHR, D.S_IFBLK, D.S_IFIFO,
                   D.S_IFSOCK)

    @locked
    def read_live_inode(self, ino: int) -> Inode:
        """diskfs_cached_lookup's read of an inode a directory entry names: EIO if it
        is not a live inode of a known type (free, an unknown i_mode type, a size past
        what its block tree can map) — a corrupt inode table or entry."""
        inode = self.read_inode(ino)
        if (not inode.i_links_count or inode.i_mode & D.S_IFMT not in self._FILE_TYPES
                or (inode.is_reg() and inode.size > self.max_file_size())):
            raise Ext2Error(errno.EIO, f"corrupt inode {ino}: mode {inode.i_mode:#o}, "
                            f"{inode.i_links_count} links, size {inode.size}")
        return inode

    def _as_inode(self, ino_or_inode) -> Inode:
        return ino_or_inode if isinstance(ino_or_inode, Inode) else self.read_inode(
            ino_or_inode)

    def _has_data_blocks(self, inode: Inode) -> bool:
        """Whether i_block holds block numbers (not a device number or a fast
        symlink's target)."""
        if inode.is_reg() or inode.is_dir():
            return True
        if inode.is_symlink():
            return not self._fast_symlink(inode)
        return False

    def _fast_symlink(self, inode: Inode) -> bool:
        """A symlink whose target lives in i_block: it owns no block but an xattr one."""
        ea = self.block_size >> 9 if inode.i_file_acl else 0
        return inode.i_blocks - ea == 0

    @staticmethod
    def _set_rdev(inode: Inode, rdev: int) -> None:
        """write_node's device number: the old 8:8 encoding in i_block[0] when it fits,
        else the new one in i_block[1] (as Linux)."""
        major, minor = os.major(rdev), os.minor(rdev)
        if major < 256 and minor < 256:
            inode.i_block[0] = (major << 8) | minor
        else:
            inode.i_block[1] = (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)

    @staticmethod
    def _rdev(inode: Inode) -> int:
        """diskfs_user_read_node's st_rdev of a device inode (0 for any other)."""
        if inode.file_type not in (D.S_IFCHR, D.S_IFBLK):
            return 0
        if inode.i_block[0]:
            return os.makedev(inode.i_block[0] >> 8, inode.i_block[0] & 0xFF)
        v = inode.i_block[1]
        return os.makedev((v & 0xFFF00) >> 8, (v & 0xFF) | ((v >> 12) & 0xFFF00))

    def _write_symlink(self, inode: Inode, target: bytes) -> None:
        """write_symlink: a target under 60 bytes goes in i_block (a fast symlink), a
        longer one in a data block.  Writes the inode."""
        if len(target) < 60:
            inode.i_block = list(struct.unpack("<15I", target.ljust(60, b"\0")))
            inode.i_size = len(target)
            self.write_inode(inode)
            return
        self.write_inode(inode)
        pb, _ = self._bmap(inode, 0, True)
        self.write_blocks(pb, target.ljust(self.block_size, b"\0"))
        inode.i_size = len(target)
        self.write_inode(inode)

    @locked
    def readlink(self, ino: int) -> bytes:
        """read_symlink: the target of a symbolic link."""
        inode = self.read_inode(ino)
        if not inode.is_symlink():
            raise Ext2Error(errno.EINVAL, f"inode {ino} is not a symlink")
        if self._fast_symlink(inode):
            return struct.pack("<15I", *inode.i_block)[:inode.i_size]
        return self.read(inode, 0, inode.i_size)

    @locked
    def stat(self, ino: int) -> dict:
        """io_stat: the inode's attributes, st_* names."""
        inode = self.read_inode(ino)
        return {
            "st_ino": ino, "st_mode": inode.i_mode, "st_nlink": inode.i_links_count,
            "st_uid": inode.uid, "st_gid": inode.gid, "st_size": inode.size,
            "st_blocks": inode.i_blocks, "st_blksize": self.block_size,
            "st_atime": inode.i_atime, "st_mtime": inode.i_mtime,
            "st_ctime": inode.i_ctime, "st_rdev": self._rdev(inode),
            "st_gen": inode.i_generation, "st_flags": inode.i_flags,
        }

    @locked
    def chmod(self, ino: int, mode: int) -> None:
        """file_chmod: set the permission bits."""
        self._check_rw()
        inode = self.read_inode(ino)
        inode.i_mode = (inode.i_mode & D.S_IFMT) | (mode & 0o7777)
        inode.i_ctime = int(self.clock())
        self.write_inode(inode)

    @locked
    def utimes(self, ino: int, atime: int | None = None, mtime: int | None = None) -> None:
        """file_utimes."""
        self._check_rw()
        inode = self.read_inode(ino)
        if atime is not None:
            inode.i_atime = int(atime)
        if mtime is not None:
            inode.i_mtime = int(mtime)
        inode.i_ctime = int(self.clock())
        self.write_inode(inode)

    @locked
    def statfs(self) -> dict:
        """diskfs_set_statfs: block and inode totals (f_* names)."""
        sb = self.sb
        return {
            "f_bsize": self.block_size, "f_blocks": sb.s_blocks_count,
            "f_bfree": sb.s_free_blocks_count,
            "f_bavail": max(0, sb.s_free_blocks_count - sb.s_r_blocks_count),
            "f_files": sb.s_inodes_count, "f_ffree": sb.s_free_inodes_count,
            "f_namemax": D.EXT2_NAME_LEN,
        }
