"""Inode allocation (the Hurd's ext2fs/ialloc.c): the inode bitmaps and free-inode
counts, a new inode's initial fields (diskfs_alloc_node), and the release of an inode
whose last link and last user are gone (libdiskfs's diskfs_drop_node, then
diskfs_free_node with the xattr block of ext2fs/xattr.c)."""

from __future__ import annotations

import contextlib
import errno
import random
import struct

from . import ondisk as D
from .bitmap import clear_bit, find_next_zero_bit, set_bit
from .common import U32, Ext2Error, locked
from .ondisk import Inode

EXT2_XATTR_MAGIC = 0xEA020000


class InodeAlloc:
    """Mixin of ``Ext2``: allocate, initialise and free inodes."""

    def _find_inode_group(self, parent_group: int, is_dir: bool) -> int:
        """The group to search first: for a directory a group with at least the average
        free inodes and the most free blocks (find_group_dir); else the parent's group
        or the next one with a free inode."""
        gds = self.gd
        if is_dir:
            avg = self.sb.s_free_inodes_count // self.ngroups
            best = -1
            for g, gd in enumerate(gds):
                if gd.bg_free_inodes_count and gd.bg_free_inodes_count >= avg:
                    if best < 0 or gd.bg_free_blocks_count > gds[best].bg_free_blocks_count:
                        best = g
            if best >= 0:
                return best
        for i in range(self.ngroups):
            g = (parent_group + i) % self.ngroups
            if gds[g].bg_free_inodes_count:
                return g
        raise Ext2Error(errno.ENOSPC, "no free inodes")

    def alloc_inode(self, parent_ino: int = D.EXT2_ROOT_INO, is_dir: bool = False) -> int:
        """ext2_alloc_inode (the bitmap part): allocate an inode number near the parent's
        group (directories spread out); the inode itself is not initialised."""
        self._check_rw()
        ipg = self.sb.s_inodes_per_group
        g0 = self._find_inode_group(self._ino_group(parent_ino), is_dir)
        for i in range(self.ngroups):
            g = (g0 + i) % self.ngroups
            gd = self.gd[g]
            if not gd.bg_free_inodes_count:
                continue
            bm = self._meta(gd.bg_inode_bitmap)
            start = max(0, self.first_ino - 1 - g * ipg)  # never a reserved inode
            bit = find_next_zero_bit(bm, start, ipg)
            if bit < 0:
                continue
            set_bit(bm, bit)
            self._mark_dirty(gd.bg_inode_bitmap, bm)
            gd.bg_free_inodes_count -= 1
            self.sb.s_free_inodes_count -= 1
            if is_dir:
                gd.bg_used_dirs_count += 1
            self._gd_dirty = True
            return g * ipg + bit + 1
        raise Ext2Error(errno.ENOSPC, "no free inodes")

    def free_inode(self, ino: int, is_dir: bool = False) -> None:
        """diskfs_free_node (the bitmap part)."""
        self._check_rw()
        g = self._ino_group(ino)
        gd = self.gd[g]
        bm = self._meta(gd.bg_inode_bitmap)
        if not clear_bit(bm, (ino - 1) % self.sb.s_inodes_per_group):
            raise Ext2Error(errno.EIO, f"freeing inode {ino}, already free")
        self._mark_dirty(gd.bg_inode_bitmap, bm)
        gd.bg_free_inodes_count += 1
        self.sb.s_free_inodes_count += 1
        if is_dir:
            gd.bg_used_dirs_count -= 1
        self._gd_dirty = True

    def _new_inode(self, ino: int, mode: int, uid: int, gid: int) -> Inode:
        """diskfs_alloc_node's initialisation: a zeroed inode with ``mode``, owner,
        times and a fresh generation number (not yet written)."""
        now = int(self.clock())
        inode = Inode(_tail=bytes(self.inode_size - D.EXT2_GOOD_OLD_INODE_SIZE))
        inode.ino = ino
        inode.i_mode = mode
        inode.i_uid, inode.l_i_uid_high = uid & 0xFFFF, (uid >> 16) & 0xFFFF
        inode.i_gid, inode.l_i_gid_high = gid & 0xFFFF, (gid >> 16) & 0xFFFF
        inode.i_atime = inode.i_ctime = inode.i_mtime = now
        inode.i_generation = random.getrandbits(32)
        if self.inode_size >= 160:
            inode.i_extra_isize = 32
            t = bytearray(inode._tail)
            t[16:20] = U32.pack(now)  # i_crtime
            inode._tail = bytes(t)
        return inode

    @contextlib.contextmanager
    def _undo_alloc(self, ino: int):
        """Release a just-allocated inode (and its blocks) if what follows fails."""
        try:
            yield
        except BaseException:
            inode = self.read_inode(ino)
            inode.i_links_count = 0
            self._release_inode(inode)
            raise

    def _release_inode(self, inode: Inode) -> None:
        """diskfs_drop_node for an inode whose link count reached 0: truncate to 0
        (data and indirect blocks), free the xattr block and the inode; sets i_dtime."""
        is_dir = inode.is_dir()
        if self._has_data_blocks(inode):
            self._free_blocks_from(inode, 0)
        self._free_xattr_block(inode)
        inode.size = 0
        inode.i_links_count = 0
        inode.i_dtime = int(self.clock()) or 1
        self.write_inode(inode)
        self.free_inode(inode.ino, is_dir)

    def _free_xattr_block(self, inode: Inode) -> None:
        """ext2_free_xattr_block: drop the inode's reference on its xattr block (freed
        with the last one)."""
        b = inode.i_file_acl
        if not b:
            return
        buf = self._meta(b)
        magic, refcount = struct.unpack_from("<II", buf, 0)
        if magic == EXT2_XATTR_MAGIC and refcount > 1:
            struct.pack_into("<I", buf, 4, refcount - 1)
            self._mark_dirty(b, buf)
        else:
            self.free_block(b)
        inode.i_file_acl = 0
        inode.i_blocks -= self.block_size >> 9

    @locked
    def clear_inode(self, ino: int) -> None:
        """Release an inode left with no links by ``unlink(..., defer_free=True)`` (the
        diskfs_drop_node step, once the last user is gone)."""
        self._check_rw()
        inode = self.read_inode(ino)
        if inode.i_links_count:
            raise Ext2Error(errno.EBUSY, f"inode {ino} still has links")
        self._release_inode(inode)
