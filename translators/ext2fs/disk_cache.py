"""Block I/O on the image and the bounded write-back cache of metadata blocks (bitmaps,
inode tables, indirect and directory blocks): the role of the Hurd ext2fs's disk cache
(ext2fs/pager.c disk_cache_block_ref / disk_cache_block_deref over the disk pager) and
of its poke lists (pokel.c record_global_poke, sync_global).

File data does not stay here: it is read and written with pread/pwrite, contiguous runs
in one call (``write_blocks``); a data write drops any cached copy of its blocks.
"""

from __future__ import annotations

import errno
import os
from collections import OrderedDict

from .common import Ext2Error


class DiskCache:
    """Mixin of ``Ext2``: needs ``fd``, ``block_size`` and ``sb`` (set at mount)."""

    def _init_cache(self, cache_blocks: int) -> None:
        self._cache: OrderedDict[int, bytearray] = OrderedDict()
        self._dirty: set[int] = set()
        self.cache_blocks = max(64, cache_blocks)
        self.stats = {"meta_reads": 0, "meta_writes": 0, "data_reads": 0,
                      "data_writes": 0, "data_blocks_written": 0}

    def read_block(self, n: int) -> bytes:
        """Read one block (from the cache if it holds it)."""
        buf = self._cache.get(n)
        if buf is not None:
            return bytes(buf)
        return self._read_run(n, 1)

    def _read_run(self, start: int, n: int) -> bytes:
        """Blocks ``start``..``start+n-1`` in one pread, unless the cache holds one."""
        bs = self.block_size
        if start < 0 or start + n > self.sb.s_blocks_count:
            raise Ext2Error(errno.EIO, f"read of blocks {start}+{n} outside the file system")
        if any(b in self._cache for b in range(start, start + n)):
            return b"".join(self.read_block(b) for b in range(start, start + n))
        self.stats["data_reads"] += 1
        data = os.pread(self.fd, n * bs, start * bs)
        if len(data) < n * bs:
            raise Ext2Error(errno.EIO, f"short read at block {start}")
        return data

    def write_blocks(self, start: int, data) -> None:
        """Write whole blocks ``start``.. in one pwrite (the multi-block path); cached
        copies of those blocks are dropped."""
        bs = self.block_size
        if len(data) % bs:
            raise Ext2Error(errno.EINVAL, "write_blocks needs whole blocks")
        n = len(data) // bs
        if start < 1 or start + n > self.sb.s_blocks_count:
            raise Ext2Error(errno.EIO, f"write_blocks out of range: {start}+{n}")
        for b in range(start, start + n):
            if b in self._cache:
                del self._cache[b]
                self._dirty.discard(b)
        os.pwrite(self.fd, data, start * bs)
        self.stats["data_writes"] += 1
        self.stats["data_blocks_written"] += n

    def _meta(self, n: int) -> bytearray:
        """disk_cache_block_ref: metadata block ``n``, cached; change it in place, then
        ``_mark_dirty``."""
        buf = self._cache.get(n)
        if buf is not None:
            self._cache.move_to_end(n)
            return buf
        if not 0 <= n < self.sb.s_blocks_count:
            raise Ext2Error(errno.EIO, f"metadata block {n} out of range")
        buf = bytearray(os.pread(self.fd, self.block_size, n * self.block_size))
        if len(buf) < self.block_size:
            raise Ext2Error(errno.EIO, f"metadata block {n} is past the end of the image")
        self.stats["meta_reads"] += 1
        self._cache_put(n, buf)
        return buf

    def _meta_new(self, n: int) -> bytearray:
        """A just-allocated metadata block, zeroed in the cache (not read)."""
        buf = bytearray(self.block_size)
        self._cache_put(n, buf)
        self._dirty.add(n)
        return buf

    def _mark_dirty(self, n: int, buf: bytearray) -> None:
        """record_global_poke: block ``n`` must reach the disk at the next sync."""
        if self._cache.get(n) is not buf:
            self._cache_put(n, buf)
        self._dirty.add(n)

    def _cache_put(self, n: int, buf: bytearray) -> None:
        self._cache[n] = buf
        self._cache.move_to_end(n)
        while len(self._cache) > self.cache_blocks:
            old, obuf = self._cache.popitem(last=False)
            if old in self._dirty:  # the disk pager's pageout of a dirty block
                self._dirty.discard(old)
                os.pwrite(self.fd, obuf, old * self.block_size)
                self.stats["meta_writes"] += 1

    def _forget(self, n: int) -> None:
        """A freed block: its cached copy is worthless."""
        self._cache.pop(n, None)
        self._dirty.discard(n)

    def _write_dirty(self) -> None:
        """sync_global: write every dirty metadata block back, in block order."""
        for n in sorted(self._dirty):
            os.pwrite(self.fd, self._cache[n], n * self.block_size)
            self.stats["meta_writes"] += 1
        self._dirty.clear()
