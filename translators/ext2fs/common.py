"""What every part of the ext2 library shares (the Hurd keeps these in ext2fs.h): the
error type, the mount lock decorator, the on-disk little-endian word."""

from __future__ import annotations

import errno
import functools
import struct

U32 = struct.Struct("<I")


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


def locked(fn):
    """Run a public method under the mount's re-entrant lock (``self.lock``)."""
    @functools.wraps(fn)
    def wrapper(self, *a, **kw):
        with self.lock:
            return fn(self, *a, **kw)
    return wrapper
