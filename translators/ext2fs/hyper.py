"""Superblock and mount (the Hurd's ext2fs/hyper.c): reading and checking the superblock
and the group descriptors at mount (get_hypermetadata, map_hypermetadata), writing them
back (diskfs_set_hypermetadata), the clean/not-clean state, read-only mounts, and the
group geometry every allocator uses.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time

import structlog

from . import ondisk as D
from .common import Ext2Error, Ext2UnsupportedFeature, locked
from .ondisk import GroupDesc, Superblock

log = structlog.get_logger("ext2fs")

# What this implementation handles.  Incompat features outside both sets refuse the mount;
# ro_compat features outside SUPPORTED_RO_COMPAT make it read-only.
SUPPORTED_INCOMPAT = D.EXT2_FEATURE_INCOMPAT_FILETYPE
READONLY_INCOMPAT = D.EXT4_FEATURE_INCOMPAT_FLEX_BG  # layout only: readable, not written
SUPPORTED_RO_COMPAT = (D.EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER
                       | D.EXT2_FEATURE_RO_COMPAT_LARGE_FILE | 0x0004)  # btree_dir: unused


class Hyper:
    """Mixin of ``Ext2``: the mount itself.  Superblock backups (sparse_super) and the
    reserved GDT blocks (resize_inode) are never touched."""

    def __init__(self, path, read_only: bool = False, cache_blocks: int = 4096,
                 clock=time.time):
        self.path = str(path)
        self.clock = clock
        self.lock = threading.RLock()
        self.read_only = read_only
        self.ro_reasons: list[str] = []
        self.fd = os.open(self.path, os.O_RDONLY if read_only else os.O_RDWR)
        try:
            self._mount(cache_blocks)
        except BaseException:
            os.close(self.fd)
            self.fd = -1
            raise

    def _mount(self, cache_blocks: int) -> None:
        """get_hypermetadata + map_hypermetadata: check the superblock (magic, revision,
        block and inode size, features), load the group descriptors, mark the file
        system not clean while it is mounted read-write."""
        raw = os.pread(self.fd, D.SUPERBLOCK_SIZE, D.SUPERBLOCK_OFFSET)
        if len(raw) < D.SUPERBLOCK_SIZE:
            raise Ext2Error(errno.EINVAL, f"{self.path}: too small for an ext2 superblock")
        sb = self.sb = Superblock.parse(raw)
        if sb.s_magic != D.EXT2_SUPER_MAGIC:
            raise Ext2Error(errno.EINVAL, f"{self.path}: bad magic {sb.s_magic:#x}: not ext2")
        if sb.s_rev_level > D.EXT2_DYNAMIC_REV:
            raise Ext2Error(errno.EINVAL, f"unsupported revision {sb.s_rev_level}")
        if sb.s_log_block_size > 2:
            raise Ext2Error(errno.EINVAL, f"unsupported s_log_block_size "
                            f"{sb.s_log_block_size} (1024, 2048 or 4096-byte blocks only)")
        if sb.s_rev_level == D.EXT2_DYNAMIC_REV:
            self._check_features(sb)
        self.block_size = bs = sb.block_size
        self.inode_size = sb.inode_size
        if (self.inode_size < 128 or self.inode_size > bs
                or self.inode_size & (self.inode_size - 1)):
            raise Ext2Error(errno.EINVAL, f"bad inode size {self.inode_size}")
        if not sb.s_blocks_per_group or not sb.s_inodes_per_group:
            raise Ext2Error(errno.EINVAL, "bad group geometry")
        self.ptrs = bs // 4
        self.first_ino = sb.first_ino
        self.filetype = bool(sb.s_feature_incompat & D.EXT2_FEATURE_INCOMPAT_FILETYPE)
        self.ngroups = sb.group_count
        self.gdt_block = sb.s_first_data_block + 1
        self.gdt_blocks = (self.ngroups * D.GROUP_DESC_SIZE + bs - 1) // bs
        self._check_geometry(sb)
        raw = os.pread(self.fd, self.gdt_blocks * bs, self.gdt_block * bs)
        if len(raw) < self.gdt_blocks * bs:
            raise Ext2Error(errno.EINVAL, "group descriptors past the end of the image")
        self.gd = [GroupDesc.parse(raw, i * D.GROUP_DESC_SIZE) for i in range(self.ngroups)]
        self._check_descriptors()
        self._gd_dirty = False
        self._init_cache(cache_blocks)
        self._mount_state = sb.s_state
        if not self.read_only:
            # Linux ext2_setup_super: the fs is "not clean" while mounted read-write.
            sb.s_state &= ~D.EXT2_VALID_FS
            sb.s_mnt_count = (sb.s_mnt_count + 1) & 0xFFFF
            sb.s_mtime = int(self.clock())
            self._write_super()

    def _check_geometry(self, sb: Superblock) -> None:
        """The superblock's counts against each other and the image (what Linux's
        ext2_fill_super checks): EINVAL naming the first field that is wrong."""
        bs = self.block_size

        def bad(what):
            raise Ext2Error(errno.EINVAL, f"{self.path}: corrupt superblock: {what}")

        if sb.s_first_data_block != (1 if bs == 1024 else 0):
            bad(f"s_first_data_block {sb.s_first_data_block} with {bs}-byte blocks")
        st = os.fstat(self.fd)
        if stat.S_ISREG(st.st_mode) and st.st_size < sb.s_blocks_count * bs:
            bad(f"s_blocks_count {sb.s_blocks_count} exceeds the image "
                f"({st.st_size // bs} blocks)")
        if sb.s_blocks_per_group > 8 * bs or sb.s_inodes_per_group > 8 * bs:
            bad(f"{sb.s_blocks_per_group} blocks / {sb.s_inodes_per_group} inodes per "
                f"group (a bitmap block maps {8 * bs})")
        if sb.s_blocks_count <= sb.s_first_data_block + self.gdt_blocks:
            bad(f"s_blocks_count {sb.s_blocks_count}")
        if sb.s_inodes_count != sb.s_inodes_per_group * self.ngroups:
            bad(f"s_inodes_count {sb.s_inodes_count} != {sb.s_inodes_per_group} "
                f"inodes per group * {self.ngroups} groups")
        itb = (sb.s_inodes_per_group * self.inode_size + bs - 1) // bs
        if itb >= sb.s_blocks_per_group:
            bad(f"{itb} inode table blocks per group of {sb.s_blocks_per_group} blocks")
        if sb.s_rev_level and not D.EXT2_GOOD_OLD_FIRST_INO <= sb.s_first_ino \
                < sb.s_inodes_count:
            bad(f"s_first_ino {sb.s_first_ino}")
        if sb.s_free_blocks_count > sb.s_blocks_count or \
                sb.s_free_inodes_count > sb.s_inodes_count:
            bad("free counts larger than the totals")
        self.itb_per_group = itb

    def _check_descriptors(self) -> None:
        """ext2_check_descriptors: each group's bitmaps and inode table lie in the file
        system (in the group itself unless flex_bg) and its free counts fit."""
        sb = self.sb
        flex = sb.s_feature_incompat & D.EXT4_FEATURE_INCOMPAT_FLEX_BG
        for g, gd in enumerate(self.gd):
            lo, hi = self._group_start(g), self._group_start(g) + self._group_blocks(g)
            if flex:
                lo, hi = sb.s_first_data_block, sb.s_blocks_count
            for what, b, n in (("block bitmap", gd.bg_block_bitmap, 1),
                               ("inode bitmap", gd.bg_inode_bitmap, 1),
                               ("inode table", gd.bg_inode_table, self.itb_per_group)):
                if not lo <= b or b + n > hi:
                    raise Ext2Error(errno.EINVAL, f"{self.path}: corrupt group descriptor "
                                    f"{g}: {what} at block {b} not in [{lo}, {hi})")
            if gd.bg_free_blocks_count > self._group_blocks(g) or \
                    gd.bg_free_inodes_count > sb.s_inodes_per_group:
                raise Ext2Error(errno.EINVAL, f"{self.path}: corrupt group descriptor "
                                f"{g}: free counts larger than the group")

    def _check_features(self, sb: Superblock) -> None:
        """Refuse unknown incompat features; mount read-only for those we only read."""
        bad = sb.s_feature_incompat & ~(SUPPORTED_INCOMPAT | READONLY_INCOMPAT)
        if bad:
            raise Ext2UnsupportedFeature(D.feature_names(bad, D.INCOMPAT))
        ro = sb.s_feature_incompat & READONLY_INCOMPAT
        ro_names = D.feature_names(ro, D.INCOMPAT)
        ro_names += D.feature_names(sb.s_feature_ro_compat & ~SUPPORTED_RO_COMPAT,
                                    D.RO_COMPAT)
        if ro_names:
            self.ro_reasons = ro_names
            if not self.read_only:
                log.warning("ext2_mount_read_only", features=ro_names)
                os.close(self.fd)
                self.fd = os.open(self.path, os.O_RDONLY)
                self.read_only = True

    @locked
    def close(self) -> None:
        """Unmount (ext2_put_super): write everything back, restore the clean state."""
        if self.fd < 0:
            return
        if not self.read_only:
            self.sb.s_state = self._mount_state
            self.sync()
        os.close(self.fd)
        self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_rw(self) -> None:
        """diskfs_check_readonly: EROFS on a read-only mount."""
        if self.read_only:
            raise Ext2Error(errno.EROFS, "file system is read-only"
                            + (f" ({', '.join(self.ro_reasons)})" if self.ro_reasons else ""))

    def _write_super(self) -> None:
        self.sb.s_wtime = int(self.clock())
        os.pwrite(self.fd, self.sb.pack(), D.SUPERBLOCK_OFFSET)

    def _set_large_file(self) -> None:
        """A file passed 2 GiB: the image now needs the large_file feature."""
        if not self.sb.s_feature_ro_compat & D.EXT2_FEATURE_RO_COMPAT_LARGE_FILE:
            self.sb.s_feature_ro_compat |= D.EXT2_FEATURE_RO_COMPAT_LARGE_FILE

    @locked
    def sync(self, wait: bool = True) -> None:
        """Write back dirty metadata blocks, the group descriptors and the superblock
        (diskfs_set_hypermetadata + sync_global); fsync the image when ``wait``."""
        if self.read_only or self.fd < 0:
            return
        self._write_dirty()
        if self._gd_dirty:
            raw = b"".join(g.pack() for g in self.gd)
            raw += bytes(self.gdt_blocks * self.block_size - len(raw))
            os.pwrite(self.fd, raw, self.gdt_block * self.block_size)
            self._gd_dirty = False
        self._write_super()
        if wait:
            os.fsync(self.fd)

    flush = sync

    # ---- geometry (ext2fs.h's group_desc, inode_group_num ...) ---------------------

    def _group_blocks(self, g: int) -> int:
        """Blocks in group ``g`` (the last group may be short)."""
        if g < self.ngroups - 1:
            return self.sb.s_blocks_per_group
        return (self.sb.s_blocks_count - self.sb.s_first_data_block
                - g * self.sb.s_blocks_per_group)

    def _group_start(self, g: int) -> int:
        return self.sb.s_first_data_block + g * self.sb.s_blocks_per_group

    def _block_group(self, b: int) -> int:
        return (b - self.sb.s_first_data_block) // self.sb.s_blocks_per_group

    def _ino_group(self, ino: int) -> int:
        return (ino - 1) // self.sb.s_inodes_per_group
