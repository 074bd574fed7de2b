"""Populated ext2 images made by real ``mke2fs`` and corrupted field by field with a
seeded generator, for the corrupted-image tests (test_ext2_corrupt.py).

``populate(img)`` fills a fresh image through the Ext2 library and returns the tree
(path -> bytes for files, None for directories).  ``CORRUPTIONS`` maps a kind
(superblock, group descriptors, inode table, directory blocks, indirect pointers) to a
function ``corrupt(img, rng, tree)`` that damages one field of that structure with a
value the file system can tell is wrong, and returns what it did."""

from __future__ import annotations

import os
import random
import struct
import subprocess
from pathlib import Path

from translators.ext2fs import ondisk as D
from translators.ext2fs.filesystem import Ext2


def mke2fs(img: Path, bs: int = 1024, size_mb: int = 16) -> Path:
    subprocess.run(["mke2fs", "-t", "ext2", "-q", "-F", "-b", str(bs), str(img),
                    f"{size_mb}M"], check=True, capture_output=True, timeout=60)
    return img


def pattern(n: int, seed: int) -> bytes:
    base = bytes((i * 31 + seed) % 251 for i in range(251))
    return (base * (n // 251 + 1))[:n]


# With 1 KiB blocks: direct blocks only, single indirect, double indirect.
FILES = {"small": 100, "ind": 20 * 1024, "dind": 300 * 1024, "d1/g": 5 * 1024,
         "d1/sub/h": 1500}


def populate(img: Path) -> dict:
    """Files of FILES and a directory of 60 entries (several blocks), written through
    the Ext2 library; returns path -> bytes (files) or None (directories)."""
    tree: dict = {"d1": None, "d1/sub": None, "many": None}
    with Ext2(img) as fs:
        d1 = fs.mkdir(D.EXT2_ROOT_INO, "d1")
        fs.mkdir(d1, "sub")
        many = fs.mkdir(D.EXT2_ROOT_INO, "many")
        for i, (path, size) in enumerate(FILES.items()):
            parent, _, name = path.rpartition("/")
            data = pattern(size, i)
            ino = fs.create(fs.namei(parent) if parent else D.EXT2_ROOT_INO, name)
            fs.write(ino, 0, data)
            tree[path] = data
        for i in range(60):
            name = f"entry-with-a-longish-name-{i:03d}"
            fs.write(fs.create(many, name), 0, b"%d" % i)
            tree[f"many/{name}"] = b"%d" % i
    return tree


def _geometry(img: Path):
    with Ext2(img, read_only=True) as fs:
        return fs.sb, list(fs.gd), fs.block_size, fs.inode_size


def _inode_of(img: Path, path: str):
    """(inode, byte offset of the inode in the image)."""
    with Ext2(img, read_only=True) as fs:
        ino = fs.namei(path) if path else D.EXT2_ROOT_INO
        blk, off = fs._inode_loc(ino)
        return fs.read_inode(ino), blk * fs.block_size + off


def _poke(img: Path, offset: int, fmt: str, value: int):
    fd = os.open(img, os.O_RDWR)
    try:
        os.pwrite(fd, struct.pack("<" + fmt, value), offset)
    finally:
        os.close(fd)


def _field_offset(cls, name: str) -> tuple[int, str]:
    off = 0
    for n, code in cls.FIELDS:
        if n == name:
            return off, code
        off += struct.calcsize("<" + code)
    raise KeyError(name)


def _bad_u32(rng: random.Random, lo: int) -> int:
    """A 32-bit value at or above ``lo`` (e.g. past the last block)."""
    return rng.randrange(lo, 1 << 32)


def corrupt_superblock(img, rng, tree) -> str:
    sb, _gd, bs, _isz = _geometry(img)
    size_blocks = img.stat().st_size // bs
    choices = {
        "s_magic": lambda: rng.choice([0, 0xEF52, rng.randrange(1 << 16)]),
        "s_blocks_count": lambda: _bad_u32(rng, size_blocks + 1),
        "s_inodes_count": lambda: sb.s_inodes_count + rng.randrange(1, 1 << 20),
        "s_first_data_block": lambda: rng.randrange(2, 1 << 16),
        "s_log_block_size": lambda: rng.randrange(3, 1 << 8),
        "s_blocks_per_group": lambda: rng.choice([0, 8 * bs + rng.randrange(1, 1 << 16)]),
        "s_inodes_per_group": lambda: rng.choice([0, 8 * bs + rng.randrange(1, 1 << 16)]),
        "s_rev_level": lambda: rng.randrange(2, 1 << 16),
        "s_inode_size": lambda: rng.choice([0, 100, 129, 3000]),
        "s_first_ino": lambda: rng.choice([0, 5, sb.s_inodes_count + 1]),
        "s_free_blocks_count": lambda: _bad_u32(rng, sb.s_blocks_count + 1),
        "s_feature_incompat": lambda: sb.s_feature_incompat | (1 << rng.randrange(5, 16)),
    }
    name = rng.choice(sorted(choices))
    off, code = _field_offset(D.Superblock, name)
    v = choices[name]()
    _poke(img, D.SUPERBLOCK_OFFSET + off, code, v & ((1 << (8 * struct.calcsize(code))) - 1))
    return f"{name}={v}"


def corrupt_group_desc(img, rng, tree) -> str:
    sb, gd, bs, _isz = _geometry(img)
    g = rng.randrange(len(gd))
    name = rng.choice(["bg_block_bitmap", "bg_inode_bitmap", "bg_inode_table",
                       "bg_free_blocks_count", "bg_free_inodes_count"])
    off, code = _field_offset(D.GroupDesc, name)
    if code == "I":
        v = rng.choice([0, _bad_u32(rng, sb.s_blocks_count)])
    else:
        v = rng.randrange(sb.s_blocks_per_group + 1, 1 << 16)
    base = (sb.s_first_data_block + 1) * bs + g * D.GROUP_DESC_SIZE
    _poke(img, base + off, code, v)
    return f"group {g} {name}={v}"


def corrupt_inode(img, rng, tree) -> str:
    sb, _gd, _bs, _isz = _geometry(img)
    path = rng.choice(sorted(p for p in tree if not p.startswith("many/")))
    inode, ioff = _inode_of(img, path)
    kind = rng.choice(["mode", "links", "block", "dir_size"] if tree[path] is None
                      else ["mode", "links", "block"])
    if kind == "mode":  # a file type nibble no inode may have
        v = (rng.choice([0, 3, 5, 7, 9, 11, 13, 14, 15]) << 12) | (inode.i_mode & 0o7777)
        off, code = _field_offset(D.Inode, "i_mode")
    elif kind == "links":
        v, (off, code) = 0, _field_offset(D.Inode, "i_links_count")
    elif kind == "dir_size":
        v = rng.choice([0xFFFFFFFF, inode.i_size + rng.randrange(1, 1024),
                        inode.i_size * rng.randrange(64, 4096)]) & 0xFFFFFFFF
        off, code = _field_offset(D.Inode, "i_size")
    else:
        used = [i for i, b in enumerate(inode.i_block) if b]
        slot = rng.choice(used)
        off, _ = _field_offset(D.Inode, "i_block")
        off, code = off + 4 * slot, "I"
        v = _bad_u32(rng, sb.s_blocks_count)
        kind = f"i_block[{slot}]"
    _poke(img, ioff + off, code, v)
    return f"{path} {kind}={v}"


def corrupt_dir_block(img, rng, tree) -> str:
    sb, _gd, bs, _isz = _geometry(img)
    path = rng.choice(["", "d1", "many"])
    with Ext2(img, read_only=True) as fs:
        inode = fs.read_inode(fs.namei(path) if path else D.EXT2_ROOT_INO)
        blocks = [pb for _lb, pb, _buf in fs._dir_blocks(inode)]
        pb = rng.choice(blocks)
        ents = list(fs._entries(inode, pb, fs._meta(pb)))
    e = rng.choice(ents)
    at = pb * bs + e.offset
    kind = rng.choice(["rec_len", "name_len", "inode"])
    if kind == "name_len" and e.rec_len - 7 > 255:
        kind = "rec_len"  # no 8-bit name_len overruns this record
    if kind == "rec_len":
        v = rng.choice([0, rng.randrange(1, 8), e.rec_len + rng.choice([1, 2, 3]),
                        bs - e.offset + 4 * rng.randrange(1, 100)])
        _poke(img, at + 4, "H", v & 0xFFFF)
    elif kind == "name_len":
        v = rng.randrange(e.rec_len - 7, 256)
        _poke(img, at + 6, "B", v)
    else:
        v = _bad_u32(rng, sb.s_inodes_count + 1)
        _poke(img, at, "I", v)
    return f"dir {path or '/'} block {pb} entry {e.name!r} {kind}={v}"


def corrupt_indirect(img, rng, tree) -> str:
    sb, _gd, bs, _isz = _geometry(img)
    path = rng.choice(["ind", "dind"])
    with Ext2(img, read_only=True) as fs:
        inode = fs.read_inode(fs.namei(path))
        ind = inode.i_block[D.EXT2_IND_BLOCK if path == "ind" else D.EXT2_DIND_BLOCK]
        if path == "dind" and rng.random() < 0.5:  # a pointer in a second-level block
            ind = struct.unpack_from("<I", fs._meta(ind), 0)[0]
        ptrs = struct.unpack(f"<{bs // 4}I", fs._meta(ind))
    used = [i for i, b in enumerate(ptrs) if b]
    i = rng.choice(used)
    v = _bad_u32(rng, sb.s_blocks_count)
    _poke(img, ind * bs + 4 * i, "I", v)
    return f"{path} indirect block {ind} slot {i}={v}"


CORRUPTIONS = {"superblock": corrupt_superblock, "group descriptors": corrupt_group_desc,
               "inode table": corrupt_inode, "directory blocks": corrupt_dir_block,
               "indirect pointers": corrupt_indirect}
