"""Truncate (the Hurd's ext2fs/truncate.c diskfs_truncate): free the data and indirect
blocks past a new end (trunc_direct, trunc_indirect and its single, double and triple
forms) and zero the tail of the block that keeps EOF."""

from __future__ import annotations

import errno
import struct

from . import ondisk as D
from .common import Ext2Error, locked
from .ondisk import Inode


class Truncate:
    """Mixin of ``Ext2``: shrink and extend files."""

    @locked
    def truncate(self, ino: int, size: int) -> None:
        """file_set_size / diskfs_truncate: shrink (freeing data and indirect blocks past
        the new end) or extend (sparsely) a regular file."""
        self._check_rw()
        inode = self.read_inode(ino)
        if inode.is_dir():
            raise Ext2Error(errno.EISDIR, "truncate of a directory")
        if size < 0 or size > self.max_file_size():
            raise Ext2Error(errno.EINVAL if size < 0 else errno.EFBIG, f"bad size {size}")
        old = inode.size
        if size > old:
            self._zero_tail(inode, old)
        elif size < old:
            bs = self.block_size
            self._free_blocks_from(inode, (size + bs - 1) // bs)
            self._zero_tail(inode, size)
        inode.size = size
        if size > 2**31 - 1 and inode.is_reg():
            self._set_large_file()
        inode.i_mtime = inode.i_ctime = int(self.clock())
        self.write_inode(inode)

    def _zero_tail(self, inode: Inode, size: int) -> None:
        """Zero the bytes of the block holding EOF beyond ``size`` (block_truncate_page),
        so a later extension reads zeros there."""
        bs = self.block_size
        if size % bs == 0:
            return
        pb = self._bmap(inode, size // bs)[0]
        if pb:
            data = bytearray(self.read_block(pb))
            if any(data[size % bs:]):
                data[size % bs:] = bytes(bs - size % bs)
                self.write_blocks(pb, data)

    def _free_blocks_from(self, inode: Inode, keep: int) -> None:
        """trunc_direct + trunc_indirect: free every block of ``inode`` at file block
        ``keep`` and beyond, and the indirect blocks left mapping nothing."""
        per = self.block_size >> 9
        for i in range(max(keep, 0), D.EXT2_NDIR_BLOCKS):
            b = inode.i_block[i]
            if b:
                self.free_block(b)
                inode.i_block[i] = 0
                inode.i_blocks -= per
        p = self.ptrs
        base = D.EXT2_NDIR_BLOCKS
        for slot, depth in ((D.EXT2_IND_BLOCK, 1), (D.EXT2_DIND_BLOCK, 2),
                            (D.EXT2_TIND_BLOCK, 3)):
            span = p ** depth
            b = inode.i_block[slot]
            if b and keep < base + span:
                if self._free_tree(inode, b, depth, base, keep):
                    inode.i_block[slot] = 0
            base += span

    def _free_tree(self, inode: Inode, b: int, depth: int, base: int, keep: int) -> bool:
        """trunc_indirect of indirect block ``b`` (``depth`` levels above the data,
        mapping file blocks from ``base``): free what lies at ``keep`` and beyond;
        True when ``b`` itself was freed."""
        per = self.block_size >> 9
        buf = self._meta(b)
        ptrs = list(struct.unpack(f"<{self.ptrs}I", buf))
        sub = self.ptrs ** (depth - 1)
        changed = False
        for i, c in enumerate(ptrs):
            if not c:
                continue
            cbase = base + i * sub
            if cbase + sub <= keep:
                continue
            if depth == 1:
                self.free_block(c)
                inode.i_blocks -= per
            elif not self._free_tree(inode, c, depth - 1, cbase, keep):
                continue
            ptrs[i] = 0
            changed = True
        if keep <= base:
            self.free_block(b)
            inode.i_blocks -= per
            return True
        if changed:
            buf[:] = struct.pack(f"<{self.ptrs}I", *ptrs)
            self._mark_dirty(b, buf)
        return False
