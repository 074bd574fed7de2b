"""Block allocation (the Hurd's ext2fs/balloc.c): the block bitmaps and the free-block
counts of the group descriptors and the superblock."""

from __future__ import annotations

import errno

from .bitmap import clear_bit, find_next_zero_bit, set_bit
from .common import Ext2Error


class BlockAlloc:
    """Mixin of ``Ext2``: allocate and free data and metadata blocks."""

    def alloc_block(self, goal: int = 0) -> int:
        """ext2_new_block: allocate a free block, the first at or after ``goal`` in its
        group, else the first free one in the following groups."""
        self._check_rw()
        sb = self.sb
        fdb = sb.s_first_data_block
        if not fdb <= goal < sb.s_blocks_count:
            goal = fdb
        g0 = self._block_group(goal)
        for i in range(self.ngroups + 1):
            g = (g0 + i) % self.ngroups
            gd = self.gd[g]
            if gd.bg_free_blocks_count == 0:
                continue
            bm = self._meta(gd.bg_block_bitmap)
            nbits = self._group_blocks(g)
            start = goal - self._group_start(g) if i == 0 else 0
            bit = find_next_zero_bit(bm, start, nbits)
            if bit < 0 and start:
                bit = find_next_zero_bit(bm, 0, nbits)
            if bit < 0:
                continue
            set_bit(bm, bit)
            self._mark_dirty(gd.bg_block_bitmap, bm)
            gd.bg_free_blocks_count -= 1
            sb.s_free_blocks_count -= 1
            self._gd_dirty = True
            return self._group_start(g) + bit
        raise Ext2Error(errno.ENOSPC, "no free blocks")

    def free_block(self, b: int) -> None:
        """ext2_free_blocks for one block; its cached copy is dropped."""
        self._check_rw()
        if not self.sb.s_first_data_block <= b < self.sb.s_blocks_count:
            raise Ext2Error(errno.EIO, f"freeing block {b} out of range")
        g = self._block_group(b)
        gd = self.gd[g]
        bm = self._meta(gd.bg_block_bitmap)
        if not clear_bit(bm, b - self._group_start(g)):
            raise Ext2Error(errno.EIO, f"freeing block {b}, already free")
        self._mark_dirty(gd.bg_block_bitmap, bm)
        gd.bg_free_blocks_count += 1
        self.sb.s_free_blocks_count += 1
        self._gd_dirty = True
        self._forget(b)
