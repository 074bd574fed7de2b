"""The bench's ext2fs role: a sequential write through ext2fs, whose data_returns and
disk writes the orchestrator compares across data_return cluster sizes
(``python -m lab.bench.role ext2writer ...``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from lab.bench.pages import tagged_page
from lab.bench.task import connect, look_up
from lab.rundir import write_atomic
from protocol.defs import fs as F
from protocol.defs import mach as VM
from protocol.vm_param import PAGE_SIZE

EXT2_CHUNK = 1 << 20  # bytes per io_write
VM_DELTAS = ("data_returns", "data_return_pages", "pageouts", "pageins", "data_requests")


def ext2_chunk(i: int) -> bytes:
    """Chunk ``i`` of the sequential file: every page names its chunk and page."""
    return b"".join(tagged_page(i, p) for p in range(EXT2_CHUNK // PAGE_SIZE))


def ext2writer(run_dir: str, name: str, server: str, mib: int, out: str):
    """Sequential write through ext2fs: dir_lookup(O_CREAT), ``mib`` io_writes of 1 MiB,
    fsys_syncfs(wait); the first and last chunks read back (io_read) and compared.
    Writes to ``out`` {"write_s", "sync_s", "vm": the kernel's vm_statistics deltas,
    "physical_pages"}."""
    rt = connect(run_dir, name, "client")
    T = 600
    me = rt.task_self
    try:
        root = look_up(rt, server)
        retry, _, port = F.dir_lookup(root, "seqwrite", F.O_CREAT | F.O_EXCL | F.O_READ
                                      | F.O_WRITE, 0o644, timeout=T, rt=rt)
        if retry != F.FS_RETRY_NORMAL or not port:
            raise SystemExit(f"dir_lookup: retry {retry}, port {port}")
        pattern = {i: ext2_chunk(i) for i in (0, mib - 1)}
        s0 = VM.vm_statistics(me, timeout=T, rt=rt)
        t0 = time.perf_counter()
        for i in range(mib):
            data = pattern.get(i) or ext2_chunk(i)
            if F.io_write(port, data, i * EXT2_CHUNK, timeout=T, rt=rt) != EXT2_CHUNK:
                raise SystemExit(f"io_write chunk {i}: short write")
        t1 = time.perf_counter()
        F.fsys_syncfs(root, 1, 0, timeout=T, rt=rt)
        t2 = time.perf_counter()
        s1 = VM.vm_statistics(me, timeout=T, rt=rt)
        for i, want in pattern.items():
            if F.io_read(port, i * EXT2_CHUNK, EXT2_CHUNK, timeout=T, rt=rt) != want:
                raise SystemExit(f"io_read chunk {i}: differs from what io_write stored")
        delta = {k: s1[k] - s0[k] for k in VM_DELTAS}
        rt.thread_exit()
        write_atomic(Path(out), json.dumps({"write_s": t1 - t0, "sync_s": t2 - t1,
                                            "vm": delta,
                                            "physical_pages": s0["physical_pages"]}))
    finally:
        rt.close()
