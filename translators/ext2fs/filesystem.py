"""An ext2 file system over an image file: the disk-format half of the Hurd's ext2fs
translator (ext2fs/{hyper,getblk,balloc,ialloc,dir,inode,truncate}.c), with no dependency
on the kernel.

``Ext2(path, read_only=False)`` mounts an image.  Metadata blocks (bitmaps, inode tables,
indirect blocks, directory blocks) go through a bounded write-back cache; file data is
read and written with pread/pwrite, contiguous runs in one call (``write_blocks``).  The
group descriptors and the superblock are kept in memory and written by ``sync``.
Superblock backups (sparse_super) and the reserved GDT blocks (resize_inode) are never
touched.  Every public method holds one re-entrant lock, so threads may share a mount.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import random
import re
import struct
import threading
import time
from collections import OrderedDict

import structlog

from . import ondisk as D
from .ondisk import DirEntry, GroupDesc, Inode, Superblock

log = structlog.get_logger("ext2fs")

# What this implementation handles.  Incompat features outside both sets refuse the mount;
# ro_compat features outside SUPPORTED_RO_COMPAT make it read-only.
SUPPORTED_INCOMPAT = D.EXT2_FEATURE_INCOMPAT_FILETYPE
READONLY_INCOMPAT = D.EXT4_FEATURE_INCOMPAT_FLEX_BG  # layout only: readable, not written
SUPPORTED_RO_COMPAT = (D.EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER
                       | D.EXT2_FEATURE_RO_COMPAT_LARGE_FILE | 0x0004)  # btree_dir: unused

EXT2_XATTR_MAGIC = 0xEA020000
_NOT_FF = re.compile(rb"[^\xff]")
_U32 = struct.Struct("<I")
_DIRENT_HDR = struct.Struct("<IHB")


class Ext2Error(OSError):
    """An ext2 operation failed; ``errno`` is what the Hurd's ext2fs would return."""

    def __init__(self, err: int, msg: str):
        super().__init__(err, msg)


class Ext2UnsupportedFeature(Ext2Error):
    """The image uses incompat features this implementation does not handle
    (``features`` lists their names)."""

    def __init__(self, features: list[str]):
        self.features = features
        super().__init__(errno.EOPNOTSUPP,
                         "unsupported ext2 incompat features: " + ", ".join(features))


def _locked(fn):
    @functools.wraps(fn)
    def wrapper(self, *a, **kw):
        with self.lock:
            return fn(self, *a, **kw)
    return wrapper


def _lowest_zero(b: int) -> int:
    return ((~b) & (b + 1)).bit_length() - 1


def _find_zero(bm, start: int, nbits: int) -> int:
    """Index of the first clear bit in ``bm`` at or after ``start`` and below ``nbits``."""
    if start >= nbits:
        return -1
    byte = start >> 3
    b = bm[byte] | ((1 << (start & 7)) - 1)
    if b != 0xFF:
        bit = (byte << 3) + _lowest_zero(b)
        return bit if bit < nbits else -1
    m = _NOT_FF.search(bm, byte + 1, (nbits + 7) >> 3)
    if m is None:
        return -1
    pos = m.start()
    bit = (pos << 3) + _lowest_zero(bm[pos])
    return bit if bit < nbits else -1


def _name(name) -> bytes:
    if isinstance(name, str):
        name = name.encode("utf-8", "surrogateescape")
    if not name or b"/" in name or b"\0" in name:
        raise Ext2Error(errno.EINVAL, f"invalid name {name!r}")
    if len(name) > D.EXT2_NAME_LEN:
        raise Ext2Error(errno.ENAMETOOLONG, f"name too long ({len(name)} bytes)")
    return name


class Ext2:
    """A mounted ext2 image (ext2fs/hyper.c get_hypermetadata + the diskfs node ops).

    Inode objects returned by ``read_inode`` are copies: change one, then ``write_inode``.
    Names may be ``str`` (UTF-8) or ``bytes``."""

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

    # ---- mount / unmount -------------------------------------------------------------

    def _mount(self, cache_blocks: int) -> None:
        raw = os.pread(self.fd, D.SUPERBLOCK_SIZE, D.SUPERBLOCK_OFFSET)
        if len(raw) < D.SUPERBLOCK_SIZE:
            raise Ext2Error(errno.EINVAL, f"{self.path}: too small for an ext2 superblock")
        sb = self.sb = Superblock.parse(raw)
        if sb.s_magic != D.EXT2_SUPER_MAGIC:
            raise Ext2Error(errno.EINVAL, f"{self.path}: bad magic {sb.s_magic:#x}: not ext2")
        if sb.s_rev_level > D.EXT2_DYNAMIC_REV:
            raise Ext2Error(errno.EINVAL, f"unsupported revision {sb.s_rev_level}")
        if sb.s_log_block_size > 2:
            raise Ext2Error(errno.EINVAL, f"unsupported block size {sb.block_size} "
                            "(1024, 2048 or 4096 only)")
        if sb.s_rev_level == D.EXT2_DYNAMIC_REV:
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
        raw = os.pread(self.fd, self.gdt_blocks * bs, self.gdt_block * bs)
        self.gd = [GroupDesc.parse(raw, i * D.GROUP_DESC_SIZE) for i in range(self.ngroups)]
        self._gd_dirty = False
        self._cache: OrderedDict[int, bytearray] = OrderedDict()
        self._dirty: set[int] = set()
        self.cache_blocks = max(64, cache_blocks)
        self._mount_state = sb.s_state
        self.stats = {"meta_reads": 0, "meta_writes": 0, "data_reads": 0,
                      "data_writes": 0, "data_blocks_written": 0}
        if not self.read_only:
            # Linux ext2_setup_super: the fs is "not clean" while mounted read-write.
            sb.s_state &= ~D.EXT2_VALID_FS
            sb.s_mnt_count = (sb.s_mnt_count + 1) & 0xFFFF
            sb.s_mtime = int(self.clock())
            self._write_super()

    @_locked
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
        if self.read_only:
            raise Ext2Error(errno.EROFS, "file system is read-only"
                            + (f" ({', '.join(self.ro_reasons)})" if self.ro_reasons else ""))

    # ---- blocks and the metadata cache -----------------------------------------------

    def read_block(self, n: int) -> bytes:
        """Read one block (from the cache if it holds it)."""
        buf = self._cache.get(n)
        if buf is not None:
            return bytes(buf)
        self.stats["data_reads"] += 1
        return os.pread(self.fd, self.block_size, n * self.block_size)

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
        buf = self._cache.get(n)
        if buf is not None:
            self._cache.move_to_end(n)
            return buf
        if not 0 <= n < self.sb.s_blocks_count:
            raise Ext2Error(errno.EIO, f"metadata block {n} out of range")
        buf = bytearray(os.pread(self.fd, self.block_size, n * self.block_size))
        self.stats["meta_reads"] += 1
        self._cache_put(n, buf)
        return buf

    def _meta_new(self, n: int) -> bytearray:
        buf = bytearray(self.block_size)
        self._cache_put(n, buf)
        self._dirty.add(n)
        return buf

    def _mark_dirty(self, n: int, buf: bytearray) -> None:
        if self._cache.get(n) is not buf:
            self._cache_put(n, buf)
        self._dirty.add(n)

    def _cache_put(self, n: int, buf: bytearray) -> None:
        self._cache[n] = buf
        self._cache.move_to_end(n)
        while len(self._cache) > self.cache_blocks:
            old, obuf = self._cache.popitem(last=False)
            if old in self._dirty:
                self._dirty.discard(old)
                os.pwrite(self.fd, obuf, old * self.block_size)
                self.stats["meta_writes"] += 1

    def _forget(self, n: int) -> None:
        self._cache.pop(n, None)
        self._dirty.discard(n)

    def _write_super(self) -> None:
        self.sb.s_wtime = int(self.clock())
        os.pwrite(self.fd, self.sb.pack(), D.SUPERBLOCK_OFFSET)

    @_locked
    def sync(self, wait: bool = True) -> None:
        """Write back dirty metadata blocks, the group descriptors and the superblock
        (diskfs_set_hypermetadata + sync_global); fsync the image when ``wait``."""
        if self.read_only or self.fd < 0:
            return
        for n in sorted(self._dirty):
            os.pwrite(self.fd, self._cache[n], n * self.block_size)
            self.stats["meta_writes"] += 1
        self._dirty.clear()
        if self._gd_dirty:
            raw = b"".join(g.pack() for g in self.gd)
            raw += bytes(self.gdt_blocks * self.block_size - len(raw))
            os.pwrite(self.fd, raw, self.gdt_block * self.block_size)
            self._gd_dirty = False
        self._write_super()
        if wait:
            os.fsync(self.fd)

    flush = sync

    # ---- geometry --------------------------------------------------------------------

    def _group_blocks(self, g: int) -> int:
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

    # ---- block and inode allocation (balloc.c, ialloc.c) -----------------------------

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
            bit = _find_zero(bm, start, nbits)
            if bit < 0 and start:
                bit = _find_zero(bm, 0, nbits)
            if bit < 0:
                continue
            bm[bit >> 3] |= 1 << (bit & 7)
            self._mark_dirty(gd.bg_block_bitmap, bm)
            gd.bg_free_blocks_count -= 1
            sb.s_free_blocks_count -= 1
            self._gd_dirty = True
            return self._group_start(g) + bit
        raise Ext2Error(errno.ENOSPC, "no free blocks")

    def free_block(self, b: int) -> None:
        """ext2_free_blocks for one block."""
        self._check_rw()
        if not self.sb.s_first_data_block <= b < self.sb.s_blocks_count:
            raise Ext2Error(errno.EIO, f"freeing block {b} out of range")
        g = self._block_group(b)
        gd = self.gd[g]
        bit = b - self._group_start(g)
        bm = self._meta(gd.bg_block_bitmap)
        mask = 1 << (bit & 7)
        if not bm[bit >> 3] & mask:
            raise Ext2Error(errno.EIO, f"freeing block {b}, already free")
        bm[bit >> 3] &= ~mask
        self._mark_dirty(gd.bg_block_bitmap, bm)
        gd.bg_free_blocks_count += 1
        self.sb.s_free_blocks_count += 1
        self._gd_dirty = True
        self._forget(b)

    def _find_inode_group(self, parent_group: int, is_dir: bool) -> int:
        gds = self.gd
        if is_dir:
            # find_group_dir: a group with at least average free inodes, most free blocks.
            avg = self.sb.s_free_inodes_count // self.ngroups
            best = -1
            for g, gd in enumerate(gds):
                if gd.bg_free_inodes_count and gd.bg_free_inodes_count >= avg:
                    if best < 0 or gd.bg_free_blocks_count > gds[best].bg_free_blocks_count:
                        best = g
            if best >= 0:
                return best
        for i in range(self.ngroups):
            g = (parent_group + i) % self.ngroups
            if gds[g].bg_free_inodes_count:
                return g
        raise Ext2Error(errno.ENOSPC, "no free inodes")

    def alloc_inode(self, parent_ino: int = D.EXT2_ROOT_INO, is_dir: bool = False) -> int:
        """ext2_new_inode (the bitmap part): allocate an inode number near the parent's
        group (directories spread out); the inode itself is not initialised."""
        self._check_rw()
        ipg = self.sb.s_inodes_per_group
        g0 = self._find_inode_group(self._ino_group(parent_ino), is_dir)
        for i in range(self.ngroups):
            g = (g0 + i) % self.ngroups
            gd = self.gd[g]
            if not gd.bg_free_inodes_count:
                continue
            bm = self._meta(gd.bg_inode_bitmap)
            start = max(0, self.first_ino - 1 - g * ipg)
            bit = _find_zero(bm, start, ipg)
            if bit < 0:
                continue
            bm[bit >> 3] |= 1 << (bit & 7)
            self._mark_dirty(gd.bg_inode_bitmap, bm)
            gd.bg_free_inodes_count -= 1
            self.sb.s_free_inodes_count -= 1
            if is_dir:
                gd.bg_used_dirs_count += 1
            self._gd_dirty = True
            return g * ipg + bit + 1
        raise Ext2Error(errno.ENOSPC, "no free inodes")

    def free_inode(self, ino: int, is_dir: bool = False) -> None:
        """ext2_free_inode (the bitmap part)."""
        self._check_rw()
        g = self._ino_group(ino)
        gd = self.gd[g]
        bit = (ino - 1) % self.sb.s_inodes_per_group
        bm = self._meta(gd.bg_inode_bitmap)
        mask = 1 << (bit & 7)
        if not bm[bit >> 3] & mask:
            raise Ext2Error(errno.EIO, f"freeing inode {ino}, already free")
        bm[bit >> 3] &= ~mask
        self._mark_dirty(gd.bg_inode_bitmap, bm)
        gd.bg_free_inodes_count += 1
        self.sb.s_free_inodes_count += 1
        if is_dir:
            gd.bg_used_dirs_count -= 1
        self._gd_dirty = True

    # ---- inodes ----------------------------------------------------------------------

    def _inode_loc(self, ino: int) -> tuple[int, int]:
        if not 1 <= ino <= self.sb.s_inodes_count:
            raise Ext2Error(errno.EINVAL, f"bad inode number {ino}")
        g, idx = divmod(ino - 1, self.sb.s_inodes_per_group)
        off = idx * self.inode_size
        return (self.gd[g].bg_inode_table + off // self.block_size,
                off % self.block_size)

    @_locked
    def read_inode(self, ino: int) -> Inode:
        """ext2fs read_node: the on-disk inode ``ino`` (a copy)."""
        blk, off = self._inode_loc(ino)
        return Inode.parse(self._meta(blk), off, self.inode_size, ino=ino)

    @_locked
    def write_inode(self, inode: Inode) -> None:
        """ext2fs write_node: store ``inode`` (its ``ino``) in the inode table."""
        self._check_rw()
        blk, off = self._inode_loc(inode.ino)
        buf = self._meta(blk)
        raw = inode.pack()
        buf[off:off + len(raw)] = raw
        self._mark_dirty(blk, buf)

    def _new_inode(self, ino: int, mode: int, uid: int, gid: int) -> Inode:
        now = int(self.clock())
        inode = Inode(_tail=bytes(self.inode_size - D.EXT2_GOOD_OLD_INODE_SIZE))
        inode.ino = ino
        inode.i_mode = mode
        inode.i_uid, inode.l_i_uid_high = uid & 0xFFFF, (uid >> 16) & 0xFFFF
        inode.i_gid, inode.l_i_gid_high = gid & 0xFFFF, (gid >> 16) & 0xFFFF
        inode.i_atime = inode.i_ctime = inode.i_mtime = now
        inode.i_generation = random.getrandbits(32)
        if self.inode_size >= 160:
            inode.i_extra_isize = 32
            t = bytearray(inode._tail)
            t[16:20] = _U32.pack(now)  # i_crtime
            inode._tail = bytes(t)
        return inode

    def _has_data_blocks(self, inode: Inode) -> bool:
        if inode.is_reg() or inode.is_dir():
            return True
        if inode.is_symlink():
            return not self._fast_symlink(inode)
        return False

    def _fast_symlink(self, inode: Inode) -> bool:
        ea = self.block_size >> 9 if inode.i_file_acl else 0
        return inode.i_blocks - ea == 0

    # ---- block map (getblk.c ext2_getblk / ext2_bmap) --------------------------------

    def _path(self, lblock: int) -> tuple[int, list[int]]:
        p = self.ptrs
        if lblock < D.EXT2_NDIR_BLOCKS:
            return lblock, []
        lb = lblock - D.EXT2_NDIR_BLOCKS
        if lb < p:
            return D.EXT2_IND_BLOCK, [lb]
        lb -= p
        if lb < p * p:
            return D.EXT2_DIND_BLOCK, [lb // p, lb % p]
        lb -= p * p
        if lb < p * p * p:
            return D.EXT2_TIND_BLOCK, [lb // (p * p), (lb // p) % p, lb % p]
        raise Ext2Error(errno.EFBIG, f"block {lblock} beyond the triple indirect block")

    def _bmap(self, inode: Inode, lblock: int, create: bool = False, goal: int = 0,
              meta_leaf: bool = False) -> tuple[int, bool]:
        """(physical block, newly allocated?).  New indirect blocks are zeroed (in the
        cache); a new leaf is zeroed in the cache only when ``meta_leaf``."""
        slot, idx = self._path(lblock)
        b = inode.i_block[slot]
        per = self.block_size >> 9
        if not goal:
            goal = self._group_start(self._ino_group(inode.ino))
        if not b:
            if not create:
                return 0, False
            b = self.alloc_block(goal)
            goal = b + 1
            inode.i_block[slot] = b
            inode.i_blocks += per
            if idx or meta_leaf:
                self._meta_new(b)
            if not idx:
                return b, True
        new = False
        for depth, i in enumerate(idx):
            buf = self._meta(b)
            nb = _U32.unpack_from(buf, i * 4)[0]
            if not nb:
                if not create:
                    return 0, False
                nb = self.alloc_block(max(goal, b + 1))
                _U32.pack_into(buf, i * 4, nb)
                self._mark_dirty(b, buf)
                inode.i_blocks += per
                new = True
                if depth < len(idx) - 1 or meta_leaf:
                    self._meta_new(nb)
            b = nb
        return b, new

    def _bmap_span(self, inode: Inode, lblock: int) -> tuple[int, int]:
        """(physical block, 1) for a mapped block; (0, n) for a hole where the n blocks
        from ``lblock`` on are certainly holes (a whole missing indirect subtree)."""
        slot, idx = self._path(lblock)
        b = inode.i_block[slot]
        p = self.ptrs
        for depth in range(len(idx) + 1):
            if not b:
                rest = idx[depth:]
                off = 0
                for i in rest:
                    off = off * p + i
                return 0, p ** len(rest) - off
            if depth == len(idx):
                return b, 1
            b = _U32.unpack_from(self._meta(b), idx[depth] * 4)[0]
        return b, 1

    @_locked
    def bmap(self, inode: Inode, lblock: int, create: bool = False) -> int:
        """ext2_getblk / ext2fs's find_block: the physical block of file block ``lblock``
        through the direct, indirect, double and triple indirect blocks; 0 for a hole.
        With ``create`` a hole is filled (new data block zeroed on disk, indirect blocks
        allocated as needed) and ``inode`` is written back."""
        if not create:
            return self._bmap(inode, lblock)[0]
        self._check_rw()
        goal = 0
        if lblock:
            goal = self._bmap(inode, lblock - 1)[0]
            goal = goal + 1 if goal else 0
        b, new = self._bmap(inode, lblock, True, goal)
        if new:
            self.write_blocks(b, bytes(self.block_size))
            self.write_inode(inode)
        return b

    def max_file_size(self) -> int:
        p = self.ptrs
        nblocks = D.EXT2_NDIR_BLOCKS + p + p * p + p * p * p
        limit = nblocks * self.block_size
        if not self.sb.s_rev_level:
            limit = min(limit, 2**31 - 1)
        return min(limit, ((1 << 32) - 1) * 512 - 4 * p * self.block_size)

    # ---- file data -------------------------------------------------------------------

    def _as_inode(self, ino_or_inode) -> Inode:
        return ino_or_inode if isinstance(ino_or_inode, Inode) else self.read_inode(
            ino_or_inode)

    @_locked
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
        run_phys, run_n = -1, 0

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

    def _read_run(self, start: int, n: int) -> bytes:
        bs = self.block_size
        if any(b in self._cache for b in range(start, start + n)):
            return b"".join(self.read_block(b) for b in range(start, start + n))
        self.stats["data_reads"] += 1
        data = os.pread(self.fd, n * bs, start * bs)
        if len(data) < n * bs:
            raise Ext2Error(errno.EIO, f"short read at block {start}")
        return data

    def _zero_tail(self, inode: Inode, size: int) -> None:
        """Zero the bytes of the block holding EOF beyond ``size`` (block_truncate_page)."""
        bs = self.block_size
        if size % bs == 0:
            return
        pb = self._bmap(inode, size // bs)[0]
        if pb:
            data = bytearray(self.read_block(pb))
            if any(data[size % bs:]):
                data[size % bs:] = bytes(bs - size % bs)
                self.write_blocks(pb, data)

    @_locked
    def write(self, ino: int, offset: int, data) -> int:
        """io_write: write ``data`` at ``offset``, allocating blocks (and indirect blocks)
        for holes and growth; contiguous new blocks go out in one ``write_blocks``."""
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
        goal = 0
        if first:
            goal = self._bmap(inode, first - 1)[0]
            goal = goal + 1 if goal else 0
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
                if new:
                    buf = bytearray(bs)
                else:
                    buf = bytearray(self.read_block(pb))
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

    def _set_large_file(self) -> None:
        if not self.sb.s_feature_ro_compat & D.EXT2_FEATURE_RO_COMPAT_LARGE_FILE:
            self.sb.s_feature_ro_compat |= D.EXT2_FEATURE_RO_COMPAT_LARGE_FILE

    # ---- truncate (truncate.c) -------------------------------------------------------

    @_locked
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

    def _free_blocks_from(self, inode: Inode, keep: int) -> None:
        """Free every block of ``inode`` at file block ``keep`` and beyond."""
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

    def _release_inode(self, inode: Inode) -> None:
        """ext2_evict_inode: free the blocks, the xattr block and the inode of an inode
        whose link count reached 0; sets i_dtime."""
        is_dir = inode.is_dir()
        if self._has_data_blocks(inode):
            self._free_blocks_from(inode, 0)
        self._free_xattr_block(inode)
        inode.size = 0
        inode.i_links_count = 0
        inode.i_dtime = int(self.clock()) or 1
        self.write_inode(inode)
        self.free_inode(inode.ino, is_dir)

    def _free_xattr_block(self, inode: Inode) -> None:
        b = inode.i_file_acl
        if not b:
            return
        buf = self._meta(b)
        magic, refcount = struct.unpack_from("<II", buf, 0)
        if magic == EXT2_XATTR_MAGIC and refcount > 1:
            struct.pack_into("<I", buf, 4, refcount - 1)
            self._mark_dirty(b, buf)
        else:
            self.free_block(b)
        inode.i_file_acl = 0
        inode.i_blocks -= self.block_size >> 9

    @_locked
    def clear_inode(self, ino: int) -> None:
        """Release an inode left with no links by ``unlink(..., defer_free=True)`` (the
        diskfs_drop_node step, once the last user is gone)."""
        self._check_rw()
        inode = self.read_inode(ino)
        if inode.i_links_count:
            raise Ext2Error(errno.EBUSY, f"inode {ino} still has links")
        self._release_inode(inode)

    # ---- directories (dir.c) ---------------------------------------------------------

    def _dir_blocks(self, inode: Inode):
        bs = self.block_size
        for lb in range(inode.i_size // bs):
            pb = self._bmap(inode, lb)[0]
            if pb:
                yield lb, pb, self._meta(pb)

    def _entries(self, inode: Inode, pb: int, buf):
        bs = self.block_size
        off = 0
        while off < bs:
            e = DirEntry.parse(buf, off, self.filetype)
            if (e.rec_len < 8 or e.rec_len % 4 or off + e.rec_len > bs
                    or e.name_len + 8 > e.rec_len):
                raise Ext2Error(errno.EIO, f"corrupt directory inode {inode.ino} "
                                f"block {pb} offset {off}")
            yield e
            off += e.rec_len

    def _dir_inode(self, ino) -> Inode:
        inode = self._as_inode(ino)
        if not inode.is_dir():
            raise Ext2Error(errno.ENOTDIR, f"inode {inode.ino} is not a directory")
        return inode

    @_locked
    def readdir(self, ino) -> list[DirEntry]:
        """dir_readdir: the live entries (inode != 0) of a linear directory, in order;
        an htree (dir_index) directory reads the same way."""
        inode = self._dir_inode(ino)
        out = []
        for _lb, pb, buf in self._dir_blocks(inode):
            out.extend(e for e in self._entries(inode, pb, buf) if e.inode)
        return out

    def listdir(self, ino) -> list[str]:
        """Names in a directory, without . and .."""
        return [e.name.decode("utf-8", "surrogateescape") for e in self.readdir(ino)
                if e.name not in (b".", b"..")]

    def _find(self, inode: Inode, name: bytes):
        for _lb, pb, buf in self._dir_blocks(inode):
            if buf.find(name) < 0:  # cheap rejection of most blocks
                continue
            for e in self._entries(inode, pb, buf):
                if e.inode and e.name == name:
                    return pb, buf, e
        return None

    @_locked
    def lookup(self, dir_ino, name) -> int:
        """dir_lookup of one component: the inode number, or Ext2Error(ENOENT)."""
        inode = self._dir_inode(dir_ino)
        nm = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name
        hit = self._find(inode, nm)
        if hit is None:
            raise Ext2Error(errno.ENOENT, f"{nm!r} not found in inode {inode.ino}")
        return hit[2].inode

    @_locked
    def namei(self, path, follow: bool = True, _depth: int = 0, cwd: int = D.EXT2_ROOT_INO
              ) -> int:
        """Resolve a path (from the root, or ``cwd`` for a relative one) to an inode
        number; symbolic links are followed (the last one only when ``follow``)."""
        if isinstance(path, str):
            path = path.encode("utf-8", "surrogateescape")
        if _depth > 8:
            raise Ext2Error(errno.ELOOP, "too many symbolic links")
        ino = D.EXT2_ROOT_INO if path.startswith(b"/") else cwd
        parts = [p for p in path.split(b"/") if p]
        for i, part in enumerate(parts):
            parent = ino
            ino = self.lookup(ino, part)
            last = i == len(parts) - 1
            if (follow or not last):
                inode = self.read_inode(ino)
                if inode.is_symlink():
                    ino = self.namei(self.readlink(ino), True, _depth + 1, parent)
        return ino

    def _dir_modified(self, inode: Inode) -> None:
        # No htree maintenance: drop the index as Linux does when it cannot keep it.
        inode.i_flags &= ~D.EXT2_INDEX_FL
        inode.i_mtime = inode.i_ctime = int(self.clock())

    def _ft(self, mode: int) -> int:
        return D.mode_to_file_type(mode) if self.filetype else 0

    def _add_entry(self, dinode: Inode, name: bytes, ino: int, ft: int) -> None:
        """ext2_add_link: put an entry in the first gap big enough, else a new block."""
        need = DirEntry.min_rec_len(len(name))
        self._dir_modified(dinode)
        hdr = _DIRENT_HDR
        bs = self.block_size
        for _lb, pb, buf in self._dir_blocks(dinode):
            # Header-only scan for room first (fast); parse entries only where it is.
            off = 0
            room = False
            while off < bs:
                e_ino, rec_len, name_len = hdr.unpack_from(buf, off)
                if not self.filetype:
                    name_len = buf[off + 6] | (buf[off + 7] << 8)
                if rec_len < 8 or off + rec_len > bs:
                    break
                if rec_len - (0 if e_ino == 0 else (8 + name_len + 3) & ~3) >= need:
                    room = True
                    break
                off += rec_len
            if not room:
                continue
            for e in self._entries(dinode, pb, buf):
                if e.inode == 0 and e.rec_len >= need:
                    new = DirEntry(ino, name, ft, e.rec_len)
                    buf[e.offset:e.offset + e.rec_len] = new.pack(self.filetype)
                    self._mark_dirty(pb, buf)
                    self.write_inode(dinode)
                    return
                if e.inode and e.rec_len - e.actual_len >= need:
                    struct.pack_into("<H", buf, e.offset + 4, e.actual_len)
                    off = e.offset + e.actual_len
                    new = DirEntry(ino, name, ft, e.rec_len - e.actual_len)
                    buf[off:off + new.rec_len] = new.pack(self.filetype)
                    self._mark_dirty(pb, buf)
                    self.write_inode(dinode)
                    return
        lb = dinode.i_size // bs
        goal = self._bmap(dinode, lb - 1)[0] + 1 if lb else 0
        try:
            pb, _ = self._bmap(dinode, lb, True, goal, meta_leaf=True)
        except Ext2Error:
            self._free_blocks_from(dinode, lb)  # an indirect block without its leaf
            self.write_inode(dinode)
            raise
        buf = self._meta(pb)
        buf[:] = DirEntry(ino, name, ft, bs).pack(self.filetype)
        self._mark_dirty(pb, buf)
        dinode.i_size += bs
        self.write_inode(dinode)

    def _remove_entry(self, dinode: Inode, name: bytes) -> DirEntry:
        """ext2_delete_entry: merge into the previous entry, or clear the inode number
        of an entry that starts a block."""
        for _lb, pb, buf in self._dir_blocks(dinode):
            prev = None
            for e in self._entries(dinode, pb, buf):
                if e.inode and e.name == name:
                    if prev is None:
                        _U32.pack_into(buf, e.offset, 0)
                    else:
                        struct.pack_into("<H", buf, prev.offset + 4, prev.rec_len + e.rec_len)
                    self._mark_dirty(pb, buf)
                    self._dir_modified(dinode)
                    self.write_inode(dinode)
                    return e
                prev = e
        raise Ext2Error(errno.ENOENT, f"{name!r} not found")

    def _set_entry(self, dinode: Inode, name: bytes, ino: int, ft: int) -> None:
        hit = self._find(dinode, name)
        if hit is None:
            raise Ext2Error(errno.ENOENT, f"{name!r} not found")
        pb, buf, e = hit
        _U32.pack_into(buf, e.offset, ino)
        if self.filetype:
            buf[e.offset + 7] = ft
        self._mark_dirty(pb, buf)
        self._dir_modified(dinode)
        self.write_inode(dinode)

    def _prepare_entry(self, dir_ino: int, name) -> tuple[Inode, bytes]:
        self._check_rw()
        dinode = self._dir_inode(dir_ino)
        nm = _name(name)
        if dinode.i_links_count == 0:
            raise Ext2Error(errno.ENOENT, "directory was removed")
        if self._find(dinode, nm) is not None:
            raise Ext2Error(errno.EEXIST, f"{nm!r} exists")
        return dinode, nm

    # ---- namespace operations ----------------------------------------------------------

    @_locked
    def mknod(self, dir_ino: int, name, mode: int, uid: int = 0, gid: int = 0,
              rdev: int = 0) -> int:
        """dir_mkfile / diskfs_create_node: a new inode of any non-directory type, linked
        under ``name``; returns its number.  ``rdev`` (os.makedev) for devices."""
        dinode, nm = self._prepare_entry(dir_ino, name)
        if mode & D.S_IFMT == 0:
            mode |= D.S_IFREG
        if mode & D.S_IFMT == D.S_IFDIR:
            raise Ext2Error(errno.EINVAL, "use mkdir for directories")
        ino = self.alloc_inode(dinode.ino, False)
        inode = self._new_inode(ino, mode, uid, gid)
        inode.i_links_count = 1
        if mode & D.S_IFMT in (D.S_IFCHR, D.S_IFBLK):
            major, minor = os.major(rdev), os.minor(rdev)
            if major < 256 and minor < 256:
                inode.i_block[0] = (major << 8) | minor
            else:
                inode.i_block[1] = (minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)
        self.write_inode(inode)
        with self._undo_alloc(ino):
            self._add_entry(dinode, nm, ino, self._ft(mode))
        return ino

    @contextlib.contextmanager
    def _undo_alloc(self, ino: int):
        """Release a just-allocated inode (and its blocks) if what follows fails."""
        try:
            yield
        except BaseException:
            inode = self.read_inode(ino)
            inode.i_links_count = 0
            self._release_inode(inode)
            raise

    def create(self, dir_ino: int, name, mode: int = 0o644, uid: int = 0,
               gid: int = 0) -> int:
        """A new empty regular file (permission bits ``mode``); returns its number."""
        return self.mknod(dir_ino, name, D.S_IFREG | (mode & 0o7777), uid, gid)

    @_locked
    def symlink(self, dir_ino: int, name, target, uid: int = 0, gid: int = 0) -> int:
        """A symbolic link; targets under 60 bytes live in i_block (fast symlinks)."""
        if isinstance(target, str):
            target = target.encode("utf-8", "surrogateescape")
        if not target or len(target) >= self.block_size:
            raise Ext2Error(errno.ENAMETOOLONG, "bad symlink target length")
        dinode, nm = self._prepare_entry(dir_ino, name)
        ino = self.alloc_inode(dinode.ino, False)
        inode = self._new_inode(ino, D.S_IFLNK | 0o777, uid, gid)
        inode.i_links_count = 1
        with self._undo_alloc(ino):
            if len(target) < 60:
                inode.i_block = list(struct.unpack("<15I", target.ljust(60, b"\0")))
                inode.i_size = len(target)
                self.write_inode(inode)
            else:
                self.write_inode(inode)
                pb, _ = self._bmap(inode, 0, True)
                self.write_blocks(pb, target.ljust(self.block_size, b"\0"))
                inode.i_size = len(target)
                self.write_inode(inode)
            self._add_entry(dinode, nm, ino, D.EXT2_FT_SYMLINK if self.filetype else 0)
        return ino

    @_locked
    def readlink(self, ino: int) -> bytes:
        """The target of a symbolic link."""
        inode = self.read_inode(ino)
        if not inode.is_symlink():
            raise Ext2Error(errno.EINVAL, f"inode {ino} is not a symlink")
        if self._fast_symlink(inode):
            return struct.pack("<15I", *inode.i_block)[:inode.i_size]
        return self.read(inode, 0, inode.i_size)

    @_locked
    def mkdir(self, dir_ino: int, name, mode: int = 0o755, uid: int = 0,
              gid: int = 0) -> int:
        """dir_mkdir: a directory with . and .., the parent's link count raised."""
        dinode, nm = self._prepare_entry(dir_ino, name)
        if dinode.i_links_count >= D.EXT2_LINK_MAX:
            raise Ext2Error(errno.EMLINK, "too many links")
        ino = self.alloc_inode(dinode.ino, True)
        with self._undo_alloc(ino):
            inode = self._new_inode(ino, D.S_IFDIR | (mode & 0o7777), uid, gid)
            self.write_inode(inode)  # a valid inode to release should _init_dir fail
            self._init_dir(ino, dinode.ino, mode, uid, gid)
            self._add_entry(dinode, nm, ino, self._ft(D.S_IFDIR))
        dinode.i_links_count += 1
        self.write_inode(dinode)
        return ino

    def _init_dir(self, ino: int, parent: int, mode: int, uid: int, gid: int) -> Inode:
        inode = self._new_inode(ino, D.S_IFDIR | (mode & 0o7777), uid, gid)
        inode.i_links_count = 2
        bs = self.block_size
        pb, _ = self._bmap(inode, 0, True, self._group_start(self._ino_group(ino)),
                           meta_leaf=True)
        buf = self._meta(pb)
        dot = DirEntry(ino, b".", self._ft(D.S_IFDIR), 12).pack(self.filetype)
        dotdot = DirEntry(parent, b"..", self._ft(D.S_IFDIR), bs - 12).pack(self.filetype)
        buf[:] = dot + dotdot
        self._mark_dirty(pb, buf)
        inode.i_size = bs
        self.write_inode(inode)
        return inode

    @_locked
    def link(self, dir_ino: int, name, ino: int) -> None:
        """dir_link: another name for a non-directory."""
        dinode, nm = self._prepare_entry(dir_ino, name)
        inode = self.read_inode(ino)
        if inode.is_dir():
            raise Ext2Error(errno.EPERM, "hard link to a directory")
        if inode.i_links_count >= D.EXT2_LINK_MAX:
            raise Ext2Error(errno.EMLINK, "too many links")
        inode.i_links_count += 1
        inode.i_ctime = int(self.clock())
        self.write_inode(inode)
        self._add_entry(dinode, nm, ino, self._ft(inode.i_mode))

    @_locked
    def unlink(self, dir_ino: int, name, defer_free: bool = False) -> int:
        """dir_unlink: remove a non-directory entry and drop a link; an inode left with
        no links is released now, or by ``clear_inode`` later when ``defer_free``.
        Returns the inode number."""
        self._check_rw()
        dinode = self._dir_inode(dir_ino)
        nm = _name(name)
        hit = self._find(dinode, nm)
        if hit is None:
            raise Ext2Error(errno.ENOENT, f"{nm!r} not found")
        inode = self.read_inode(hit[2].inode)
        if inode.is_dir():
            raise Ext2Error(errno.EISDIR, f"{nm!r} is a directory")
        self._remove_entry(dinode, nm)
        inode.i_links_count -= 1
        inode.i_ctime = int(self.clock())
        if inode.i_links_count == 0 and not defer_free:
            self._release_inode(inode)
        else:
            self.write_inode(inode)
        return inode.ino

    def _dir_is_empty(self, inode: Inode) -> bool:
        return all(e.name in (b".", b"..") for e in self.readdir(inode))

    @_locked
    def rmdir(self, dir_ino: int, name) -> None:
        """dir_rmdir: remove an empty directory; the parent loses the '..' link."""
        self._check_rw()
        dinode = self._dir_inode(dir_ino)
        nm = _name(name)
        if nm in (b".", b".."):
            raise Ext2Error(errno.EINVAL, "cannot remove . or ..")
        hit = self._find(dinode, nm)
        if hit is None:
            raise Ext2Error(errno.ENOENT, f"{nm!r} not found")
        inode = self.read_inode(hit[2].inode)
        if not inode.is_dir():
            raise Ext2Error(errno.ENOTDIR, f"{nm!r} is not a directory")
        if not self._dir_is_empty(inode):
            raise Ext2Error(errno.ENOTEMPTY, f"{nm!r} is not empty")
        self._remove_entry(dinode, nm)
        dinode.i_links_count -= 1
        self.write_inode(dinode)
        self._release_inode(inode)

    @_locked
    def rename(self, old_dir: int, old_name, new_dir: int, new_name) -> None:
        """dir_rename: move an entry, replacing a non-directory (or an empty directory
        for a directory) at the target; a moved directory's '..' follows."""
        self._check_rw()
        onm, nnm = _name(old_name), _name(new_name)
        src_ino = self.lookup(old_dir, onm)
        src = self.read_inode(src_ino)
        self._dir_inode(new_dir)
        if src.is_dir():
            # No directory may move under itself.
            d = new_dir
            while True:
                if d == src_ino:
                    raise Ext2Error(errno.EINVAL, "cannot move a directory into itself")
                if d == D.EXT2_ROOT_INO:
                    break
                d = self.lookup(d, b"..")
        tgt = self._find(self._dir_inode(new_dir), nnm)
        if tgt is not None:
            if tgt[2].inode == src_ino:
                return
            t = self.read_inode(tgt[2].inode)
            if src.is_dir():
                if not t.is_dir():
                    raise Ext2Error(errno.ENOTDIR, f"{nnm!r} is not a directory")
                self.rmdir(new_dir, nnm)
            else:
                if t.is_dir():
                    raise Ext2Error(errno.EISDIR, f"{nnm!r} is a directory")
                self.unlink(new_dir, nnm)
        ndinode = self._dir_inode(new_dir)
        if src.is_dir() and old_dir != new_dir and ndinode.i_links_count >= D.EXT2_LINK_MAX:
            raise Ext2Error(errno.EMLINK, "too many links")
        self._add_entry(ndinode, nnm, src_ino, self._ft(src.i_mode))
        self._remove_entry(self._dir_inode(old_dir), onm)
        if src.is_dir() and old_dir != new_dir:
            self._set_entry(self._dir_inode(src_ino), b"..", new_dir,
                            self._ft(D.S_IFDIR))
            od = self.read_inode(old_dir)
            od.i_links_count -= 1
            self.write_inode(od)
            nd = self.read_inode(new_dir)
            nd.i_links_count += 1
            self.write_inode(nd)
        src = self.read_inode(src_ino)
        src.i_ctime = int(self.clock())
        self.write_inode(src)

    # ---- attributes --------------------------------------------------------------------

    @_locked
    def stat(self, ino: int) -> dict:
        """io_stat: the inode's attributes, st_* names."""
        inode = self.read_inode(ino)
        rdev = 0
        if inode.file_type in (D.S_IFCHR, D.S_IFBLK):
            if inode.i_block[0]:
                rdev = os.makedev(inode.i_block[0] >> 8, inode.i_block[0] & 0xFF)
            else:
                v = inode.i_block[1]
                rdev = os.makedev((v & 0xFFF00) >> 8, (v & 0xFF) | ((v >> 12) & 0xFFF00))
        return {
            "st_ino": ino, "st_mode": inode.i_mode, "st_nlink": inode.i_links_count,
            "st_uid": inode.uid, "st_gid": inode.gid, "st_size": inode.size,
            "st_blocks": inode.i_blocks, "st_blksize": self.block_size,
            "st_atime": inode.i_atime, "st_mtime": inode.i_mtime,
            "st_ctime": inode.i_ctime, "st_rdev": rdev, "st_gen": inode.i_generation,
            "st_flags": inode.i_flags,
        }

    @_locked
    def chmod(self, ino: int, mode: int) -> None:
        """file_chmod: set the permission bits."""
        self._check_rw()
        inode = self.read_inode(ino)
        inode.i_mode = (inode.i_mode & D.S_IFMT) | (mode & 0o7777)
        inode.i_ctime = int(self.clock())
        self.write_inode(inode)

    @_locked
    def utimes(self, ino: int, atime: int | None = None, mtime: int | None = None) -> None:
        """file_utimes."""
        self._check_rw()
        inode = self.read_inode(ino)
        if atime is not None:
            inode.i_atime = int(atime)
        if mtime is not None:
            inode.i_mtime = int(mtime)
        inode.i_ctime = int(self.clock())
        self.write_inode(inode)

    @_locked
    def statfs(self) -> dict:
        """fsys_statfs: block and inode totals (f_* names)."""
        sb = self.sb
        return {
            "f_bsize": self.block_size, "f_blocks": sb.s_blocks_count,
            "f_bfree": sb.s_free_blocks_count,
            "f_bavail": max(0, sb.s_free_blocks_count - sb.s_r_blocks_count),
            "f_files": sb.s_inodes_count, "f_ffree": sb.s_free_inodes_count,
            "f_namemax": D.EXT2_NAME_LEN,
        }
