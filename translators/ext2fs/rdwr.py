"""Reading and writing file data straight on the image (libdiskfs's diskfs_node_rdwr /
_diskfs_rdwr_internal, with the block-level work ext2fs/pager.c's file_pager_read_page
and file_pager_write_page do): runs of blocks contiguous on disk are read and written in
one call, holes read as zeros and are filled on write.

The translator's paged I/O does not use these (it goes through the kernel's page cache
and ``bmap`` / ``read_block`` / ``write_blocks``); they serve --direct-io, symlinks,
mkfs and the tests."""

from __future__ import annotations

import errno

from .common import Ext2Error, locked


class ReadWrite:
    """Mixin of ``Ext2``: file contents by byte range."""

    @locked
    def read(self, ino, offset: int = 0, length: int | None = None) -> bytes:
        """io_read: up to ``length`` bytes at ``offset`` (holes read as zeros)."""
        inode = self._as_inode(ino)
        size = inode.size
        if length is None:
            length = size
        if offset >= size or length <= 0:
            return b""
        length = min(length, size - offset)
        bs = self.block_size
        first, last = offset // bs, (offset + length - 1) // bs
        out = bytearray()
        run_phys, run_n = -1, 0  # the current run: all holes (0) or contiguous blocks

        def flush():
            if run_n:
                if run_phys == 0:
                    out.extend(bytes(run_n * bs))
                else:
                    out.extend(self._read_run(run_phys, run_n))

        lb = first
        while lb <= last:
            pb, n = self._bmap_span(inode, lb)
            n = min(n, last + 1 - lb)
            if run_n and ((pb == 0 and run_phys == 0) or
                          (pb and run_phys and pb == run_phys + run_n)):
                run_n += n
            else:
                flush()
                run_phys, run_n = pb, n
            lb += n
        flush()
        start = offset - first * bs
        return bytes(out[start:start + length])

    @locked
    def write(self, ino: int, offset: int, data) -> int:
        """io_write: write ``data`` at ``offset``, allocating blocks (and indirect blocks)
        for holes and growth; contiguous new blocks go out in one ``write_blocks``.  Out
        of space part way, what fits is kept (a short write) and nothing stays
        allocated past the new end."""
        self._check_rw()
        inode = self.read_inode(ino)
        if inode.is_dir():
            raise Ext2Error(errno.EISDIR, "write to a directory")
        data = memoryview(bytes(data)) if not isinstance(data, (bytes, bytearray)) \
            else memoryview(data)
        n = len(data)
        if n == 0:
            return 0
        end = offset + n
        if offset < 0 or end > self.max_file_size():
            raise Ext2Error(errno.EFBIG, f"write past the maximum file size at {end}")
        old_size = inode.size
        if offset > old_size:
            self._zero_tail(inode, old_size)
        bs = self.block_size
        first, last = offset // bs, (end - 1) // bs
        goal = self._goal_after(inode, first)
        run_start, run = 0, []
        pos = 0
        written_end = offset  # bytes before this are on disk (for a short write)
        failure = None
        for lb in range(first, last + 1):
            base = lb * bs
            lo = max(offset, base) - base
            hi = min(end, base + bs) - base
            try:
                pb, new = self._bmap(inode, lb, True, goal)
            except Ext2Error as e:
                if e.errno != errno.ENOSPC:
                    raise
                failure = e
                break
            chunk = data[pos:pos + hi - lo]
            pos += hi - lo
            goal = pb + 1
            if hi - lo == bs:
                blk = chunk
            else:
                buf = bytearray(bs) if new else bytearray(self.read_block(pb))
                buf[lo:hi] = chunk
                blk = buf
            if run and pb == run_start + len(run):
                run.append(blk)
            else:
                if run:
                    self.write_blocks(run_start, b"".join(run))
                run_start, run = pb, [blk]
            written_end = base + hi
        if run:
            self.write_blocks(run_start, b"".join(run))
        if failure is not None:
            # ext2_write_failed: a short write; nothing may stay allocated past EOF.
            new_size = max(old_size, written_end)
            self._free_blocks_from(inode, (new_size + bs - 1) // bs)
            if written_end == offset:
                inode.size = new_size
                self.write_inode(inode)
                raise failure
            end = written_end
        if end > old_size:
            inode.size = end
            if end > 2**31 - 1 and inode.is_reg():
                self._set_large_file()
        now = int(self.clock())
        inode.i_mtime = inode.i_ctime = now
        self.write_inode(inode)
        return end - offset
