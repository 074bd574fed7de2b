"""memfs faults (issue 8, finding 8): in the default (mapped) mode a write far past
memfs's own address space goes through a window of the file (the whole-file mapping
failed with KERN_NO_SPACE, and the failed write left the size grown); a write past the
maximum size answers EFBIG and leaves the size as it was."""

from __future__ import annotations

import pytest

from protocol.defs import fs as F
from tests.conftest import start_server
from tests.integration.test_memfs_fs import Client, errno_of, pattern, stop_memfs

GiB = 1 << 30
RW = F.O_READ | F.O_WRITE


@pytest.mark.timeout(120)
def test_memfs_write_past_its_address_space_and_failed_write(kernel, tasks, procs,
                                                             run_dir):
    """A write at 4 GiB (past memfs's 3 GiB address space) and one past the maximum
    size."""
    p = start_server(procs, run_dir, "translators.memfs", "memfs", "--stats-interval", "0.2")
    c = Client(tasks.new("c"))
    f = c.open("m", F.O_CREAT | RW)
    data = pattern(20000, 6)
    assert c.call(F.io_write, f, data, 4 * GiB + 7) == len(data)
    assert c.call(F.io_read, f, 4 * GiB + 7, len(data)) == data
    assert c.call(F.io_read, f, 4 * GiB - 10, 17) == bytes(17)
    assert c.call(F.io_stat, f)["st_size"] == 4 * GiB + 7 + len(data)
    assert errno_of(F.io_write, f, b"x", 1 << 41, rt=c.rt) == F.EFBIG
    assert c.call(F.io_stat, f)["st_size"] == 4 * GiB + 7 + len(data)
    c.close(f)
    stop_memfs(p, run_dir)
