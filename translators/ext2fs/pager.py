"""The pager side of ext2fs (the Hurd's ext2fs/pager.c, file_pager_*): the libpager
callbacks of one regular file, moving pages between the kernel and the file's blocks in
the image."""

from __future__ import annotations

from protocol.defs import fs as F
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE
from translators.diskfs import FilePagerOps

MAX_WRITE_BLOCKS = 128  # blocks per disk write (the Hurd's pager_write_pages limit)


def ext2_error(e: OSError) -> MachError:
    """The Hurd error_t for an Ext2Error / OSError (its errno is Linux's)."""
    return MachError(F.from_os_error(e.errno) if e.errno else F.EIO, str(e))


class Ext2PagerOps(FilePagerOps):
    """The libpager callbacks of one file (ext2fs/pager.c file_pager_*): pages come from
    and go to the file's blocks in the image."""

    def __init__(self, fs, node):
        """``fs``: the Ext2Fs serving the image; ``node``: the file's Ext2Node."""
        super().__init__(node)
        self.fs = fs

    def _blocks(self, offset: int, length: int):
        """File blocks of [offset, offset+length) that lie before EOF."""
        bs = self.fs.ext2.block_size
        end = min(offset + length, self.node.size)
        return range(offset // bs, (end + bs - 1) // bs) if end > offset else range(0)

    def read_page(self, pager, offset: int, length: int):
        """pager_read_page: the page's blocks (1-4 per page).  A page with a hole
        before EOF is supplied zero-filled where there is no block and write-locked:
        its first write comes back as unlock_page, which allocates the blocks.  A block
        pointer outside the file system (a corrupt inode or indirect block) is EIO."""
        fs, ext2, bs = self.fs, self.fs.ext2, self.fs.ext2.block_size
        fs.count(read_page=1)
        buf = bytearray(length)
        hole = False
        try:
            with ext2.lock:
                inode = ext2.read_inode(self.node.ino)
                for lb in self._blocks(offset, length):
                    pb = ext2.bmap(inode, lb)
                    if not pb:
                        hole = True
                        continue
                    o = lb * bs - offset
                    buf[o:o + bs] = ext2.read_block(pb)
        except OSError as e:
            raise self.failed(ext2_error(e)) from e
        if hole:
            fs.count(hole_pages=1)
        return bytes(buf), hole

    def unlock_page(self, pager, offset: int, length: int):
        """pager_unlock_page: allocate the page's blocks (ext2_getblk with create)."""
        fs, ext2 = self.fs, self.fs.ext2
        fs.count(unlock_page=1)
        if self.node.dead:
            raise self.failed(MachError(F.EIO, "file removed"))
        try:
            with ext2.lock:
                inode = ext2.read_inode(self.node.ino)
                for lb in self._blocks(offset, length):
                    if not ext2.bmap(inode, lb):
                        ext2.bmap(inode, lb, create=True)
                        fs.count(blocks_allocated=1)
        except OSError as e:
            raise self.failed(ext2_error(e)) from e

    def write_page(self, pager, offset: int, data):
        """pager_write_page (ext2fs/pager.c file_pager_write_page): store one page; its
        blocks contiguous on disk go out in one disk write (pending_blocks)."""
        self.fs.count(write_page_calls=1)
        self._store(offset, data)

    def write_pages(self, pager, offset: int, data):
        """pager_write_pages (ext2fs/pager.c file_pager_write_pages, 2025): store a run
        of pages; runs of blocks contiguous on disk go out in one disk write of at most
        MAX_WRITE_BLOCKS blocks."""
        self.fs.count(write_pages_calls=1)
        self._store(offset, data)

    def _store(self, offset: int, data):
        """The pages' blocks to the disk: one disk write (through the device queue) per
        run of blocks contiguous on disk, at most MAX_WRITE_BLOCKS each; blocks past
        EOF are dropped.  A block still a hole (the file grew under a page the kernel
        already had unlocked) is allocated here."""
        fs, ext2, bs = self.fs, self.fs.ext2, self.fs.ext2.block_size
        fs.count(data_returns=1, pages_returned=len(data) // PAGE_SIZE)
        if self.node.dead:
            return  # its blocks are (being) freed
        runs: list[tuple[int, list]] = []
        mv = memoryview(data)
        try:
            with ext2.lock:
                inode = ext2.read_inode(self.node.ino)
                for lb in self._blocks(offset, len(data)):
                    pb = ext2.bmap(inode, lb)
                    if not pb:
                        pb = ext2.bmap(inode, lb, create=True)
                        fs.count(blocks_allocated=1, write_allocations=1)
                    o = lb * bs - offset
                    blk = mv[o:o + bs]
                    if runs and pb == runs[-1][0] + len(runs[-1][1]) \
                            and len(runs[-1][1]) < MAX_WRITE_BLOCKS:
                        runs[-1][1].append(blk)
                    else:
                        runs.append((pb, [blk]))
            for start, blks in runs:
                buf = b"".join(blks)
                fs.disk.write(len(buf), lambda start=start, buf=buf: self._write(start, buf))
                fs.count(blocks_written=len(blks))
        except OSError as e:
            raise self.failed(ext2_error(e)) from e

    def _write(self, start: int, buf: bytes):
        with self.fs.ext2.lock:
            self.fs.ext2.write_blocks(start, buf)


class Ext2PageWriteOps(Ext2PagerOps):
    """--write-mode page, ext2fs as in 2011: no pager_write_pages, so libpager calls
    pager_write_page once per page of every data_return — one disk write per page (per
    run of contiguous blocks within it, with blocks smaller than a page)."""

    write_pages = None  # libpager: no multi-page write
