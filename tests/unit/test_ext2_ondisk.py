"""translators.ext2fs.ondisk: struct round trips and field offsets; plus the library over
an image made by its own mkfs (no e2fsprogs needed)."""

from __future__ import annotations

import errno
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from translators.ext2fs import Ext2, Ext2Error, Ext2UnsupportedFeature
from translators.ext2fs import ondisk as D
from translators.ext2fs.bitmap import clear_bit, find_next_zero_bit, set_bit
from translators.ext2fs.mkfs import mkfs


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1024, max_size=1024))
def test_superblock_round_trip(raw):
    assert D.Superblock.parse(raw).pack() == raw


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_group_desc_round_trip(raw):
    assert D.GroupDesc.parse(raw).pack() == raw


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([128, 256, 512]).flatmap(lambda n: st.binary(min_size=n, max_size=n)))
def test_inode_round_trip(raw):
    ino = D.Inode.parse(raw, 0, len(raw), ino=5)
    assert ino.ino == 5 and ino.pack() == raw


def test_superblock_field_offsets():
    raw = bytearray(1024)
    struct.pack_into("<I", raw, 0, 111)  # s_inodes_count
    struct.pack_into("<I", raw, 24, 2)  # s_log_block_size
    struct.pack_into("<H", raw, 56, D.EXT2_SUPER_MAGIC)
    struct.pack_into("<I", raw, 76, 1)  # s_rev_level
    struct.pack_into("<H", raw, 88, 256)  # s_inode_size
    struct.pack_into("<III", raw, 92, 0x38, 0x2, 0x3)  # compat, incompat, ro_compat
    struct.pack_into("<H", raw, 206, 31)  # s_reserved_gdt_blocks
    struct.pack_into("<I", raw, 236, 0xABCD)  # s_hash_seed[0]
    struct.pack_into("<HH", raw, 348, 32, 32)  # s_min/want_extra_isize
    sb = D.Superblock.parse(bytes(raw))
    assert sb.s_inodes_count == 111 and sb.block_size == 4096
    assert sb.s_magic == D.EXT2_SUPER_MAGIC and sb.inode_size == 256
    assert sb.s_reserved_gdt_blocks == 31 and sb.s_hash_seed[0] == 0xABCD
    assert sb.s_min_extra_isize == 32 and sb.s_want_extra_isize == 32
    assert sb.features() == {"compat": ["ext_attr", "resize_inode", "dir_index"],
                             "incompat": ["filetype"],
                             "ro_compat": ["sparse_super", "large_file"]}
    sb.s_free_blocks_count = 77
    assert struct.unpack_from("<I", sb.pack(), 12)[0] == 77
    rev0 = D.Superblock(s_rev_level=0, s_inode_size=999, s_first_ino=99)
    assert rev0.inode_size == 128 and rev0.first_ino == 11
    assert len(D.Superblock().pack()) == 1024


def test_group_desc_and_inode_offsets():
    gd = D.GroupDesc(bg_block_bitmap=3, bg_inode_bitmap=4, bg_inode_table=5,
                     bg_free_blocks_count=6, bg_free_inodes_count=7, bg_used_dirs_count=8)
    assert struct.unpack("<IIIHHH", gd.pack()[:18]) == (3, 4, 5, 6, 7, 8)
    assert len(gd.pack()) == 32
    ino = D.Inode(_tail=bytes(128))
    ino.i_mode = D.S_IFREG | 0o644
    ino.i_block = list(range(100, 115))
    ino.size = (3 << 32) + 5
    ino.i_extra_isize = 32
    raw = ino.pack()
    assert len(raw) == 256
    assert struct.unpack_from("<H", raw, 0)[0] == D.S_IFREG | 0o644
    assert struct.unpack_from("<15I", raw, 40) == tuple(range(100, 115))
    assert struct.unpack_from("<I", raw, 4)[0] == 5  # i_size
    assert struct.unpack_from("<I", raw, 108)[0] == 3  # i_size_high
    assert struct.unpack_from("<H", raw, 128)[0] == 32  # i_extra_isize
    back = D.Inode.parse(raw, 0, 256)
    assert back.size == (3 << 32) + 5 and back.i_extra_isize == 32 and back.is_reg()
    # For a directory i_size_high is i_dir_acl, not part of the size.
    back.i_mode = D.S_IFDIR | 0o755
    assert back.size == 5


@pytest.mark.parametrize("filetype", [True, False])
def test_dir_entry_round_trip(filetype):
    e = D.DirEntry(1234, b"hello", D.EXT2_FT_REG_FILE if filetype else 0, rec_len=20)
    raw = e.pack(filetype)
    assert len(raw) == 20 and raw[8:13] == b"hello"
    assert struct.unpack_from("<IH", raw) == (1234, 20)
    back = D.DirEntry.parse(raw, 0, filetype)
    assert (back.inode, back.name, back.rec_len, back.name_len) == (1234, b"hello", 20, 5)
    assert back.file_type == (D.EXT2_FT_REG_FILE if filetype else 0)
    assert D.DirEntry.min_rec_len(1) == 12 and D.DirEntry.min_rec_len(5) == 16
    assert D.DirEntry.min_rec_len(255) == 264


def test_sparse_super_groups_and_feature_names():
    groups = [g for g in range(400) if D.group_has_super(g, True)]
    assert groups == [0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125, 243, 343]
    assert all(D.group_has_super(g, False) for g in range(10))
    assert D.feature_names(0x40 | 0x80 | 0x40000, D.INCOMPAT) == [
        "extent", "64bit", "unknown_0x40000"]
    assert D.mode_to_file_type(D.S_IFLNK | 0o777) == D.EXT2_FT_SYMLINK


def test_find_next_zero_bit():
    bm = bytearray(b"\xff" * 8)
    assert find_next_zero_bit(bm, 0, 64) == -1
    bm[5] = 0xF7
    assert find_next_zero_bit(bm, 0, 64) == 43
    assert find_next_zero_bit(bm, 43, 64) == 43
    assert find_next_zero_bit(bm, 44, 64) == -1
    assert find_next_zero_bit(bm, 0, 43) == -1
    bm[0] = 0xFE
    assert find_next_zero_bit(bm, 0, 64) == 0


def test_set_and_clear_bit_return_the_old_value():
    bm = bytearray(2)
    assert set_bit(bm, 9) is False and bm == b"\x00\x02"
    assert set_bit(bm, 9) is True
    assert clear_bit(bm, 9) is True and bm == bytes(2)
    assert clear_bit(bm, 9) is False


@pytest.mark.parametrize("bs", [1024, 4096])
def test_library_over_own_mkfs(tmp_path, bs):
    """Writes through every block-map level, truncation and directories, checked
    against a model and across remounts (pure Python; e2fsprogs tests are elsewhere)."""
    img = tmp_path / "x.img"
    mkfs(img, 16 << 20, bs)
    rng = random.Random(bs)
    p = bs // 4
    with Ext2(img) as fs:
        free0 = fs.statfs()["f_bfree"]
        ino = fs.create(2, "f")
        model = bytearray()
        pieces = []
        for lb in (0, 11, 12, 12 + p, 12 + p + p * p, 12 + p + p * p + 3):
            data = rng.randbytes(bs // 2)
            off = lb * bs + bs // 3
            fs.write(ino, off, data)
            pieces.append((off, data))
            if lb < 2 * p:
                model.extend(bytes(max(0, off + len(data) - len(model))))
                model[off:off + len(data)] = data
        inode = fs.read_inode(ino)
        assert all(inode.i_block[i] for i in (12, 13, 14))
        assert fs.stat(ino)["st_size"] == off + len(data)
        for off, data in pieces:  # (the whole file is up to 4 GiB: read around pieces)
            assert fs.read(ino, off - 7, len(data) + 14) == bytes(7) + data + bytes(
                min(7, fs.stat(ino)["st_size"] - off - len(data)))
        assert fs.read(ino, 0, len(model)) == bytes(model)
        fs.truncate(ino, 12 * bs + 5)
        inode = fs.read_inode(ino)
        assert inode.i_block[13] == 0 and inode.i_block[14] == 0 and inode.i_block[12]
        assert fs.read(ino) == bytes(model[:12 * bs + 5])
        d = fs.mkdir(2, "d")
        for i in range(200):
            fs.write(fs.create(d, f"n{i}"), 0, b"%d" % i)
        assert fs.read_inode(2).i_links_count == 4  # ., .., lost+found/.., d/..
        with pytest.raises(Ext2Error) as ei:
            fs.create(d, "n5")
        assert ei.value.errno == errno.EEXIST
        for i in range(200):
            fs.unlink(d, f"n{i}")
        fs.rmdir(2, "d")
        fs.unlink(2, "f")
        assert fs.statfs()["f_bfree"] == free0
    with Ext2(img, read_only=True) as fs:
        assert fs.listdir(2) == ["lost+found"]


def test_unknown_incompat_refused(tmp_path):
    img = tmp_path / "u.img"
    mkfs(img, 4 << 20, 1024)
    with open(img, "r+b") as f:
        f.seek(1024)
        sb = D.Superblock.parse(f.read(1024))
        sb.s_feature_incompat |= 0x40 | 0x40000
        f.seek(1024)
        f.write(sb.pack())
    with pytest.raises(Ext2UnsupportedFeature) as ei:
        Ext2(img)
    assert ei.value.features == ["extent", "unknown_0x40000"]
    assert "extent" in str(ei.value)
