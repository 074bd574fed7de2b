"""The bench's VM roles: a task timing vm_read of a resident page and cold faults served
by memfs, the map-lookup measurement, and a task putting data in (nearly) every frame of
a kernel whose RSS the orchestrator reads.  Each runs as its own process
(``python -m lab.bench.role vmclient|maplookup|toucher ...``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from kernel.vm_pageout import VM_PAGE_FREE_RESERVED
from lab.bench import vmmap
from lab.bench.pages import page, tagged_page
from lab.bench.stats import latency, time_calls, warmup
from lab.bench.task import connect, look_up
from lab.rundir import write_atomic
from protocol.defs import fs as F
from protocol.defs import mach as VM
from protocol.defs.mach_port import mach_port_deallocate
from protocol.vm_param import PAGE_SIZE

FREE_MARGIN = 256  # pages the toucher leaves above the pageout free target


def vmclient(run_dir: str, name: str, memfs: str, rounds: int, faults: int,
             file_pages: int, out: str):
    """VM latency through the kernel, written to ``out`` as {"resident": latency of
    ``rounds`` vm_reads of a resident page, "cold": latency of ``faults`` first vm_reads
    of pages of fresh memfs files mapped with io_map + vm_map, ``file_pages`` per file
    (a cold fault: the kernel's memory_object_data_request to memfs, memfs's
    memory_object_data_supply, the reply), with the data_requests and pageins seen}."""
    rt = connect(run_dir, name, "client")
    T = 30
    me = rt.task_self
    try:
        def stats():
            return VM.vm_statistics(me, timeout=T, rt=rt)

        # ---- resident: one anonymous page, written once (zero-fill fault + store), then
        # read over and over; the reads must fault nothing in.
        pg = page()
        addr = VM.vm_allocate(me, 0, PAGE_SIZE, True, timeout=T, rt=rt)
        VM.vm_write(me, addr, pg, timeout=T, rt=rt)
        for _ in range(warmup(rounds)):
            if VM.vm_read(me, addr, PAGE_SIZE, timeout=T, rt=rt) != pg:
                raise SystemExit("vm_read: resident page corrupted")
        s0 = stats()
        samples = time_calls(lambda: VM.vm_read(me, addr, PAGE_SIZE, timeout=T, rt=rt),
                             rounds, warm=0)
        s1 = stats()
        for key in ("pageins", "zero_fill_count", "data_requests"):
            if s1[key] != s0[key]:
                raise SystemExit(f"resident vm_read faulted: {key} {s0[key]} -> {s1[key]}")
        VM.vm_deallocate(me, addr, PAGE_SIZE, timeout=T, rt=rt)
        resident = latency(samples)

        # ---- cold faults: fresh files, so no page of them was ever in the kernel's cache.
        # memfs runs with --direct-io: io_write fills its page store without touching the
        # kernel's.  Page 0 of each file is read untimed (it waits for memory_object_init
        # / memory_object_ready); pages 1..file_pages are the timed cold faults.
        root = look_up(rt, memfs)
        size = (file_pages + 1) * PAGE_SIZE
        clock = time.perf_counter_ns
        samples, requests, pageins, files = [], 0, 0, 0
        while len(samples) < faults:
            fname = f"cold{files}"
            data = b"".join(tagged_page(files, i) for i in range(file_pages + 1))
            retry, _, port = F.dir_lookup(root, fname, F.O_CREAT | F.O_EXCL | F.O_READ
                                          | F.O_WRITE, 0o600, timeout=T, rt=rt)
            if retry != F.FS_RETRY_NORMAL or not port:
                raise SystemExit(f"dir_lookup {fname}: retry {retry}, port {port}")
            if F.io_write(port, data, 0, timeout=T, rt=rt) != size:
                raise SystemExit(f"io_write {fname}: short write")
            rd, wt = F.io_map(port, timeout=T, rt=rt)
            a = VM.vm_map(me, 0, size, 0, True, rd, 0, False, VM.VM_PROT_READ,
                          VM.VM_PROT_READ, VM.VM_INHERIT_NONE, timeout=T, rt=rt)
            if VM.vm_read(me, a, PAGE_SIZE, timeout=T, rt=rt) != data[:PAGE_SIZE]:
                raise SystemExit(f"{fname}: page 0 differs from what io_write stored")
            n = min(file_pages, faults - len(samples))
            got = []
            s0 = stats()
            for i in range(1, n + 1):
                t = clock()
                d = VM.vm_read(me, a + i * PAGE_SIZE, PAGE_SIZE, timeout=T, rt=rt)
                samples.append(clock() - t)
                got.append(d)
            s1 = stats()
            dr, pi = s1["data_requests"] - s0["data_requests"], s1["pageins"] - s0["pageins"]
            if dr != n or pi < n:
                raise SystemExit(f"{fname}: {n} reads timed but data_requests grew by {dr}, "
                                 f"pageins by {pi}: not every read was a cold fault")
            for i, d in enumerate(got, 1):
                if d != data[i * PAGE_SIZE:(i + 1) * PAGE_SIZE]:
                    raise SystemExit(f"{fname}: page {i} differs from what io_write stored")
            requests += dr
            pageins += pi
            VM.vm_deallocate(me, a, size, timeout=T, rt=rt)
            for right in (rd, wt):
                mach_port_deallocate(me, right, rt=rt)
            F.dir_unlink(root, fname, timeout=T, rt=rt)
            mach_port_deallocate(me, port, rt=rt)
            files += 1
        cold = latency(samples)
        cold.update(data_requests=requests, pageins=pageins, files=files)
        rt.thread_exit()
        write_atomic(Path(out), json.dumps({"resident": resident, "cold": cold}))
    finally:
        rt.close()


def lookup_counts(structure: str, n_entries: int, quick: bool) -> int:
    """Lookups per map-lookup measurement: the list's scans are linear, so its count
    shrinks with the map (about 0.4 s at 100k entries, a quarter of that with --quick)."""
    if structure == "tree":
        return 2_000 if quick else 20_000
    if quick:
        return max(50, min(5_000, 2_500_000 // n_entries))
    return max(200, min(20_000, 10_000_000 // n_entries))


def maplookup(quick: int, out: str):
    """ns per vm_map_lookup_entry for both lookup structures at each of vmmap's sizes,
    written to ``out`` as {"STRUCTURE_N": {"ns", "lookups"}}."""
    res = {}
    for n in vmmap.DEFAULT_SIZES:
        for s in vmmap.STRUCTURES:
            k = lookup_counts(s, n, bool(quick))
            res[f"{s}_{n}"] = {"ns": vmmap.bench_lookup(s, n, k), "lookups": k}
    write_atomic(Path(out), json.dumps(res))


def free_target(npages: int) -> int:
    """The classic pageout daemon's free target (kernel/vm_pageout.py), which the RSS
    toucher stays above: under it the daemon would look for pages to launder."""
    reserved = min(VM_PAGE_FREE_RESERVED, npages // 8)
    free = npages - reserved
    free_min = reserved + 10 + free // 100
    return max(reserved + 15 + free // 80, free_min + 5)


def toucher(run_dir: str, name: str, chunk: int):
    """Puts data in (nearly) every physical frame of the kernel: one vm_allocate as large
    as physical memory, then vm_writes of ``chunk`` bytes, stopping FREE_MARGIN pages
    above the pageout daemon's free target.  Prints {"touched": pages, ...}, then holds
    the memory until a line arrives on stdin (the orchestrator reads the kernel's RSS)."""
    rt = connect(run_dir, name, "client")
    T = 120
    me = rt.task_self
    try:
        s0 = VM.vm_statistics(me, timeout=T, rt=rt)
        npages = s0["physical_pages"]
        budget = s0["free_count"] - free_target(npages) - FREE_MARGIN
        if budget < 1:
            raise SystemExit(f"no frames to touch: {s0}")
        chunk_pages = max(1, chunk // PAGE_SIZE)
        addr = VM.vm_allocate(me, 0, npages * PAGE_SIZE, True, timeout=T, rt=rt)
        t0 = time.perf_counter()
        touched = 0
        while touched < budget:
            n = min(chunk_pages, budget - touched)
            data = bytes([(touched // chunk_pages) % 251 + 1]) * (n * PAGE_SIZE)
            VM.vm_write(me, addr + touched * PAGE_SIZE, data, timeout=T, rt=rt)
            touched += n
        secs = time.perf_counter() - t0
        last = addr + (touched - 1) * PAGE_SIZE
        if VM.vm_read(me, last, PAGE_SIZE, timeout=T, rt=rt) != bytes(
                [((touched - 1) // chunk_pages) % 251 + 1]) * PAGE_SIZE:
            raise SystemExit("toucher: last page differs from what vm_write stored")
        s1 = VM.vm_statistics(me, timeout=T, rt=rt)
        zf = s1["zero_fill_count"] - s0["zero_fill_count"]
        if zf < touched:
            raise SystemExit(f"toucher: {touched} pages written, {zf} zero-fill faults")
        print(json.dumps({"touched": touched, "physical_pages": npages, "secs": secs,
                          "free_count": s1["free_count"], "pageouts": s1["pageouts"]}),
              flush=True)
        sys.stdin.readline()
        rt.thread_exit()
    finally:
        rt.close()
