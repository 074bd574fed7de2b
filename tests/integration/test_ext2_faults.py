"""ext2fs faults (issue 8, findings 7 and 8): a block pointer outside the file
system is EIO through the pager and with --direct-io; a directory entry with rec_len 0
and a directory whose i_size is 0xFFFFFFFF are EIO (at once); a file past 2 GiB is read
and written through the pager (a moving window, not a whole-file mapping); a failed
io_write answers an errno and leaves the file's size as it was."""

from __future__ import annotations

import os
import struct
import time

import pytest

from protocol.defs import fs as F
from tests.integration.ext2_images import _field_offset, _inode_of, mke2fs, populate
from tests.integration.test_ext2fs_translator import (
    Client,
    e2fsck,
    needs_e2fsprogs,
    pattern,
    start_ext2fs,
    stop_ext2fs,
)
from tests.integration.test_memfs_fs import errno_of
from translators.ext2fs import ondisk as D
from translators.ext2fs.common import Ext2Error
from translators.ext2fs.filesystem import Ext2

GiB = 1 << 30
RW = F.O_READ | F.O_WRITE
T = 30


def _poke(img, offset, fmt, value):
    fd = os.open(img, os.O_RDWR)
    try:
        os.pwrite(fd, struct.pack("<" + fmt, value), offset)
    finally:
        os.close(fd)


def _set_i_block(img, path, slot, value):
    _inode, ioff = _inode_of(img, path)
    off, _ = _field_offset(D.Inode, "i_block")
    _poke(img, ioff + off + 4 * slot, "I", value)


@pytest.fixture
def image(tmp_path):
    img = mke2fs(tmp_path / "f.img", 1024, 16)
    return img, populate(img)


@needs_e2fsprogs
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["pager", "direct-io"])
def test_block_pointer_past_the_end_is_eio(kernel, tasks, procs, run_dir, image, mode):
    """i_block[4] of a file pointing past the last block: reading that block (its
    page, in the pager) is EIO — the pager used to supply it zero-filled, as success;
    the rest of the file and the other files still read right."""
    img, tree = image
    with Ext2(img, read_only=True) as fs:
        past = fs.sb.s_blocks_count + 5
    _set_i_block(img, "d1/g", 4, past)
    p = start_ext2fs(procs, run_dir, "--image", str(img), "--sync-interval", "0",
                     *(["--direct-io"] if mode == "direct-io" else []))
    c = Client(tasks.new("c"))
    f = c.open("d1/g", F.O_READ)
    assert c.call(F.io_read, f, 0, 4096) == tree["d1/g"][:4096]
    assert errno_of(F.io_read, f, 4096, 1024, rt=c.rt) == F.EIO
    assert errno_of(F.io_read, f, 0, 5 * 1024, rt=c.rt) == F.EIO
    small = c.open("small", F.O_READ)
    assert c.call(F.io_read, small, 0, 1000) == tree["small"]
    p.kill(15)
    assert p.p.wait(60) is not None


@needs_e2fsprogs
def test_block_pointer_past_the_end_library(image):
    img, _tree = image
    with Ext2(img, read_only=True) as fs:
        past = fs.sb.s_blocks_count
        ind = fs.read_inode(fs.namei("ind")).i_block[D.EXT2_IND_BLOCK]
    _poke(img, ind * 1024 + 8, "I", past)  # file block 14, through the indirect block
    with Ext2(img, read_only=True) as fs:
        ino = fs.namei("ind")
        assert fs.read(ino, 0, 14 * 1024) == _tree["ind"][:14 * 1024]
        for call in (lambda: fs.read(ino, 14 * 1024, 10),
                     lambda: fs.bmap(fs.read_inode(ino), 14)):
            with pytest.raises(Ext2Error) as e:
                call()
            assert e.value.errno == 5 and "outside the file system" in str(e.value)


@needs_e2fsprogs
def test_rec_len_zero_is_eio(image):
    """An entry with rec_len 0 (the parser used to take it for the minimal length)."""
    img, _tree = image
    with Ext2(img, read_only=True) as fs:
        inode = fs.read_inode(D.EXT2_ROOT_INO)
        pb = next(fs._dir_blocks(inode))[1]
        last = list(fs._entries(inode, pb, fs._meta(pb)))[-1]
    _poke(img, pb * 1024 + last.offset + 4, "H", 0)
    with Ext2(img, read_only=True) as fs:
        for call in (lambda: fs.readdir(D.EXT2_ROOT_INO),
                     lambda: fs.lookup(D.EXT2_ROOT_INO, last.name)):
            with pytest.raises(Ext2Error) as e:
                call()
            assert e.value.errno == 5 and "corrupt directory" in str(e.value)


@needs_e2fsprogs
def test_huge_directory_size_is_eio_at_once(image):
    """i_size 0xFFFFFFFF on a directory: every operation used to walk 4 million holes
    (about a second each); now the size is checked against i_blocks first."""
    img, _tree = image
    _inode, ioff = _inode_of(img, "many")
    off, code = _field_offset(D.Inode, "i_size")
    _poke(img, ioff + off, code, 0xFFFFFFFF)
    with Ext2(img, read_only=True) as fs:
        ino = fs.lookup(D.EXT2_ROOT_INO, "many")
        t0 = time.monotonic()
        for call in (lambda: fs.readdir(ino), lambda: fs.lookup(ino, "x"),
                     lambda: fs.listdir(ino)):
            with pytest.raises(Ext2Error) as e:
                call()
            assert e.value.errno == 5 and "i_size 4294967295" in str(e.value)
        assert time.monotonic() - t0 < 5  # a bounded check, not a 12 s walk


@needs_e2fsprogs
@pytest.mark.timeout(180)
def test_file_past_2gib_through_the_pager(kernel, tasks, procs, run_dir, tmp_path):
    """A sparse file past 2 GiB (and past ext2fs's 3 GiB address space) read and written
    in the default mode: the bytes at 2 GiB - 3, 3 GiB + 5 and 5 GiB come back, holes
    read as zeros, the size is right, and the blocks are on disk after the stop."""
    img = mke2fs(tmp_path / "big.img", 4096, 64)
    p = start_ext2fs(procs, run_dir, "--image", str(img), "--sync-interval", "0")
    c = Client(tasks.new("c"))
    f = c.open("big", F.O_CREAT | RW)
    writes = [(2 * GiB - 3, pattern(10000, 1)), (3 * GiB + 5, pattern(70000, 2)),
              (5 * GiB, pattern(4096, 3))]
    for off, data in writes:
        assert c.call(F.io_write, f, data, off) == len(data)
    for off, data in writes:
        assert c.call(F.io_read, f, off, len(data)) == data
        assert c.call(F.io_read, f, off - 100, 100) == bytes(100)  # the hole before
    assert c.call(F.io_stat, f)["st_size"] == 5 * GiB + 4096
    assert c.call(F.io_read, f, 5 * GiB + 4000, 1000) == writes[2][1][4000:]
    c.call(F.file_sync, f, 1, 0)
    c.close(f)
    stop_ext2fs(p, run_dir)
    with Ext2(img, read_only=True) as fs:
        ino = fs.namei("big")
        assert fs.read_inode(ino).size == 5 * GiB + 4096
        for off, data in writes:
            assert fs.read(ino, off, len(data)) == data


@needs_e2fsprogs
@pytest.mark.timeout(180)
def test_failed_write_leaves_the_size_and_answers_enospc(kernel, tasks, procs, run_dir,
                                                         tmp_path):
    """ext2fs out of space in the default mode: the write's pages cannot get blocks
    (unlock_page ENOSPC), io_write answers ENOSPC (not a Mach code) and the size is
    what it was; the space comes back and a small write works."""
    img = mke2fs(tmp_path / "s.img", 1024, 3)
    p = start_ext2fs(procs, run_dir, "--image", str(img), "--sync-interval", "0")
    c = Client(tasks.new("c"))
    f = c.open("f", F.O_CREAT | RW)
    head = pattern(3000, 4)
    assert c.call(F.io_write, f, head, 0) == len(head)
    code = errno_of(F.io_write, f, pattern(3584 << 10, 5), 1000, rt=c.rt)
    assert code == F.ENOSPC, hex(code)
    assert c.call(F.io_stat, f)["st_size"] == len(head)
    got = c.call(F.io_read, f, 0, 10000)  # bytes the failed write reached may differ
    assert len(got) == len(head) and got[:1000] == head[:1000]
    g = c.open("g", F.O_CREAT | RW)
    assert c.call(F.io_write, g, b"after", 0) == 5
    assert c.call(F.io_read, g, 0, 10) == b"after"
    # past the maximum file size: EFBIG, size unchanged
    assert errno_of(F.io_write, f, b"x", 1 << 45, rt=c.rt) == F.EFBIG
    assert c.call(F.io_stat, f)["st_size"] == len(head)
    c.close(f)
    c.close(g)
    stop_ext2fs(p, run_dir)
    e2fsck(img)  # nothing left allocated past the restored end


@needs_e2fsprogs
@pytest.mark.timeout(120)
def test_direct_io_short_write_reports_what_was_stored(kernel, tasks, procs, run_dir,
                                                       tmp_path):
    """--direct-io out of space part way: io_write answers the amount stored (it used
    to answer the whole length), the size ends there and those bytes read back."""
    img = mke2fs(tmp_path / "d.img", 1024, 3)
    p = start_ext2fs(procs, run_dir, "--image", str(img), "--sync-interval", "0",
                     "--direct-io")
    c = Client(tasks.new("c"))
    f = c.open("f", F.O_CREAT | RW)
    data = pattern(3584 << 10, 8)
    n = c.call(F.io_write, f, data, 0)
    assert 0 < n < len(data)
    assert c.call(F.io_stat, f)["st_size"] == n
    assert c.read_all(f, n) == data[:n]
    c.close(f)
    stop_ext2fs(p, run_dir)
    e2fsck(img)
