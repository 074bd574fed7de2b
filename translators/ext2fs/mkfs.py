"""Make a fresh ext2 revision 1 image without e2fsprogs (what ``mke2fs -t ext2 -O
^resize_inode,^dir_index`` does): features filetype, sparse_super, large_file, ext_attr;
superblock backups and descriptor copies in groups 0, 1 and powers of 3, 5 and 7; a root
directory and a pre-sized lost+found, so ``e2fsck -fn`` finds the image clean.

    python -m translators.ext2fs.mkfs IMAGE SIZE [--block-size N] [--inodes N]
"""

from __future__ import annotations

import argparse
import os
import time
import uuid as uuidlib

from . import ondisk as D
from .filesystem import Ext2
from .ondisk import GroupDesc, Superblock

LOST_FOUND_BYTES = 16384


def _layout(blocks: int, bs: int, inodes: int | None, isz: int):
    fdb = 1 if bs == 1024 else 0
    bpg = 8 * bs
    ipb = bs // isz
    while True:
        ngroups = (blocks - fdb + bpg - 1) // bpg
        want = inodes if inodes else max(
            128, blocks * bs // (8192 if blocks * bs < 512 << 20 else 16384))
        ipg = -(-want // ngroups)
        ipg = -(-ipg // ipb) * ipb
        ipg = -(-ipg // 8) * 8
        ipg = max(16, min(ipg, bpg, 65528 // ipb * ipb))
        itb = ipg // ipb
        gdt = -(-ngroups * D.GROUP_DESC_SIZE // bs)
        last = blocks - fdb - (ngroups - 1) * bpg
        overhead = (1 + gdt if D.group_has_super(ngroups - 1, True) else 0) + 2 + itb
        if ngroups > 1 and last < overhead + 50:
            blocks -= last
            continue
        if last < overhead + 50 + LOST_FOUND_BYTES // bs:
            raise ValueError("image too small")
        return blocks, fdb, bpg, ngroups, ipg, itb, gdt


def mkfs(path, size_bytes: int, block_size: int = 4096, inodes: int | None = None,
         inode_size: int = 256, volume_name: str = "", clock=time.time) -> dict:
    """Create (or overwrite) the regular file ``path`` as a ``size_bytes`` ext2 image.
    ``inodes`` is the wanted inode count (default one per 8 KiB under 512 MiB, else per
    16 KiB); it is rounded to fill whole inode-table blocks.  Returns the geometry."""
    bs = block_size
    if bs not in (1024, 2048, 4096):
        raise ValueError("block_size must be 1024, 2048 or 4096")
    if inode_size not in (128, 256, 512, 1024) or inode_size > bs:
        raise ValueError("bad inode_size")
    blocks, fdb, bpg, ngroups, ipg, itb, gdt = _layout(size_bytes // bs, bs, inodes,
                                                       inode_size)
    now = int(clock())
    sb = Superblock()
    sb.s_inodes_count = ipg * ngroups
    sb.s_blocks_count = blocks
    sb.s_r_blocks_count = blocks // 20
    sb.s_first_data_block = fdb
    sb.s_log_block_size = sb.s_log_frag_size = (bs >> 10).bit_length() - 1
    sb.s_blocks_per_group = sb.s_frags_per_group = bpg
    sb.s_inodes_per_group = ipg
    sb.s_wtime = sb.s_lastcheck = sb.s_mkfs_time = now
    sb.s_max_mnt_count = -1
    sb.s_magic = D.EXT2_SUPER_MAGIC
    sb.s_state = D.EXT2_VALID_FS
    sb.s_errors = 1  # continue
    sb.s_creator_os = D.EXT2_OS_LINUX
    sb.s_rev_level = D.EXT2_DYNAMIC_REV
    sb.s_first_ino = D.EXT2_GOOD_OLD_FIRST_INO
    sb.s_inode_size = inode_size
    sb.s_feature_compat = D.EXT2_FEATURE_COMPAT_EXT_ATTR
    sb.s_feature_incompat = D.EXT2_FEATURE_INCOMPAT_FILETYPE
    sb.s_feature_ro_compat = (D.EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER
                              | D.EXT2_FEATURE_RO_COMPAT_LARGE_FILE)
    sb.s_uuid = uuidlib.uuid4().bytes
    sb.s_volume_name = volume_name.encode()[:16].ljust(16, b"\0")
    sb.s_hash_seed = list(int.from_bytes(os.urandom(4), "little") for _ in range(4))
    sb.s_def_hash_version = 1  # half_md4
    sb.s_flags = 1  # signed directory hash
    if inode_size > 128:
        sb.s_min_extra_isize = sb.s_want_extra_isize = 32

    gds = []
    bitmaps = []
    free_blocks = free_inodes = 0
    for g in range(ngroups):
        start = fdb + g * bpg
        nblocks = min(bpg, blocks - start)
        meta = start + (1 + gdt if D.group_has_super(g, True) else 0)
        gd = GroupDesc(bg_block_bitmap=meta, bg_inode_bitmap=meta + 1,
                       bg_inode_table=meta + 2)
        used = meta + 2 + itb - start
        bbm = bytearray(bs)
        for bit in range(used):
            bbm[bit >> 3] |= 1 << (bit & 7)
        for bit in range(nblocks, 8 * bs):  # padding past the group's end
            bbm[bit >> 3] |= 1 << (bit & 7)
        ibm = bytearray(bs)
        reserved = D.EXT2_GOOD_OLD_FIRST_INO - 1 if g == 0 else 0
        for bit in list(range(reserved)) + list(range(ipg, 8 * bs)):
            ibm[bit >> 3] |= 1 << (bit & 7)
        gd.bg_free_blocks_count = nblocks - used
        gd.bg_free_inodes_count = ipg - reserved
        free_blocks += gd.bg_free_blocks_count
        free_inodes += gd.bg_free_inodes_count
        gds.append(gd)
        bitmaps.append((bbm, ibm))
    sb.s_free_blocks_count = free_blocks
    sb.s_free_inodes_count = free_inodes

    gdt_raw = b"".join(g.pack() for g in gds)
    gdt_raw += bytes(gdt * bs - len(gdt_raw))
    with open(path, "wb") as f:
        f.truncate(blocks * bs)  # sparse: unwritten inode tables read as zeros
        for g in range(ngroups):
            start = fdb + g * bpg
            if D.group_has_super(g, True):
                sb.s_block_group_nr = g
                if g == 0:
                    f.seek(D.SUPERBLOCK_OFFSET)
                else:
                    f.seek(start * bs)
                f.write(sb.pack())
                f.seek((start + 1) * bs)
                f.write(gdt_raw)
            f.seek(gds[g].bg_block_bitmap * bs)
            f.write(bitmaps[g][0] + bitmaps[g][1])
        sb.s_block_group_nr = 0
        f.seek(D.SUPERBLOCK_OFFSET)
        f.write(sb.pack())

    with Ext2(path, clock=clock) as fs:
        # The root inode is reserved (its bit is already set); make it a directory.
        fs._init_dir(D.EXT2_ROOT_INO, D.EXT2_ROOT_INO, 0o755, 0, 0)
        fs.gd[0].bg_used_dirs_count += 1
        fs._gd_dirty = True
        lpf = fs.mkdir(D.EXT2_ROOT_INO, "lost+found", 0o700)
        # Pre-size lost+found as mke2fs does, so e2fsck need not allocate into it.
        inode = fs.read_inode(lpf)
        while inode.i_size < LOST_FOUND_BYTES:
            lb = inode.i_size // bs
            pb, _ = fs._bmap(inode, lb, True, fs._bmap(inode, lb - 1)[0] + 1,
                             meta_leaf=True)
            buf = fs._meta(pb)
            buf[:] = D.DirEntry(0, b"", 0, bs).pack(True)
            fs._mark_dirty(pb, buf)
            inode.i_size += bs
        fs.write_inode(inode)
        fs.sb.s_mnt_count = 0
    return {"blocks": blocks, "block_size": bs, "groups": ngroups,
            "inodes_per_group": ipg, "inodes": ipg * ngroups, "inode_size": inode_size,
            "first_data_block": fdb, "gdt_blocks": gdt, "inode_table_blocks": itb}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="make an ext2 image without e2fsprogs")
    ap.add_argument("image")
    ap.add_argument("size", help="bytes, or with suffix K, M, G")
    ap.add_argument("--block-size", type=int, default=4096)
    ap.add_argument("--inodes", type=int, default=None)
    ap.add_argument("--inode-size", type=int, default=256)
    a = ap.parse_args(argv)
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    s = a.size.upper()
    size = int(s[:-1]) * mult[s[-1]] if s[-1] in mult else int(s)
    geo = mkfs(a.image, size, a.block_size, a.inodes, a.inode_size)
    print(" ".join(f"{k}={v}" for k, v in geo.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
