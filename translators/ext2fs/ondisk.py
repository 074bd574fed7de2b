"""The ext2 on-disk format (revision 0 and 1): superblock, group descriptors, inodes and
directory entries, parsed and packed with ``struct``.

Field names are those of ``struct ext2_super_block``, ``struct ext2_group_desc``,
``struct ext2_inode`` and ``struct ext2_dir_entry_2`` in Linux's ``fs/ext2/ext2.h`` and the
Hurd's ``ext2fs/ext2_fs.h``.  Every structure keeps the bytes it does not name (the
superblock's tail, an inode's extra space), so ``pack(parse(b)) == b`` for any input.
"""

from __future__ import annotations

import struct

EXT2_SUPER_MAGIC = 0xEF53
SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_SIZE = 1024
EXT2_GOOD_OLD_REV = 0
EXT2_DYNAMIC_REV = 1
EXT2_GOOD_OLD_INODE_SIZE = 128
EXT2_GOOD_OLD_FIRST_INO = 11
EXT2_NDIR_BLOCKS = 12
EXT2_IND_BLOCK = 12
EXT2_DIND_BLOCK = 13
EXT2_TIND_BLOCK = 14
EXT2_N_BLOCKS = 15
EXT2_NAME_LEN = 255
EXT2_LINK_MAX = 32000
GROUP_DESC_SIZE = 32

# Special inode numbers.
EXT2_BAD_INO = 1
EXT2_ROOT_INO = 2
EXT2_RESIZE_INO = 7
EXT2_JOURNAL_INO = 8

# s_state
EXT2_VALID_FS = 0x0001
EXT2_ERROR_FS = 0x0002

# s_creator_os
EXT2_OS_LINUX = 0
EXT2_OS_HURD = 1

# i_flags
EXT2_INDEX_FL = 0x00001000  # htree-indexed directory (dir_index)
EXT4_EXTENTS_FL = 0x00080000
EXT4_INLINE_DATA_FL = 0x10000000
EXT4_HUGE_FILE_FL = 0x00040000

# i_mode
S_IFMT = 0o170000
S_IFSOCK = 0o140000
S_IFLNK = 0o120000
S_IFREG = 0o100000
S_IFBLK = 0o060000
S_IFDIR = 0o040000
S_IFCHR = 0o020000
S_IFIFO = 0o010000

# ext2_dir_entry_2.file_type
EXT2_FT_UNKNOWN = 0
EXT2_FT_REG_FILE = 1
EXT2_FT_DIR = 2
EXT2_FT_CHRDEV = 3
EXT2_FT_BLKDEV = 4
EXT2_FT_FIFO = 5
EXT2_FT_SOCK = 6
EXT2_FT_SYMLINK = 7

_MODE_TO_FT = {
    S_IFREG: EXT2_FT_REG_FILE, S_IFDIR: EXT2_FT_DIR, S_IFCHR: EXT2_FT_CHRDEV,
    S_IFBLK: EXT2_FT_BLKDEV, S_IFIFO: EXT2_FT_FIFO, S_IFSOCK: EXT2_FT_SOCK,
    S_IFLNK: EXT2_FT_SYMLINK,
}


def mode_to_file_type(mode: int) -> int:
    """ext2_set_de_type: the directory-entry file type for an inode mode."""
    return _MODE_TO_FT.get(mode & S_IFMT, EXT2_FT_UNKNOWN)


# Feature flags (s_feature_compat / s_feature_incompat / s_feature_ro_compat).
COMPAT = {
    0x0001: "dir_prealloc", 0x0002: "imagic_inodes", 0x0004: "has_journal",
    0x0008: "ext_attr", 0x0010: "resize_inode", 0x0020: "dir_index",
    0x0040: "lazy_bg", 0x0080: "exclude_inode", 0x0100: "exclude_bitmap",
    0x0200: "sparse_super2", 0x0400: "fast_commit", 0x0800: "stable_inodes",
    0x1000: "orphan_file",
}
INCOMPAT = {
    0x0001: "compression", 0x0002: "filetype", 0x0004: "needs_recovery",
    0x0008: "journal_dev", 0x0010: "meta_bg", 0x0040: "extent", 0x0080: "64bit",
    0x0100: "mmp", 0x0200: "flex_bg", 0x0400: "ea_inode", 0x1000: "dirdata",
    0x2000: "metadata_csum_seed", 0x4000: "large_dir", 0x8000: "inline_data",
    0x10000: "encrypt", 0x20000: "casefold",
}
RO_COMPAT = {
    0x0001: "sparse_super", 0x0002: "large_file", 0x0004: "btree_dir",
    0x0008: "huge_file", 0x0010: "uninit_bg", 0x0020: "dir_nlink",
    0x0040: "extra_isize", 0x0080: "snapshot", 0x0100: "quota", 0x0200: "bigalloc",
    0x0400: "metadata_csum", 0x0800: "replica", 0x1000: "read-only",
    0x2000: "project", 0x4000: "shared_blocks", 0x8000: "verity",
    0x10000: "orphan_present",
}

EXT2_FEATURE_COMPAT_EXT_ATTR = 0x0008
EXT2_FEATURE_COMPAT_RESIZE_INODE = 0x0010
EXT2_FEATURE_COMPAT_DIR_INDEX = 0x0020
EXT2_FEATURE_INCOMPAT_FILETYPE = 0x0002
EXT3_FEATURE_INCOMPAT_RECOVER = 0x0004
EXT4_FEATURE_INCOMPAT_FLEX_BG = 0x0200
EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER = 0x0001
EXT2_FEATURE_RO_COMPAT_LARGE_FILE = 0x0002


def feature_names(mask: int, table: dict) -> list[str]:
    """Names of the bits set in ``mask`` (unknown bits as hex)."""
    out = []
    bit = 1
    while bit <= mask:
        if mask & bit:
            out.append(table.get(bit, f"unknown_{bit:#x}"))
        bit <<= 1
    return out


class _Struct:
    """A little-endian on-disk structure: ``FIELDS`` is a list of (name, struct code);
    a code with a count (``"15I"``) makes a list field, ``"16s"`` a bytes field.  Bytes
    beyond the named fields (up to ``SIZE`` or the parsed length) are kept in ``_tail``."""

    FIELDS: list[tuple[str, str]] = []
    SIZE = 0
    _fmt: struct.Struct
    _layout: list[tuple[str, int, bool]]

    def __init_subclass__(cls):
        super().__init_subclass__()
        cls._fmt = struct.Struct("<" + "".join(code for _, code in cls.FIELDS))
        layout = []
        for name, code in cls.FIELDS:
            n = int(code[:-1]) if code[:-1] else 1
            if code.endswith("s"):
                layout.append((name, 1, False))
            else:
                layout.append((name, n, n > 1))
        cls._layout = layout

    def __init__(self, **kw):
        for name, n, is_list in self._layout:
            default = [0] * n if is_list else 0
            if name in kw:
                default = kw.pop(name)
            elif dict(self.FIELDS)[name].endswith("s"):
                default = bytes(int(dict(self.FIELDS)[name][:-1]))
            setattr(self, name, default)
        self._tail = kw.pop("_tail", bytes(max(0, self.SIZE - self._fmt.size)))
        if kw:
            raise TypeError(f"unknown fields {sorted(kw)}")

    @classmethod
    def parse(cls, buf, offset: int = 0, size: int | None = None):
        """Decode from ``buf`` at ``offset``; ``size`` bytes (default ``SIZE``)."""
        size = cls.SIZE if size is None else size
        vals = cls._fmt.unpack_from(buf, offset)
        obj = cls.__new__(cls)
        i = 0
        for name, n, is_list in cls._layout:
            if is_list:
                setattr(obj, name, list(vals[i:i + n]))
                i += n
            else:
                setattr(obj, name, vals[i])
                i += 1
        obj._tail = bytes(buf[offset + cls._fmt.size:offset + size])
        return obj

    def pack(self) -> bytes:
        vals = []
        for name, _n, is_list in self._layout:
            v = getattr(self, name)
            if is_list:
                vals.extend(v)
            else:
                vals.append(v)
        return self._fmt.pack(*vals) + self._tail

    def __eq__(self, other):
        return type(self) is type(other) and self.pack() == other.pack()

    def __repr__(self):
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n, _, _ in self._layout[:6])
        return f"{type(self).__name__}({shown}, ...)"


class Superblock(_Struct):
    """struct ext2_super_block (1024 bytes at byte offset 1024 of the device)."""

    SIZE = SUPERBLOCK_SIZE
    FIELDS = [
        ("s_inodes_count", "I"), ("s_blocks_count", "I"), ("s_r_blocks_count", "I"),
        ("s_free_blocks_count", "I"), ("s_free_inodes_count", "I"),
        ("s_first_data_block", "I"), ("s_log_block_size", "I"), ("s_log_frag_size", "I"),
        ("s_blocks_per_group", "I"), ("s_frags_per_group", "I"),
        ("s_inodes_per_group", "I"), ("s_mtime", "I"), ("s_wtime", "I"),
        ("s_mnt_count", "H"), ("s_max_mnt_count", "h"), ("s_magic", "H"),
        ("s_state", "H"), ("s_errors", "H"), ("s_minor_rev_level", "H"),
        ("s_lastcheck", "I"), ("s_checkinterval", "I"), ("s_creator_os", "I"),
        ("s_rev_level", "I"), ("s_def_resuid", "H"), ("s_def_resgid", "H"),
        # EXT2_DYNAMIC_REV
        ("s_first_ino", "I"), ("s_inode_size", "H"), ("s_block_group_nr", "H"),
        ("s_feature_compat", "I"), ("s_feature_incompat", "I"),
        ("s_feature_ro_compat", "I"), ("s_uuid", "16s"), ("s_volume_name", "16s"),
        ("s_last_mounted", "64s"), ("s_algorithm_usage_bitmap", "I"),
        ("s_prealloc_blocks", "B"), ("s_prealloc_dir_blocks", "B"),
        ("s_reserved_gdt_blocks", "H"),
        ("s_journal_uuid", "16s"), ("s_journal_inum", "I"), ("s_journal_dev", "I"),
        ("s_last_orphan", "I"), ("s_hash_seed", "4I"), ("s_def_hash_version", "B"),
        ("s_jnl_backup_type", "B"), ("s_desc_size", "H"), ("s_default_mount_opts", "I"),
        ("s_first_meta_bg", "I"), ("s_mkfs_time", "I"), ("s_jnl_blocks", "17I"),
        ("s_blocks_count_hi", "I"), ("s_r_blocks_count_hi", "I"),
        ("s_free_blocks_hi", "I"), ("s_min_extra_isize", "H"),
        ("s_want_extra_isize", "H"), ("s_flags", "I"),
    ]

    @property
    def block_size(self) -> int:
        return 1024 << self.s_log_block_size

    @property
    def inode_size(self) -> int:
        return EXT2_GOOD_OLD_INODE_SIZE if self.s_rev_level == EXT2_GOOD_OLD_REV \
            else self.s_inode_size

    @property
    def first_ino(self) -> int:
        return EXT2_GOOD_OLD_FIRST_INO if self.s_rev_level == EXT2_GOOD_OLD_REV \
            else self.s_first_ino

    @property
    def group_count(self) -> int:
        n = self.s_blocks_count - self.s_first_data_block
        return (n + self.s_blocks_per_group - 1) // self.s_blocks_per_group

    def features(self) -> dict[str, list[str]]:
        return {
            "compat": feature_names(self.s_feature_compat, COMPAT),
            "incompat": feature_names(self.s_feature_incompat, INCOMPAT),
            "ro_compat": feature_names(self.s_feature_ro_compat, RO_COMPAT),
        }


class GroupDesc(_Struct):
    """struct ext2_group_desc (32 bytes)."""

    SIZE = GROUP_DESC_SIZE
    FIELDS = [
        ("bg_block_bitmap", "I"), ("bg_inode_bitmap", "I"), ("bg_inode_table", "I"),
        ("bg_free_blocks_count", "H"), ("bg_free_inodes_count", "H"),
        ("bg_used_dirs_count", "H"), ("bg_flags", "H"), ("bg_exclude_bitmap_lo", "I"),
        ("bg_block_bitmap_csum_lo", "H"), ("bg_inode_bitmap_csum_lo", "H"),
        ("bg_itable_unused", "H"), ("bg_checksum", "H"),
    ]


class Inode(_Struct):
    """struct ext2_inode (128 bytes; larger inodes keep i_extra_isize and the rest of
    their extra space).  ``ino`` (not on disk) is the inode number it was read from;
    osd2 is read with the Linux layout (l_i_blocks_hi, l_i_uid_high, ...)."""

    SIZE = EXT2_GOOD_OLD_INODE_SIZE
    FIELDS = [
        ("i_mode", "H"), ("i_uid", "H"), ("i_size", "I"), ("i_atime", "I"),
        ("i_ctime", "I"), ("i_mtime", "I"), ("i_dtime", "I"), ("i_gid", "H"),
        ("i_links_count", "H"), ("i_blocks", "I"), ("i_flags", "I"), ("l_i_version", "I"),
        ("i_block", "15I"), ("i_generation", "I"), ("i_file_acl", "I"),
        ("i_size_high", "I"),  # i_dir_acl in revision 0
        ("i_faddr", "I"),
        ("l_i_blocks_hi", "H"), ("l_i_file_acl_high", "H"), ("l_i_uid_high", "H"),
        ("l_i_gid_high", "H"), ("l_i_checksum_lo", "H"), ("l_i_reserved", "H"),
    ]
    ino = 0

    @classmethod
    def parse(cls, buf, offset: int = 0, size: int | None = None, ino: int = 0):
        obj = super().parse(buf, offset, size)
        obj.ino = ino
        return obj

    @property
    def i_extra_isize(self) -> int:
        return struct.unpack_from("<H", self._tail, 0)[0] if len(self._tail) >= 2 else 0

    @i_extra_isize.setter
    def i_extra_isize(self, v: int) -> None:
        if len(self._tail) >= 2:
            self._tail = struct.pack("<H", v) + self._tail[2:]

    @property
    def file_type(self) -> int:
        return self.i_mode & S_IFMT

    def is_dir(self) -> bool:
        return self.file_type == S_IFDIR

    def is_reg(self) -> bool:
        return self.file_type == S_IFREG

    def is_symlink(self) -> bool:
        return self.file_type == S_IFLNK

    @property
    def size(self) -> int:
        """The file size: i_size, plus i_size_high << 32 for regular files (large_file)."""
        if self.is_reg():
            return self.i_size | (self.i_size_high << 32)
        return self.i_size

    @size.setter
    def size(self, v: int) -> None:
        self.i_size = v & 0xFFFFFFFF
        if self.is_reg():
            self.i_size_high = v >> 32

    @property
    def uid(self) -> int:
        return self.i_uid | (self.l_i_uid_high << 16)

    @property
    def gid(self) -> int:
        return self.i_gid | (self.l_i_gid_high << 16)


class DirEntry:
    """struct ext2_dir_entry_2: inode, rec_len, name_len, file_type, name.  Without the
    filetype feature name_len is 16 bits (struct ext2_dir_entry) and file_type is 0."""

    HEADER = struct.Struct("<IHBB")
    __slots__ = ("inode", "rec_len", "name_len", "file_type", "name", "offset")

    def __init__(self, inode: int, name: bytes, file_type: int = 0, rec_len: int = 0,
                 offset: int = 0):
        self.inode = inode
        self.name = name
        self.name_len = len(name)
        self.file_type = file_type
        self.rec_len = rec_len or self.min_rec_len(len(name))
        self.offset = offset

    @staticmethod
    def min_rec_len(name_len: int) -> int:
        """EXT2_DIR_REC_LEN: 8 bytes of header plus the name, rounded up to 4."""
        return (8 + name_len + 3) & ~3

    @property
    def actual_len(self) -> int:
        return self.min_rec_len(self.name_len)

    @classmethod
    def parse(cls, buf, offset: int = 0, filetype: bool = True) -> DirEntry:
        inode, rec_len, name_len, ft = cls.HEADER.unpack_from(buf, offset)
        if not filetype:
            name_len |= ft << 8
            ft = 0
        name = bytes(buf[offset + 8:offset + 8 + name_len])
        e = cls(inode, name, ft, rec_len, offset)
        e.name_len = name_len
        e.rec_len = rec_len  # as on disk, 0 included (the constructor would default it)
        return e

    def pack(self, filetype: bool = True) -> bytes:
        if filetype:
            hdr = self.HEADER.pack(self.inode, self.rec_len, self.name_len, self.file_type)
        else:
            hdr = struct.pack("<IHH", self.inode, self.rec_len, self.name_len)
        body = hdr + self.name
        return body + bytes(self.rec_len - len(body))

    def __repr__(self):
        return (f"DirEntry(inode={self.inode}, name={self.name!r}, "
                f"file_type={self.file_type}, rec_len={self.rec_len})")


def group_has_super(group: int, sparse_super: bool) -> bool:
    """ext2_group_sparse: with sparse_super, groups 0, 1 and powers of 3, 5 and 7 hold a
    superblock backup (and a copy of the descriptors); without it every group does."""
    if not sparse_super or group <= 1:
        return True
    if group % 2 == 0:
        return False
    for p in (3, 5, 7):
        n = p
        while n < group:
            n *= p
        if n == group:
            return True
    return False
