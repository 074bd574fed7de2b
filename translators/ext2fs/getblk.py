"""Mapping a file's logical blocks to disk blocks (the Hurd's ext2fs/getblk.c
ext2_getblk, inode_getblk, block_getblk): the 12 direct blocks of i_block, then the
single, double and triple indirect blocks, allocating blocks along the path on demand.

New indirect blocks are zeroed in the disk cache (ext2_alloc_block with ``zero``); a
new data block is zeroed on disk by ``bmap`` or in the cache for metadata leaves
(directory blocks)."""

from __future__ import annotations

import errno

from . import ondisk as D
from .common import U32, Ext2Error, locked
from .ondisk import Inode


class GetBlk:
    """Mixin of ``Ext2``: the block map of an inode."""

    def _path(self, lblock: int) -> tuple[int, list[int]]:
        """(i_block slot, indices in each indirect block on the way) of ``lblock``."""
        p = self.ptrs
        if lblock < D.EXT2_NDIR_BLOCKS:
            return lblock, []
        lb = lblock - D.EXT2_NDIR_BLOCKS
        if lb < p:
            return D.EXT2_IND_BLOCK, [lb]
        lb -= p
        if lb < p * p:
            return D.EXT2_DIND_BLOCK, [lb // p, lb % p]
        lb -= p * p
        if lb < p * p * p:
            return D.EXT2_TIND_BLOCK, [lb // (p * p), (lb // p) % p, lb % p]
        raise Ext2Error(errno.EFBIG, f"block {lblock} beyond the triple indirect block")

    def _check_ptr(self, inode: Inode, b: int, lblock: int) -> int:
        """A block pointer read from ``inode``'s i_block or an indirect block: EIO
        unless it is 0 (a hole) or a block of the file system (ext2fs's
        ext2_check_blocks_bitmap / Linux's ext2_data_block_valid)."""
        if b and not self.sb.s_first_data_block <= b < self.sb.s_blocks_count:
            raise Ext2Error(errno.EIO, f"inode {inode.ino}: block {lblock} points to "
                            f"block {b}, outside the file system")
        return b

    def _bmap(self, inode: Inode, lblock: int, create: bool = False, goal: int = 0,
              meta_leaf: bool = False) -> tuple[int, bool]:
        """inode_getblk + block_getblk down the path: (physical block, newly allocated?).
        New indirect blocks are zeroed (in the cache); a new leaf is zeroed in the cache
        only when ``meta_leaf``.  The caller writes ``inode`` back."""
        slot, idx = self._path(lblock)
        b = self._check_ptr(inode, inode.i_block[slot], lblock)
        per = self.block_size >> 9
        if not goal:
            goal = self._group_start(self._ino_group(inode.ino))
        if not b:
            if not create:
                return 0, False
            b = self.alloc_block(goal)
            goal = b + 1
            inode.i_block[slot] = b
            inode.i_blocks += per
            if idx or meta_leaf:
                self._meta_new(b)
            if not idx:
                return b, True
        new = False
        for depth, i in enumerate(idx):
            buf = self._meta(b)
            nb = self._check_ptr(inode, U32.unpack_from(buf, i * 4)[0], lblock)
            if not nb:
                if not create:
                    return 0, False
                nb = self.alloc_block(max(goal, b + 1))
                U32.pack_into(buf, i * 4, nb)
                self._mark_dirty(b, buf)
                inode.i_blocks += per
                new = True
                if depth < len(idx) - 1 or meta_leaf:
                    self._meta_new(nb)
            b = nb
        return b, new

    def _bmap_span(self, inode: Inode, lblock: int) -> tuple[int, int]:
        """(physical block, 1) for a mapped block; (0, n) for a hole where the n blocks
        from ``lblock`` on are certainly holes (a whole missing indirect subtree)."""
        slot, idx = self._path(lblock)
        b = self._check_ptr(inode, inode.i_block[slot], lblock)
        p = self.ptrs
        for depth in range(len(idx) + 1):
            if not b:
                rest = idx[depth:]
                off = 0
                for i in rest:
                    off = off * p + i
                return 0, p ** len(rest) - off
            if depth == len(idx):
                return b, 1
            b = self._check_ptr(inode, U32.unpack_from(self._meta(b), idx[depth] * 4)[0],
                                lblock)
        return b, 1

    def _goal_after(self, inode: Inode, lblock: int) -> int:
        """The allocation goal for ``lblock``: just after the disk block of the file
        block before it (0, the inode's group, when that is a hole or there is none)."""
        if not lblock:
            return 0
        prev = self._bmap(inode, lblock - 1)[0]
        return prev + 1 if prev else 0

    @locked
    def bmap(self, inode: Inode, lblock: int, create: bool = False) -> int:
        """ext2_getblk: the physical block of file block ``lblock`` through the direct,
        indirect, double and triple indirect blocks; 0 for a hole.  With ``create`` a
        hole is filled (new data block zeroed on disk, indirect blocks allocated as
        needed) and ``inode`` is written back."""
        if not create:
            return self._bmap(inode, lblock)[0]
        self._check_rw()
        b, new = self._bmap(inode, lblock, True, self._goal_after(inode, lblock))
        if new:
            self.write_blocks(b, bytes(self.block_size))
            self.write_inode(inode)
        return b

    def max_file_size(self) -> int:
        """The largest i_size: what the triple indirect tree maps, within i_blocks'
        32 bits of 512-byte sectors (and 2 GiB - 1 on a revision 0 image)."""
        p = self.ptrs
        nblocks = D.EXT2_NDIR_BLOCKS + p + p * p + p * p * p
        limit = nblocks * self.block_size
        if not self.sb.s_rev_level:
            limit = min(limit, 2**31 - 1)
        return min(limit, ((1 << 32) - 1) * 512 - 4 * p * self.block_size)
