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


@pytest.mark.timeout(240)
def test_many_file_windows_stay_within_the_budget(kernel, tasks, procs, run_dir):
    """200 files each written at 20 MiB hold a 16 MiB window each: 3.2 GiB, more than
    memfs's 3 GiB address space.  The mapping budget unmaps idle windows, so every
    write works and the windows mapped stay bounded.  The files stay open (a closed
    file's window is unmapped at its last close)."""
    p = start_server(procs, run_dir, "translators.memfs", "memfs", "--stats-interval", "0.2")
    c = Client(tasks.new("c"))
    opened = []
    for i in range(200):
        f = c.open(f"w{i}", F.O_CREAT | RW)
        assert c.call(F.io_write, f, b"%d" % i, 20 << 20) == len(b"%d" % i)
        opened.append(f)
    for i in (0, 57, 199):  # evicted windows come back
        assert c.call(F.io_read, opened[i], 20 << 20, 10) == b"%d" % i
    for f in opened:
        c.close(f)
    st = stop_memfs(p, run_dir)
    assert st["map_evictions"] >= 150 and st["map_bytes"] <= (256 + 64) << 20, st
