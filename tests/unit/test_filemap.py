"""translators.filemap without a kernel: where the file window goes, and the errno a
failed mapped I/O answers."""

from __future__ import annotations

from protocol.defs import fs as F
from protocol.kern_return import KernReturn as K
from translators.filemap import FileMapping, io_errno

MiB = 1 << 20


def test_window_grows_from_the_start_then_moves_bounded():
    m = FileMapping(None, lambda: 0)
    assert m._window_for(0, 1) == (0, FileMapping.MIN_WINDOW)
    assert m._window_for(0, 5 * MiB) == (0, 8 * MiB)
    assert m._window_for(0, 16 * MiB) == (0, 16 * MiB)
    # past MAX_WINDOW: a MAX_WINDOW window aligned to its size, wherever the I/O is
    for a in (16 * MiB, 3 << 30, (5 << 30) + 12345):
        off, size = m._window_for(a, a + 100)
        assert size == FileMapping.MAX_WINDOW and off <= a < off + size
        assert off % FileMapping.MAX_WINDOW == 0


def test_io_errno():
    assert io_errno(F.EFBIG) == F.EFBIG  # a Hurd errno passes through
    assert io_errno(K.KERN_NO_SPACE) == F.ENOMEM
    assert io_errno(K.KERN_RESOURCE_SHORTAGE) == F.ENOMEM
    assert io_errno(K.KERN_MEMORY_ERROR) == F.EIO
    assert io_errno(K.KERN_MEMORY_ERROR, F.ENOSPC) == F.ENOSPC  # the pager's own
    assert io_errno(K.KERN_INVALID_ADDRESS) == F.EIO
