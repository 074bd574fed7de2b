"""ext2fs: ext2 revision 1 on an image file.

The on-disk format (``ondisk``); a file-system library over an image (``filesystem.Ext2``,
put together from one part per file of the Hurd's ext2fs: hyper, disk_cache, balloc,
ialloc, inode, getblk, rdwr, truncate, dir); an image maker that needs no e2fsprogs
(``from translators.ext2fs.mkfs import mkfs``; also ``python -m translators.ext2fs.mkfs
IMAGE SIZE``).  The translator is built on these: ``pager`` (the libpager callbacks of
a file, ext2fs/pager.c) and ``translator`` (nodes and the fs protocol over libdiskfs's
part, ``diskfs`` and ``fsserver``), started by ``python -m translators.ext2fs``.
"""

from .filesystem import Ext2, Ext2Error, Ext2UnsupportedFeature

__all__ = ["Ext2", "Ext2Error", "Ext2UnsupportedFeature"]
