"""The processes of ``scripts/bench`` and the orchestration that runs them.

Run as ``python _benchlib.py ROLE ...`` this module is one of the bench's child processes:

  floor-server, floor-client   two bare processes (zmq + msgpack only, no machemu runtime)
                               that set the transport floor (DESIGN section 9)
  server                       a bare Mach server task: one receive right checked in with
                               the name server, threads looping mach_msg(SEND|RCV) over the
                               demo subsystem
  client                       a task timing RPCs through the kernel (demo_null, demo_echo)
                               and to the kernel (mach_port_type on its task port)
  sender                       a task streaming demo_send one-way messages at the server
  vmclient                     a task timing vm_read of a resident page, and cold faults:
                               the first vm_read of each page of a memfs file it mapped
                               (kernel -> memfs data_request -> data_supply -> reply)
  maplookup                    kernel.vm_map's list and tree lookups (scripts/_vmmapbench)
  toucher                      a task writing (nearly) every frame of a 256k-page kernel,
                               whose RSS the orchestrator then reads

Imported, ``run(args)`` starts them all in one temp dir and returns the measurements.
The floor roles import nothing from machemu, so the floor is the transport alone.
"""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack
import zmq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
from protocol.vm_param import PAGE_SIZE  # noqa: E402

SERVER_NAME = "bench"
FLOOR_ACK_EVERY = 32  # the floor receiver grants credit in batches of this many
FLOOR_WINDOW = 256    # the floor sender's bound on messages in flight
MACH_PORT_QLIMIT_MAX = 16
MEMFS_NAME = "memfs"
RSS_PAGES = 262144      # physical_pages of the kernel whose RSS per page is measured
EXT2_CLUSTERS = (1, 32)  # data_return_cluster values compared by the ext2 rows
RSS_CHUNK = 4 << 20     # bytes per vm_write while touching frames (MAX_OOL_BYTES)
FREE_MARGIN = 256       # pages the toucher leaves above the pageout free target

_packb = msgpack.Packer(use_bin_type=True).pack


def _unpackb(data):
    return msgpack.unpackb(data, raw=False)


def _page() -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(PAGE_SIZE))


def _percentile(sorted_vals, q):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_vals:
        return 0.0
    k = max(0, min(len(sorted_vals) - 1, int(round(q / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def _latency(samples_ns) -> dict:
    s = sorted(samples_ns)
    return {"p50_us": _percentile(s, 50) / 1000.0, "p99_us": _percentile(s, 99) / 1000.0,
            "n": len(s)}


def _die_with_parent():
    """PR_SET_PDEATHSIG: a child of a killed bench does not outlive it."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


def _term_exits():
    def on_term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)


# ==================================================================== the floor (bare)

def _floor_header(kind: str, n: int) -> bytes:
    # Shaped like a Mach message header on the wire (op, thread, seq, option, ids, names,
    # descriptors), so the floor encodes and decodes as much header as the kernel path.
    return _packb([kind, 1, n, 3, -1, 0, -1, 50001, 1, 19, 2, 21, []])


def role_floor_server(endpoint: str, ready: str):
    """The receiving side of the floor: echoes round trips, drains streams with credit."""
    _die_with_parent()
    _term_exits()
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, 1000)
    s.setsockopt(zmq.RCVHWM, 1000)
    s.bind(endpoint)
    Path(ready).write_text(str(os.getpid()))
    received = 0
    try:
        while True:
            ident, hdr, body = s.recv_multipart()
            h = _unpackb(hdr)
            page = _unpackb(body)
            kind = h[0]
            if kind == "rtt":
                s.send_multipart([ident, _floor_header("rtt", h[2]), _packb(page)])
            elif kind == "stream":
                received += 1
                if received % FLOOR_ACK_EVERY == 0:
                    s.send_multipart([ident, _floor_header("ack", received), b""])
            elif kind == "reset":
                received = 0
                s.send_multipart([ident, _floor_header("ack", 0), b""])
    finally:
        s.close(linger=0)
        ctx.term()


def role_floor_client(endpoint: str, rounds: int, messages: int, out: str):
    """The sending side of the floor: round-trip latency, then a credit-bounded stream."""
    _die_with_parent()
    _term_exits()
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, 1000)
    s.setsockopt(zmq.RCVHWM, 1000)
    s.connect(endpoint)
    page = _page()
    try:
        def rtt(i):
            s.send_multipart([_floor_header("rtt", i), _packb(page)])
            hdr, body = s.recv_multipart()
            _unpackb(hdr)
            if _unpackb(body) != page:
                raise SystemExit("floor: page corrupted")

        for i in range(max(50, rounds // 10)):
            rtt(i)
        samples = []
        clock = time.perf_counter_ns
        for i in range(rounds):
            t = clock()
            rtt(i)
            samples.append(clock() - t)

        def stream(n):
            s.send_multipart([_floor_header("reset", 0), _packb(b"")])
            s.recv_multipart()
            acked = sent = 0
            t0 = time.perf_counter()
            while sent < n:
                if sent - acked >= FLOOR_WINDOW:
                    hdr, _ = s.recv_multipart()
                    acked = _unpackb(hdr)[2]
                    continue
                s.send_multipart([_floor_header("stream", sent), _packb(page)])
                sent += 1
            # One connection is FIFO: the answer to a round trip sent behind the stream
            # proves the receiver has taken every page of it.
            s.send_multipart([_floor_header("rtt", sent), _packb(page)])
            while True:
                hdr, _ = s.recv_multipart()
                if _unpackb(hdr)[0] == "rtt":
                    break
            return time.perf_counter() - t0

        stream(max(100, messages // 10))  # warm-up
        secs = stream(messages)
        Path(out).write_text(json.dumps({"samples": samples, "stream_n": messages,
                                         "stream_s": secs}))
    finally:
        s.close(linger=0)
        ctx.term()


# ==================================================================== kernel path tasks

def _connect(run_dir: str, name: str, role: str):
    from protocol import logs, runtime

    logs.setup(name, Path(run_dir) / f"{name}.log")
    return runtime.connect(runtime.kernel_endpoint(run_dir), name=name, role=role)


def _look_up(rt, name: str, deadline: float = 30.0):
    from protocol.defs.netname import netname_look_up
    from protocol.kern_return import MachError

    end = time.monotonic() + deadline
    while True:
        try:
            return netname_look_up(rt.name_server, "", name, timeout=10, rt=rt)
        except MachError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def role_server(run_dir: str, name: str, threads: int, qlimit: int):
    """A bare server task: demo_null, demo_echo, demo_send on one receive right, served by
    ``threads`` threads each looping mach_msg(MACH_SEND_MSG|MACH_RCV_MSG), as a MIG server
    loop (mach_msg_server) does."""
    _die_with_parent()
    _term_exits()
    import structlog

    from protocol import message as M
    from protocol.defs.demo import demo_echo, demo_null, demo_send
    from protocol.defs.mach_port import (
        mach_port_allocate,
        mach_port_insert_right,
        mach_port_set_qlimit,
    )
    from protocol.defs.netname import netname_check_in
    from protocol.kern_return import MachError
    from protocol.mig import Demux, bad_id_reply_id

    rt = _connect(run_dir, name, "server")
    log = structlog.get_logger(name)
    try:
        port = mach_port_allocate(rt.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=rt)
        mach_port_insert_right(rt.task_self, port, (port, M.MACH_MSG_TYPE_MAKE_SEND), rt=rt)
        if qlimit:
            mach_port_set_qlimit(rt.task_self, port, qlimit, rt=rt)
        netname_check_in(rt.name_server, name, rt.task_self, port, rt=rt)
        demux = Demux({demo_null: lambda obj: None,
                       demo_echo: lambda obj, data: data,
                       demo_send: lambda obj, data: None})

        def serve():
            reply = None
            while True:
                if reply is None:
                    code, msg = rt.mach_msg(M.MACH_RCV_MSG, None, port)
                else:
                    code, msg = rt.mach_msg(M.MACH_SEND_MSG | M.MACH_RCV_MSG, reply, port)
                reply = None
                if code:
                    if rt.dead or rt._closed:
                        return
                    log.warning("mach_msg failed", code=code)
                    continue
                routine, rc, vals = demux.dispatch(None, msg.msgh_id, msg.body,
                                                   [d[0] for d in msg.descs], msg.ool)
                if not msg.remote_port or rc == Demux.NO_REPLY:
                    continue
                if routine is not None and routine.simple:
                    continue
                if routine is None:
                    body, descs, ool = M.packb([int(rc)]), [], []
                    rid = bad_id_reply_id(msg.msgh_id)
                else:
                    body, descs, ool = routine.encode_reply(rc, vals)
                    rid = routine.reply_id
                reply = M.Message(msgh_id=rid, remote_port=msg.remote_port,
                                  remote_disp=msg.remote_disp, local_port=0, local_disp=0,
                                  descs=descs, body=body, ool=ool)

        def guarded():
            try:
                serve()
            except MachError as e:
                if not (rt.dead or rt._closed):
                    log.warning("server thread ends", code=e.code)

        workers = [threading.Thread(target=guarded, name=f"serve-{i}", daemon=True)
                   for i in range(threads)]
        for w in workers:
            w.start()
        (Path(run_dir) / f"{name}.ready").write_text(str(os.getpid()))
        log.info("bench server ready", port=port, threads=threads, qlimit=qlimit)
        while any(w.is_alive() for w in workers):
            for w in workers:
                w.join(timeout=1.0)
    finally:
        rt.close()


def role_client(run_dir: str, name: str, server: str, rounds: int, out: str):
    """Latency of RPCs through the kernel (two hops) and to the kernel (one hop)."""
    _die_with_parent()
    _term_exits()
    from protocol.defs.demo import demo_echo, demo_null
    from protocol.defs.mach_port import mach_port_type

    rt = _connect(run_dir, name, "client")
    try:
        port = _look_up(rt, server)
        page = _page()
        clock = time.perf_counter_ns
        warm = max(50, rounds // 10)

        def measure(call):
            for _ in range(warm):
                call()
            samples = []
            for _ in range(rounds):
                t = clock()
                call()
                samples.append(clock() - t)
            return _latency(samples)

        def echo():
            if demo_echo(port, page, timeout=30, rt=rt) != page:
                raise SystemExit("demo_echo: page corrupted")

        res = {
            "null": measure(lambda: demo_null(port, timeout=30, rt=rt)),
            "echo": measure(echo),
            "kobject": measure(lambda: mach_port_type(rt.task_self, rt.task_self,
                                                      timeout=30, rt=rt)),
        }
        rt.thread_exit()
        Path(out).write_text(json.dumps(res))
    finally:
        rt.close()


def role_sender(run_dir: str, name: str, server: str, count: int, threads: int):
    """One-way demo_send of 4 KiB pages from ``threads`` threads; waits for "go" on stdin,
    prints {"end": monotonic time when the server has dequeued them all, "sent": n,
    "cpu": seconds of CPU this process used meanwhile}."""
    _die_with_parent()
    _term_exits()
    from protocol.defs.demo import demo_null, demo_send

    rt = _connect(run_dir, name, "client")
    try:
        port = _look_up(rt, server)
        page = _page()
        for _ in range(20):
            demo_send(port, page, timeout=30, rt=rt)
        demo_null(port, timeout=30, rt=rt)
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return
        cpu0 = time.process_time()
        per = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]
        errors = []

        def send(n):
            try:
                for _ in range(n):
                    demo_send(port, page, timeout=60, rt=rt)
            except BaseException as e:  # reported by the main thread
                errors.append(repr(e))

        ts = [threading.Thread(target=send, args=(n,), daemon=True) for n in per]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if errors:
            raise SystemExit(f"sender failed: {errors[0]}")
        # One queue, FIFO: when this RPC is answered, every message sent before it has
        # been taken off the server's queue, i.e. routed.
        demo_null(port, timeout=60, rt=rt)
        end = time.monotonic()
        rt.thread_exit()
        print(json.dumps({"end": end, "sent": count, "cpu": time.process_time() - cpu0}),
              flush=True)
    finally:
        rt.close()


# ==================================================================== VM paths

def _vm_page(tag: int, index: int) -> bytes:
    """A page that names its file and index (so a misplaced page is caught)."""
    head = b"%08x:%08x:" % (tag & 0xFFFFFFFF, index & 0xFFFFFFFF)
    body = bytes(((index * 13 + tag * 7 + i) & 0xFF) for i in range(256))
    return (head + body * (PAGE_SIZE // 256 + 1))[:PAGE_SIZE]


def role_vmclient(run_dir: str, name: str, memfs: str, rounds: int, faults: int,
                  file_pages: int, out: str):
    """VM latency through the kernel: vm_read of a resident page, and the first vm_read
    of each page of a memfs file mapped with io_map + vm_map (a cold fault: the kernel's
    memory_object_data_request to memfs, memfs's memory_object_data_supply, the reply)."""
    _die_with_parent()
    _term_exits()
    from protocol.defs import fs as F
    from protocol.defs import mach as VM
    from protocol.defs.mach_port import mach_port_deallocate

    rt = _connect(run_dir, name, "client")
    T = 30
    clock = time.perf_counter_ns
    me = rt.task_self
    try:
        def stats():
            return VM.vm_statistics(me, timeout=T, rt=rt)

        # ---- resident: one anonymous page, written once (zero-fill fault + store), then
        # read over and over; the reads must fault nothing in.
        page = _page()
        addr = VM.vm_allocate(me, 0, PAGE_SIZE, True, timeout=T, rt=rt)
        VM.vm_write(me, addr, page, timeout=T, rt=rt)
        for _ in range(max(50, rounds // 10)):
            if VM.vm_read(me, addr, PAGE_SIZE, timeout=T, rt=rt) != page:
                raise SystemExit("vm_read: resident page corrupted")
        s0 = stats()
        samples = []
        for _ in range(rounds):
            t = clock()
            VM.vm_read(me, addr, PAGE_SIZE, timeout=T, rt=rt)
            samples.append(clock() - t)
        s1 = stats()
        for key in ("pageins", "zero_fill_count", "data_requests"):
            if s1[key] != s0[key]:
                raise SystemExit(f"resident vm_read faulted: {key} {s0[key]} -> {s1[key]}")
        VM.vm_deallocate(me, addr, PAGE_SIZE, timeout=T, rt=rt)
        resident = _latency(samples)

        # ---- cold faults: fresh files, so no page of them was ever in the kernel's cache.
        # memfs runs with --direct-io: io_write fills its page store without touching the
        # kernel's.  Page 0 of each file is read untimed (it waits for memory_object_init
        # / memory_object_ready); pages 1..file_pages are the timed cold faults.
        root = _look_up(rt, memfs)
        size = (file_pages + 1) * PAGE_SIZE
        samples, requests, pageins, files = [], 0, 0, 0
        while len(samples) < faults:
            fname = f"cold{files}"
            data = b"".join(_vm_page(files, i) for i in range(file_pages + 1))
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
        cold = _latency(samples)
        cold.update(data_requests=requests, pageins=pageins, files=files)
        rt.thread_exit()
        Path(out).write_text(json.dumps({"resident": resident, "cold": cold}))
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


def role_maplookup(quick: int, out: str):
    """ns per vm_map_lookup_entry for both lookup structures (scripts/_vmmapbench)."""
    _die_with_parent()
    _term_exits()
    import _vmmapbench as VB

    res = {}
    for n in VB.DEFAULT_SIZES:
        for s in VB.STRUCTURES:
            k = lookup_counts(s, n, bool(quick))
            res[f"{s}_{n}"] = {"ns": VB.bench_lookup(s, n, k), "lookups": k}
    Path(out).write_text(json.dumps(res))


def free_target(npages: int) -> int:
    """The classic pageout daemon's free target (kernel/vm_pageout.py), which the RSS
    toucher stays above: under it the daemon would look for pages to launder."""
    from kernel.vm_pageout import VM_PAGE_FREE_RESERVED

    reserved = min(VM_PAGE_FREE_RESERVED, npages // 8)
    free = npages - reserved
    free_min = reserved + 10 + free // 100
    return max(reserved + 15 + free // 80, free_min + 5)


def role_toucher(run_dir: str, name: str, chunk: int):
    """Puts data in (nearly) every physical frame of the kernel: one vm_allocate as large
    as physical memory, then vm_writes of ``chunk`` bytes, stopping FREE_MARGIN pages
    above the pageout daemon's free target.  Prints {"touched": pages, ...}, then holds
    the memory until a line arrives on stdin (the orchestrator reads the kernel's RSS)."""
    _die_with_parent()
    _term_exits()
    from protocol.defs import mach as VM

    rt = _connect(run_dir, name, "client")
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


# ==================================================================== ext2fs write-back

EXT2_NAME = "ext2fs"
EXT2_CHUNK = 1 << 20  # bytes per io_write


def _ext2_chunk(i: int) -> bytes:
    """Chunk ``i`` of the sequential file: every page names its chunk and page."""
    return b"".join(_vm_page(i, p) for p in range(EXT2_CHUNK // PAGE_SIZE))


def role_ext2writer(run_dir: str, name: str, server: str, mib: int, out: str):
    """Sequential write through ext2fs: dir_lookup(O_CREAT), ``mib`` io_writes of 1 MiB,
    fsys_syncfs(wait); the kernel's vm_statistics before and after; the first and last
    chunks read back (io_read) and compared."""
    _die_with_parent()
    _term_exits()
    from protocol.defs import fs as F
    from protocol.defs import mach as VM

    rt = _connect(run_dir, name, "client")
    T = 600
    me = rt.task_self
    try:
        root = _look_up(rt, server)
        retry, _, port = F.dir_lookup(root, "seqwrite", F.O_CREAT | F.O_EXCL | F.O_READ
                                      | F.O_WRITE, 0o644, timeout=T, rt=rt)
        if retry != F.FS_RETRY_NORMAL or not port:
            raise SystemExit(f"dir_lookup: retry {retry}, port {port}")
        pattern = {i: _ext2_chunk(i) for i in (0, mib - 1)}
        s0 = VM.vm_statistics(me, timeout=T, rt=rt)
        t0 = time.perf_counter()
        for i in range(mib):
            data = pattern.get(i) or _ext2_chunk(i)
            if F.io_write(port, data, i * EXT2_CHUNK, timeout=T, rt=rt) != EXT2_CHUNK:
                raise SystemExit(f"io_write chunk {i}: short write")
        t1 = time.perf_counter()
        F.fsys_syncfs(root, 1, 0, timeout=T, rt=rt)
        t2 = time.perf_counter()
        s1 = VM.vm_statistics(me, timeout=T, rt=rt)
        for i, want in pattern.items():
            if F.io_read(port, i * EXT2_CHUNK, EXT2_CHUNK, timeout=T, rt=rt) != want:
                raise SystemExit(f"io_read chunk {i}: differs from what io_write stored")
        delta = {k: s1[k] - s0[k] for k in ("data_returns", "data_return_pages", "pageouts",
                                             "pageins", "data_requests")}
        rt.thread_exit()
        Path(out).write_text(json.dumps({"write_s": t1 - t0, "sync_s": t2 - t1,
                                         "vm": delta, "physical_pages": s0["physical_pages"]}))
    finally:
        rt.close()


ROLES = {
    "floor-server": (role_floor_server, (str, str)),
    "floor-client": (role_floor_client, (str, int, int, str)),
    "server": (role_server, (str, str, int, int)),
    "client": (role_client, (str, str, str, int, str)),
    "sender": (role_sender, (str, str, str, int, int)),
    "vmclient": (role_vmclient, (str, str, str, int, int, int, str)),
    "maplookup": (role_maplookup, (int, str)),
    "toucher": (role_toucher, (str, str, int)),
    "ext2writer": (role_ext2writer, (str, str, str, int, str)),
}


def role_main(argv):
    fn, types = ROLES[argv[0]]
    args = argv[1:]
    if len(args) != len(types):
        raise SystemExit(f"{argv[0]}: {len(types)} arguments expected")
    try:
        fn(*(t(a) for t, a in zip(types, args)))
    except KeyboardInterrupt:
        pass


# ==================================================================== orchestration

class BenchError(RuntimeError):
    pass


class Children:
    """Every process the bench starts, each in its own session; all ended by ``stop_all``."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name, argv, stdin=None, stdout=None):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("MACHEMU_KERNEL", None)
        err = open(self.tmp / f"{name}.err", "wb")
        try:
            p = subprocess.Popen(argv, stdin=stdin, stdout=stdout or subprocess.DEVNULL,
                                 stderr=err, env=env, cwd=ROOT, start_new_session=True,
                                 preexec_fn=_die_with_parent)
        finally:
            err.close()
        self.procs.append((name, p))
        return p

    def role(self, name, role, *args, **kw):
        return self.start(name, [sys.executable, str(HERE / "_benchlib.py"), role,
                                 *map(str, args)], **kw)

    def errors(self, name) -> str:
        try:
            return (self.tmp / f"{name}.err").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self, p, timeout=5.0):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout)
        for f in (p.stdin, p.stdout):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass

    def stop_all(self):
        # Tasks first, the kernel (started first) last.
        for _, p in reversed(self.procs):
            try:
                self.stop(p)
            except Exception:
                pass
        self.procs.clear()


def _wait_for(cond, timeout, what, proc=None, children=None, name=None):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what}: process exited ({proc.returncode})\n"
                             + (children.errors(name) if children else ""))
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _wait_proc(children, name, p, timeout):
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{name} did not finish within {timeout}s") from None
    if p.returncode != 0:
        raise BenchError(f"{name} failed ({p.returncode}):\n{children.errors(name)}")


def _readline(p, timeout) -> str:
    """One line from a child's stdout, or "" if it exits or stays silent past timeout."""
    fd = p.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"no answer from pid {p.pid} within {timeout}s")
        r, _, _ = select.select([fd], [], [], min(left, 1.0))
        if r:
            chunk = os.read(fd, 1)
            if not chunk:
                break
            buf += chunk
    return buf.decode(errors="replace").strip()


def _cpu_watch(procs: dict) -> dict:
    import psutil

    out = {}
    for name, p in procs.items():
        try:
            ps = psutil.Process(p.pid)
            t = ps.cpu_times()
            out[name] = (ps, t.user + t.system)
        except psutil.Error:
            out[name] = (None, 0.0)
    return out


def _cpu_used(watched: dict, wall: float) -> dict:
    """CPU each watched process used since ``_cpu_watch``, in percent of one core."""
    import psutil

    out = {}
    for name, (ps, before) in watched.items():
        try:
            t = ps.cpu_times()
            out[name] = 100.0 * (t.user + t.system - before) / wall
        except (psutil.Error, AttributeError):
            out[name] = 0.0
    return out


def run(args, progress) -> list[dict]:
    """Measure the floor and the kernel paths; return the result rows."""
    tmp = Path(tempfile.mkdtemp(prefix="mxb", dir="/tmp"))
    print(f"bench: run dir {tmp}", file=sys.stderr, flush=True)
    children = Children(tmp)
    try:
        return _run(args, progress, tmp, children)
    finally:
        # A second Ctrl-C must not cut the cleanup short: hold signals until it is done.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            children.stop_all()
            if args.keep:
                print(f"bench: run dir kept: {tmp}", file=sys.stderr)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _run(args, progress, tmp: Path, ch: Children) -> list[dict]:
    t_budget = args.timeout

    # ---- 1. the transport floor: two bare processes.  Half of it is measured before the
    # kernel paths and half after, so a change of load on the host during the run weighs
    # on both sides of each ratio alike.
    progress("floor: starting two bare zmq processes")
    fep = f"ipc://{tmp}/floor.sock"
    fs = ch.role("floor-server", "floor-server", fep, tmp / "floor.ready")
    _wait_for(lambda: (tmp / "floor.ready").exists(), 30, "floor server", fs, ch, "floor-server")
    floor_parts = []

    def floor_half(i):
        rounds, msgs = -(-args.rounds // 2), -(-args.messages // 2)
        progress(f"floor ({i + 1}/2): {rounds} round trips, {msgs} pipelined pages")
        name = f"floor-client{i}"
        fc = ch.role(name, "floor-client", fep, rounds, msgs, tmp / f"{name}.json")
        _wait_proc(ch, name, fc, t_budget)
        floor_parts.append(json.loads((tmp / f"{name}.json").read_text()))

    floor_half(0)

    # ---- 2. the kernel, a bare server task, a client task
    progress("kernel: starting kernel and server task")
    kp = ch.start("kernel", [sys.executable, "-m", "kernel", "--run-dir", str(tmp)])
    _wait_for(lambda: (tmp / "kernel.ready").exists(), 30, "kernel ready", kp, ch, "kernel")
    sp = ch.role("server", "server", tmp, SERVER_NAME, args.server_threads, args.qlimit)
    _wait_for(lambda: (tmp / f"{SERVER_NAME}.ready").exists(), 30, "server ready", sp, ch,
              "server")
    progress(f"kernel: {args.rounds} RPCs each of demo_null, demo_echo(4 KiB), "
             "mach_port_type")
    cp = ch.role("client", "client", tmp, "client", SERVER_NAME, args.rounds,
                 tmp / "client.json")
    _wait_proc(ch, "client", cp, t_budget)
    kern = json.loads((tmp / "client.json").read_text())

    progress(f"kernel: {args.routed} one-way demo_send from {args.senders} tasks x "
             f"{args.sender_threads} threads")
    senders = []
    base, extra = divmod(args.routed, args.senders)
    for i in range(args.senders):
        n = base + (1 if i < extra else 0)
        p = ch.role(f"sender{i}", "sender", tmp, f"sender{i}", SERVER_NAME, n,
                    args.sender_threads, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        senders.append((f"sender{i}", p, n))
    for name, p, _ in senders:
        line = _readline(p, 60)
        if line != "ready":
            raise BenchError(f"{name} not ready: {line!r}\n{ch.errors(name)}")
    watched = _cpu_watch({"kernel": kp, "server": sp})
    t0 = time.monotonic()
    for _, p, _ in senders:
        p.stdin.write(b"go\n")
        p.stdin.flush()
    ends, total, sender_cpu = [], 0, 0.0
    for name, p, _n in senders:
        line = _readline(p, t_budget)
        _wait_proc(ch, name, p, t_budget)
        try:
            r = json.loads(line)
        except ValueError:
            raise BenchError(f"{name}: bad result {line!r}\n{ch.errors(name)}") from None
        ends.append(r["end"])
        total += r["sent"]
        sender_cpu += r["cpu"]
    routed_rate = total / (max(ends) - t0)
    cpu = _cpu_used(watched, max(ends) - t0)

    # ---- 3. VM paths on the same kernel: memfs (a pager) and a VM client
    progress("vm: starting memfs (--direct-io: io_write fills its page store)")
    mp = ch.start(MEMFS_NAME, [sys.executable, "-m", "translators.memfs", "--run-dir",
                               str(tmp), "--name", MEMFS_NAME, "--direct-io",
                               "--stats-interval", "0"])
    _wait_for(lambda: (tmp / f"{MEMFS_NAME}.ready").exists(), 30, "memfs ready", mp, ch,
              MEMFS_NAME)
    progress(f"vm: {args.rounds} resident vm_reads, {args.faults} cold faults from memfs "
             f"({args.fault_pages} pages per file)")
    vp = ch.role("vmclient", "vmclient", tmp, "vmclient", MEMFS_NAME, args.rounds,
                 args.faults, args.fault_pages, tmp / "vm.json")
    _wait_proc(ch, "vmclient", vp, t_budget)
    vm = json.loads((tmp / "vm.json").read_text())

    floor_half(1)

    # ---- 4. the VM map's lookup structures (in-process, no kernel, no floor ratio)
    progress("vm: map lookups, list and tree, 100 / 10k / 100k entries")
    lp = ch.role("maplookup", "maplookup", int(args.quick), tmp / "maplookup.json")
    _wait_proc(ch, "maplookup", lp, t_budget)
    lookups = json.loads((tmp / "maplookup.json").read_text())

    # ---- 5. kernel RSS per physical page: a kernel of RSS_PAGES frames, (nearly) all
    # holding data
    rss = _measure_rss(args, progress, tmp, ch)

    # ---- 6. ext2fs write-back: data_return clustering 1 vs 32 (kernel config)
    ext2 = _measure_ext2(args, progress, tmp, ch)
    progress("done")
    fr = _latency([x for part in floor_parts for x in part["samples"]])
    fl = (sum(part["stream_n"] for part in floor_parts)
          / sum(part["stream_s"] for part in floor_parts))

    def row(name, value, unit, ratio):
        return {"name": name, "value": round(value, 3), "unit": unit,
                "floor_ratio": None if ratio is None else round(ratio, 3)}

    return [
        row("floor.rtt_p50", fr["p50_us"], "us", None),
        row("floor.rtt_p99", fr["p99_us"], "us", None),
        row("floor.pipelined_rate", fl, "msg/s", None),
        row("kernel.null_rpc_p50", kern["null"]["p50_us"], "us",
            kern["null"]["p50_us"] / fr["p50_us"]),
        row("kernel.null_rpc_p99", kern["null"]["p99_us"], "us",
            kern["null"]["p99_us"] / fr["p99_us"]),
        row("kernel.echo_4k_rpc_p50", kern["echo"]["p50_us"], "us",
            kern["echo"]["p50_us"] / fr["p50_us"]),
        row("kernel.echo_4k_rpc_p99", kern["echo"]["p99_us"], "us",
            kern["echo"]["p99_us"] / fr["p99_us"]),
        row("kernel.routed_rate", routed_rate, "msg/s", routed_rate / fl),
        row("kernel.kobject_rpc_p50", kern["kobject"]["p50_us"], "us",
            kern["kobject"]["p50_us"] / fr["p50_us"]),
        row("kernel.kobject_rpc_p99", kern["kobject"]["p99_us"], "us",
            kern["kobject"]["p99_us"] / fr["p99_us"]),
        # Is the kernel the bottleneck of the routed stream?  100 = one core, busy.
        row("info.routed_kernel_cpu", cpu["kernel"], "%core", None),
        row("info.routed_server_cpu", cpu["server"], "%core", None),
        # Kernel CPU per routed message: what caps the routed rate when the kernel has
        # a core to itself (1e6 / this = messages/s).
        row("info.routed_kernel_us_per_msg", cpu["kernel"] * 1e4 / routed_rate, "us", None),
        row("info.routed_senders_cpu", 100.0 * sender_cpu / (max(ends) - t0), "%core", None),
        row("info.host_cores", os.cpu_count() or 1, "cores", None),
    ] + _vm_rows(row, fr, vm, lookups, rss) + _ext2_rows(row, ext2, args.ext2_mib)


def _measure_rss(args, progress, tmp: Path, ch: Children) -> dict:
    """Start a kernel with RSS_PAGES physical pages, have a task write (nearly) every
    frame with 4 MiB vm_writes, and read the kernel's RSS while the task holds them."""
    import psutil

    kdir = tmp / "k256"
    kdir.mkdir()
    conf = kdir / "kernel.toml"
    conf.write_text(f"[kernel]\nphysical_pages = {RSS_PAGES}\n")
    progress(f"rss: starting a kernel with {RSS_PAGES} physical pages")
    kp = ch.start("kernel256k", [sys.executable, "-m", "kernel", "--run-dir", str(kdir),
                                 "--config", str(conf)])
    try:
        _wait_for(lambda: (kdir / "kernel.ready").exists(), 60, "kernel (256k) ready", kp, ch,
                  "kernel256k")
        kproc = psutil.Process(kp.pid)
        idle = kproc.memory_info().rss
        progress(f"rss: writing {RSS_PAGES * PAGE_SIZE >> 20} MiB in "
                 f"{RSS_CHUNK >> 20} MiB vm_writes")
        tp = ch.role("toucher", "toucher", kdir, "toucher", RSS_CHUNK, stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE)
        line = _readline(tp, args.timeout)
        try:
            r = json.loads(line)
        except ValueError:
            raise BenchError(f"toucher: bad result {line!r}\n{ch.errors('toucher')}") from None
        r["rss"] = kproc.memory_info().rss
        r["idle_rss"] = idle
        tp.stdin.write(b"done\n")
        tp.stdin.flush()
        _wait_proc(ch, "toucher", tp, 60)
        return r
    finally:
        ch.stop(kp)  # give its gigabyte back now


def _ext2_stats(log: Path, min_syncs: int) -> dict | None:
    """ext2fs's last "stats" log record once its counter of syncs reached ``min_syncs``."""
    last = None
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and r.get("event") == "stats" and r.get("syncs", 0) >= min_syncs:
            last = r
    return last


def _measure_ext2(args, progress, tmp: Path, ch: Children) -> dict:
    """For each data_return cluster size: a fresh kernel with that data_return_cluster and
    a small physical memory, a fresh ext2fs (image 2x the file, no periodic sync), a
    sequential write of --ext2-mib MiB in 1 MiB io_writes, then fsys_syncfs.  Returns,
    per cluster size, the kernel's VM deltas and ext2fs's counters."""
    res = {}
    for cluster in EXT2_CLUSTERS:
        d = tmp / f"ext2c{cluster}"
        d.mkdir()
        conf = d / "kernel.toml"
        conf.write_text(f"[kernel]\nphysical_pages = {args.ext2_pages}\n"
                        f"data_return_cluster = {cluster}\n")
        progress(f"ext2: kernel ({args.ext2_pages} pages, data_return_cluster {cluster}), "
                 f"ext2fs, {args.ext2_mib} MiB sequential write + fsys_syncfs")
        kn, en, wn = f"kernel-ext2c{cluster}", f"ext2fs-c{cluster}", f"ext2writer-c{cluster}"
        kp = ch.start(kn, [sys.executable, "-m", "kernel", "--run-dir", str(d),
                           "--config", str(conf)])
        try:
            _wait_for(lambda d=d: (d / "kernel.ready").exists(), 60, "ext2 kernel ready", kp, ch,
                      kn)
            ep = ch.start(en, [sys.executable, "-m", "translators.ext2fs", "--run-dir",
                               str(d), "--name", EXT2_NAME, "--size-mib",
                               str(max(64, 2 * args.ext2_mib)), "--sync-interval", "0",
                               "--stats-interval", "0.2"])
            _wait_for(lambda d=d: (d / f"{EXT2_NAME}.ready").exists(), 60, "ext2fs ready", ep,
                      ch, en)
            wp = ch.role(wn, "ext2writer", d, "ext2writer", EXT2_NAME, args.ext2_mib,
                         d / "writer.json")
            _wait_proc(ch, wn, wp, args.timeout)
            r = json.loads((d / "writer.json").read_text())
            r["ext2fs"] = _wait_for(lambda d=d: _ext2_stats(d / f"{EXT2_NAME}.log", 1), 30,
                                    "ext2fs stats after the sync", ep, ch, en)
            res[cluster] = r
            ch.stop(ep)
        finally:
            ch.stop(kp)
    return res


def _ext2_rows(row, ext2: dict, mib: int) -> list[dict]:
    out = []
    for cluster in EXT2_CLUSTERS:
        r = ext2[cluster]
        base = f"ext2.seqwrite_{mib}m_cluster{cluster}"
        e = r["ext2fs"]
        secs = r["write_s"] + r["sync_s"]
        out += [
            row(f"{base}_data_returns", r["vm"]["data_returns"], "msgs", None),
            row(f"{base}_disk_writes", e["disk_writes"], "writes", None),
            row(f"{base}_mib_per_s", mib / secs, "MiB/s", None),
            row(f"info.{base[5:]}_ext2fs_data_returns", e["data_returns"], "msgs", None),
            row(f"info.{base[5:]}_blocks_written", e["blocks_written"], "blocks", None),
            row(f"info.{base[5:]}_pageouts", r["vm"]["pageouts"], "pages", None),
        ]
    lo, hi = EXT2_CLUSTERS[0], EXT2_CLUSTERS[-1]
    w_lo, w_hi = ext2[lo]["ext2fs"]["disk_writes"], ext2[hi]["ext2fs"]["disk_writes"]
    out.append(row(f"ext2.seqwrite_{mib}m_disk_write_ratio", w_lo / max(1, w_hi), "x", None))
    return out


def _vm_rows(row, fr, vm, lookups, rss) -> list[dict]:
    res, cold = vm["resident"], vm["cold"]
    out = [
        row("vm.resident_read_4k_p50", res["p50_us"], "us", res["p50_us"] / fr["p50_us"]),
        row("vm.resident_read_4k_p99", res["p99_us"], "us", res["p99_us"] / fr["p99_us"]),
        row("vm.cold_fault_memfs_p50", cold["p50_us"], "us", cold["p50_us"] / fr["p50_us"]),
        row("vm.cold_fault_memfs_p99", cold["p99_us"], "us", cold["p99_us"] / fr["p99_us"]),
        # Every timed read was a data_request to memfs (checked per file by the client).
        row("info.cold_fault_data_requests", cold["data_requests"], "pages", None),
    ]
    label = {100: "100", 10_000: "10k", 100_000: "100k"}
    for s in ("list", "tree"):
        for n in (100, 10_000, 100_000):
            out.append(row(f"vm.map_lookup_{s}_{label[n]}", lookups[f"{s}_{n}"]["ns"], "ns",
                           None))
    # Growth 100 -> 100k entries against log(100k)/log(100) = 2.5: about 1 means the
    # lookup is logarithmic (a linear one would be 1000 / 2.5 = 400).
    growth = lookups["tree_100000"]["ns"] / lookups["tree_100"]["ns"]
    out.append(row("vm.map_lookup_tree_growth", growth, "x", None))
    log_ratio = math.log(100_000) / math.log(100)
    out.append(row("vm.map_lookup_tree_growth_per_log", growth / log_ratio, "x", None))
    # RSS per page as if every frame held data: the frames the toucher left free (the
    # pageout daemon's free target) are counted at 4 KiB each.
    n, touched = rss["physical_pages"], rss["touched"]
    full = rss["rss"] + (n - touched) * PAGE_SIZE
    out += [
        row("vm.kernel_rss_per_page_256k", full / n / 1024, "KiB", None),
        row("info.rss_256k_kernel_mib", rss["rss"] / 2**20, "MiB", None),
        row("info.rss_256k_idle_mib", rss["idle_rss"] / 2**20, "MiB", None),
        row("info.rss_256k_touched_pages", touched, "pages", None),
        row("info.rss_256k_touch_s", rss["secs"], "s", None),
    ]
    return out


if __name__ == "__main__":
    role_main(sys.argv[1:])
