"""An ext2 file system over an image file: the disk-format half of the Hurd's ext2fs
translator, with no dependency on the kernel.

``Ext2(path, read_only=False)`` mounts an image.  The class is put together from one
part per file of the Hurd's ext2fs:

  hyper.Hyper            superblock, group descriptors, mount, sync     (hyper.c)
  disk_cache.DiskCache   block I/O, write-back cache of metadata blocks (pager.c, pokel.c)
  balloc.BlockAlloc      block bitmaps                                  (balloc.c)
  ialloc.InodeAlloc      inode bitmaps, new and released inodes         (ialloc.c)
  inode.Inodes           the inode table, attributes, symlink targets   (inode.c)
  getblk.GetBlk          file block -> disk block, indirect blocks      (getblk.c)
  rdwr.ReadWrite         file data by byte range                        (libdiskfs rdwr)
  truncate.Truncate      freeing blocks past a new end                  (truncate.c)
  dir.Dir                directory entries                              (dir.c)

and here the namespace operations libdiskfs builds from them (dir-mkfile.c, dir-mkdir.c,
dir-link.c, dir-unlink.c, dir-rmdir.c, dir-rename.c).  Every public method holds one
re-entrant lock, so threads may share a mount.  Inode objects returned by
``read_inode`` are copies: change one, then ``write_inode``.  Names may be ``str``
(UTF-8) or ``bytes``.
"""

from __future__ import annotations

import errno

from . import ondisk as D
from .balloc import BlockAlloc
from .common import Ext2Error, Ext2UnsupportedFeature, locked
from .dir import Dir, check_name
from .disk_cache import DiskCache
from .getblk import GetBlk
from .hyper import Hyper
from .ialloc import InodeAlloc
from .inode import Inodes
from .rdwr import ReadWrite
from .truncate import Truncate

__all__ = ["Ext2", "Ext2Error", "Ext2UnsupportedFeature"]


class Ext2(Hyper, DiskCache, BlockAlloc, InodeAlloc, Inodes, GetBlk, ReadWrite,
           Truncate, Dir):
    """A mounted ext2 image (hyper.c get_hypermetadata + the diskfs node ops)."""

    @locked
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
            self._set_rdev(inode, rdev)
        self.write_inode(inode)
        with self._undo_alloc(ino):
            self._add_entry(dinode, nm, ino, self._ft(mode))
        return ino

    def create(self, dir_ino: int, name, mode: int = 0o644, uid: int = 0,
               gid: int = 0) -> int:
        """A new empty regular file (permission bits ``mode``); returns its number."""
        return self.mknod(dir_ino, name, D.S_IFREG | (mode & 0o7777), uid, gid)

    @locked
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
            self._write_symlink(inode, target)
            self._add_entry(dinode, nm, ino, D.EXT2_FT_SYMLINK if self.filetype else 0)
        return ino

    @locked
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

    @locked
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

    @locked
    def unlink(self, dir_ino: int, name, defer_free: bool = False) -> int:
        """dir_unlink: remove a non-directory entry and drop a link; an inode left with
        no links is released now, or by ``clear_inode`` later when ``defer_free``.
        Returns the inode number."""
        self._check_rw()
        dinode = self._dir_inode(dir_ino)
        nm = check_name(name)
        inode = self.read_inode(self._find_entry(dinode, nm)[2].inode)
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

    @locked
    def rmdir(self, dir_ino: int, name) -> None:
        """dir_rmdir: remove an empty directory; the parent loses the '..' link."""
        self._check_rw()
        dinode = self._dir_inode(dir_ino)
        nm = check_name(name)
        if nm in (b".", b".."):
            raise Ext2Error(errno.EINVAL, "cannot remove . or ..")
        inode = self.read_inode(self._find_entry(dinode, nm)[2].inode)
        if not inode.is_dir():
            raise Ext2Error(errno.ENOTDIR, f"{nm!r} is not a directory")
        if not self._dir_is_empty(inode):
            raise Ext2Error(errno.ENOTEMPTY, f"{nm!r} is not empty")
        self._remove_entry(dinode, nm)
        dinode.i_links_count -= 1
        self.write_inode(dinode)
        self._release_inode(inode)

    @locked
    def rename(self, old_dir: int, old_name, new_dir: int, new_name) -> None:
        """dir_rename: move an entry, replacing a non-directory (or an empty directory
        for a directory) at the target; a moved directory's '..' follows."""
        self._check_rw()
        onm, nnm = check_name(old_name), check_name(new_name)
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

