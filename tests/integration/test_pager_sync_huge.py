"""A file grown past 1 TiB (file_set_size) on a real ext2fs: fsys_syncfs answers within
a bound (the kernel's memory_object_lock_request walks the object's resident pages, not
every offset, and always answers lock_completed), the data written before reaches the
image, and SIGTERM stops the translator within a bound."""

from __future__ import annotations

import signal
import time

import pytest

from protocol.defs import fs as F
from tests.conftest import log_records, start_server

RW = F.O_READ | F.O_WRITE
T = 30
HUGE = 3 << 39  # 1.5 TiB: more than the 1 TiB the kernel used to refuse
DATA = b"written before the file grew " * 100
# More resident dirty pages than one step of a lock_request takes (LOCK_REQUEST_BATCH).
BULK_AT, BULK = 1 << 20, bytes(range(251)) * (600 * 4096 // 251)


def _open(rt, root, path, flags):
    retry, _, port = F.dir_lookup(root, path, flags, 0o644, timeout=T, rt=rt)
    assert retry == F.FS_RETRY_NORMAL and port
    return port


@pytest.mark.timeout(180)
def test_sync_of_huge_file_answers_and_sigterm_stops(kernel, tasks, procs, run_dir):
    from protocol.defs import netname as NS

    img = run_dir / "ext2fs.img"
    p = start_server(procs, run_dir, "translators.ext2fs", "ext2fs", "--size-mib", "16",
                     "--sync-interval", "0", "--stats-interval", "0.5")
    rt = tasks.new("client")
    root = NS.netname_look_up(rt.name_server, "", "ext2fs", timeout=T, rt=rt)
    f = _open(rt, root, "big", F.O_CREAT | RW)
    assert F.io_write(f, DATA, 0, timeout=T, rt=rt) == len(DATA)
    for i in range(0, len(BULK), 1 << 16):
        piece = BULK[i:i + (1 << 16)]
        assert F.io_write(f, piece, BULK_AT + i, timeout=T, rt=rt) == len(piece)
    F.file_set_size(f, HUGE, timeout=T, rt=rt)
    assert F.io_stat(f, timeout=T, rt=rt)["st_size"] == HUGE
    assert F.io_write(f, b"again", 8192, timeout=T, rt=rt) == 5

    t0 = time.monotonic()
    F.fsys_syncfs(root, 1, 0, timeout=60, rt=rt)
    assert time.monotonic() - t0 < 60

    # The bytes are on the image: a fresh ext2fs on it reads them back.
    t0 = time.monotonic()
    p.kill(signal.SIGTERM)
    assert p.p.wait(30) == 0, p.output()
    assert time.monotonic() - t0 < 30
    recs = log_records(run_dir / "ext2fs.log")
    assert [r for r in recs if r.get("event") == "ext2fs synced"]
    p2 = start_server(procs, run_dir, "translators.ext2fs", "ext2fs2", "--image", str(img),
                      "--sync-interval", "0")
    root2 = NS.netname_look_up(rt.name_server, "", "ext2fs2", timeout=T, rt=rt)
    g = _open(rt, root2, "big", F.O_READ)
    assert F.io_stat(g, timeout=T, rt=rt)["st_size"] == HUGE
    assert F.io_read(g, 0, len(DATA), timeout=T, rt=rt) == DATA
    assert F.io_read(g, 8192, 5, timeout=T, rt=rt) == b"again"
    got = bytearray()
    while len(got) < len(BULK):
        got += F.io_read(g, BULK_AT + len(got), len(BULK) - len(got), timeout=T, rt=rt)
    assert got == BULK
    p2.kill(signal.SIGTERM)
    assert p2.p.wait(30) == 0, p2.output()
