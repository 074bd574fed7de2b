"""ext2fs workloads: seqwrite, randwrite, churn and dirtystorm, files on a file system
server (ext2fs by default) made with dir_lookup(O_CREAT), written with io_write and
verified byte for byte through io_read, with the kernel's VM counters and the server's
own (its latest "stats" log line) before and after."""

from __future__ import annotations

import random
import threading
import time

from lab.loadgen.files import call_all, create_file
from lab.loadgen.logstats import server_stats
from lab.loadgen.pages import MIB, TaskState, page_pattern, pages_of
from lab.loadgen.table import dash
from lab.loadgen.vmworkload import VMWorkload, server_row
from lab.loadgen.workload import (
    Done,
    VerifyError,
    positive_float,
    positive_int,
    task_look_up,
    workload,
)
from protocol.defs import fs as F
from protocol.defs import mach as V
from protocol.defs.mach_port import mach_port_deallocate
from protocol.kern_return import MachError
from protocol.message import MAX_OOL_BYTES
from protocol.vm_param import PAGE_SIZE as PAGE

EXT2_COUNTERS = ("data_returns", "pages_returned", "disk_writes", "blocks_written",
                 "blocks_allocated", "read_page", "unlock_page", "hole_pages",
                 "pagers_created", "syncs", "nodes_freed", "nodes")


class Ext2File:
    """One file a thread works on; named per run, task, thread and index."""

    def __init__(self, nonce: int, task: int, thread: int, i: int):
        self.name = f"lg-{nonce:016x}-{task}-{thread}-{i}"
        self.port = 0
        self.failed = False


class Ext2Workload(VMWorkload):
    """What seqwrite, randwrite, churn and dirtystorm share: a file system server (ext2fs
    by default), files made with dir_lookup(O_CREAT) and written with io_write, every
    byte verified through io_read, the kernel's VM counters and ext2fs's own (its latest
    "stats" log line) before and after."""

    progress_unit = "bytes"

    def add_ext2_common(self, g, chunk_kib=1024):
        g.add_argument("--server", default="ext2fs", metavar="NAME",
                       help="file system to look up in the name server (default ext2fs)")
        g.add_argument("--chunk-kib", type=positive_int, default=chunk_kib, metavar="K",
                       help=f"KiB per io_write / io_read (default {chunk_kib})")
        g.add_argument("--call-timeout", type=positive_float, default=120.0, metavar="S",
                       help="timeout of each call (default 120: writes wait for pageout)")
        g.add_argument("--keep-files", action="store_true",
                       help="leave the files in place (default: dir_unlink at the end)")
        g.add_argument("--stats-wait", type=float, default=3.0, metavar="S",
                       help="seconds to wait for a fresh ext2fs stats log line (default 3)")
        self.add_pager_name(g)

    def check_args(self, args, parser):
        if args.chunk_kib * 1024 > MAX_OOL_BYTES:
            parser.error(f"--chunk-kib at most {MAX_OOL_BYTES // 1024}")
        args.passes = 1
        args.chunk_pages = max(1, args.chunk_kib * 1024 // PAGE)

    def prepare(self, cluster, args):
        cluster.look_up(args.server)
        prep = self.prepare_vm(cluster, args)
        prep["server_pid"] = cluster.process_pid(args.server)
        prep["ext2_before"] = server_stats(args.run_dir, args.server, EXT2_COUNTERS)
        return prep

    def watch(self, cluster, args, prepared):
        return {"server": prepared["server_pid"]}

    def finish(self, cluster, args, prepared):
        t = time.time()
        super().finish(cluster, args, prepared)
        prepared["ext2_after"] = server_stats(args.run_dir, args.server, EXT2_COUNTERS, since=t,
                                              wait=args.stats_wait)

    def task_setup(self, rt, args, index, prepared):
        root = task_look_up(rt, args.server, args.call_timeout)
        return TaskState(root=root, nonce=prepared["nonce"], task=index, prepared=prepared)

    # ---- file helpers (task side)

    def open(self, rt, args, st, f: Ext2File, excl=False):
        """dir_lookup with O_CREAT (and O_EXCL with ``excl``): sets the file's port;
        MachError or VerifyError (a retry, no port) marks the file failed."""
        flags = F.O_CREAT | F.O_READ | F.O_WRITE | (F.O_EXCL if excl else 0)
        t0 = time.perf_counter()
        create_file(rt, st.root, f, flags, args.call_timeout)
        st.add(files_created=1, open_s=time.perf_counter() - t0)

    def write(self, rt, args, st, f, offset: int, data: bytes):
        """io_write ``data`` at ``offset``; a Mach error or a short write (VerifyError)
        marks the file failed."""
        t0 = time.perf_counter()
        try:
            n = F.io_write(f.port, data, offset, timeout=args.call_timeout, rt=rt)
        except MachError:
            f.failed = True
            raise
        st.add(bytes_written=n, writes=1, write_s=time.perf_counter() - t0)
        st.progress += n
        if n != len(data):
            f.failed = True
            raise VerifyError(f"io_write {f.name} @{offset}: {n} of {len(data)} bytes",
                              count=1)

    def read_verify(self, rt, args, st, f, offset: int, want: bytes) -> int:
        """io_read ``len(want)`` bytes at ``offset`` and compare; VerifyError counts the
        differing pages."""
        t0 = time.perf_counter()
        got = F.io_read(f.port, offset, len(want), timeout=args.call_timeout, rt=rt)
        st.add(reads=1, read_s=time.perf_counter() - t0)
        st.progress += len(got)
        if got == want:
            st.add(bytes_verified=len(want))
            return len(want)
        bad = sum(1 for o in range(0, max(len(want), len(got)), PAGE)
                  if got[o:o + PAGE] != want[o:o + PAGE])
        first = next(o for o in range(0, max(len(want), len(got)), PAGE)
                     if got[o:o + PAGE] != want[o:o + PAGE])
        st.add(bytes_verified=len(want) - bad * PAGE if len(got) == len(want) else 0,
               mismatched_pages=bad)
        raise VerifyError(f"io_read {f.name} @{offset}: {len(got)} bytes back for "
                          f"{len(want)}, {bad} page(s) differ (first at "
                          f"{offset + first})", count=max(1, bad))

    def close(self, rt, args, st, f):
        """Drop the file's port and (unless --keep-files) dir_unlink it."""
        calls = []
        if f.port and not args.keep_files:
            calls.append(lambda: F.dir_unlink(st.root, f.name, timeout=args.call_timeout,
                                              rt=rt))
        if f.port:
            calls.append(lambda: mach_port_deallocate(rt.task_self, f.port,
                                                      timeout=args.call_timeout, rt=rt))
        first_err = call_all(calls)
        f.port = 0
        st.add(files_closed=1, files_unlinked=0 if args.keep_files else 1)
        if first_err is not None:
            raise first_err

    def stepper(self, steps):
        """op(seq) over a generator of callables (each returns True/int when it verified
        data): one step per operation; a failed file's remaining steps are skipped by
        the generator itself."""
        it = iter(steps)

        def op(seq):
            try:
                step = next(it)
            except StopIteration:
                raise Done from None
            return step()
        return op

    # ---- parent side

    def summarize_ext2(self, s, args, prepared):
        """The summary keys every ext2fs workload has: bytes written and verified, rates,
        the kernel's VM delta, the server's counters after and their delta."""
        self.summarize_vm(s, args, prepared)
        for k in ("passes", "chunk_pages", "swap"):
            s.pop(k, None)
        c = s["counters"]
        s["server_name"] = args.server
        s["chunk_kib"] = args.chunk_kib
        s["bytes_written"] = c.get("bytes_written", 0)
        s["bytes_verified"] = c.get("bytes_verified", 0)
        s["bytes"] = s["bytes_written"] + s["bytes_verified"]
        el = s["elapsed_s"]
        s["mib_per_s"] = round(s["bytes"] / MIB / el, 2) if el > 0 else None
        nthreads = args.tasks * args.threads
        for key, b, secs in (("write", "bytes_written", "write_s"),
                             ("read", "bytes_verified", "read_s")):
            if c.get(secs):
                s[f"{key}_mib_per_s"] = round(c.get(b, 0) / MIB / (c[secs] / nthreads), 2)
        d = (s["vm"].get("delta") or {})
        s["kernel_vm"] = {k: d.get(k) for k in ("data_returns", "data_return_pages",
                                                 "pageouts", "pageins", "data_requests")}
        b, a = prepared.get("ext2_before") or {}, prepared.get("ext2_after")
        ext2 = None
        if a is not None:
            ext2 = {"after": a, "delta": {k: a[k] - b.get(k, 0) for k in EXT2_COUNTERS
                                          if isinstance(a.get(k), int) and k != "nodes"}}
        s["ext2fs"] = ext2
        s.setdefault("server", {})

    def ext2_rows(self, s) -> list[tuple[str, str]]:
        """The summary rows every ext2fs workload shows: bytes, throughput, the kernel's
        and the server's counters, the server's threads and RSS."""
        rows = [
            ("bytes", f"written {s['bytes_written']}, verified {s['bytes_verified']}, "
                      f"mismatches {s['mismatches']}, errors {s['errors_total']}"),
            ("throughput", f"{dash(s.get('mib_per_s'))} MiB/s (write "
                           f"{dash(s.get('write_mib_per_s'))}, read+verify "
                           f"{dash(s.get('read_mib_per_s'))})"),
        ]
        kv = s["kernel_vm"]
        rows.append(("kernel vm delta", f"data_returns {dash(kv['data_returns'])} "
                     f"({dash(kv['data_return_pages'])} pages), pageouts "
                     f"{dash(kv['pageouts'])}, pageins {dash(kv['pageins'])}"))
        e = s.get("ext2fs")
        if e:
            d = e["delta"]
            rows.append((f"{s['server_name']} delta",
                         f"data_returns {dash(d.get('data_returns'))}, disk writes "
                         f"{dash(d.get('disk_writes'))} ({dash(d.get('blocks_written'))} "
                         f"blocks), syncs {dash(d.get('syncs'))}"
                         + ("" if e["after"].get("fresh") else
                            f"  (stats {e['after'].get('age_s')} s old)")))
        else:
            rows.append((f"{s['server_name']} stats", "no stats line in its log"))
        return rows + server_row(s)


def file_bytes(nonce: int, task: int, thread: int, first_page: int, npages: int) -> bytes:
    """Pages of a (task, thread)'s file: page_pattern with the thread in the page key."""
    return b"".join(page_pattern(nonce, task, (thread << 32) | pg, 0)
                    for pg in range(first_page, first_page + npages))


def file_chunks(pages: int, chunk_pages: int) -> list[tuple[int, int]]:
    """(first page, pages) of each chunk of a file of ``pages`` pages."""
    return [(first, min(chunk_pages, pages - first)) for first in range(0, pages, chunk_pages)]


class WholeFileWorkload(Ext2Workload):
    """seqwrite and dirtystorm: each task thread writes a file of --file-mib from start to
    end in --chunk-kib io_writes, then reads it back through io_read and verifies it."""

    def whole_file_steps(self, rt, args, st, task, thread, between=None, pages=None):
        """The steps of one thread: open, one io_write per chunk, ``between`` (if given,
        even after a failure), one io_read per chunk, close; a failed file's remaining
        writes and reads are skipped.  The file has ``pages`` pages (default
        --file-mib)."""
        pages = pages_of(args.file_mib) if pages is None else pages
        f = Ext2File(st.nonce, task, thread, 0)
        chunks = file_chunks(pages, args.chunk_pages)
        yield lambda: self.open(rt, args, st, f)
        yield from self.write_steps(rt, args, st, f, task, thread, chunks)
        if between is not None:
            yield between
        yield from self.read_steps(rt, args, st, f, task, thread, chunks)
        yield lambda: self.close(rt, args, st, f)

    def write_steps(self, rt, args, st, f, task, thread, chunks):
        """One io_write per chunk of (task, thread)'s file pattern, until ``f`` fails."""
        for first, n in chunks:
            if f.failed:
                break
            yield lambda first=first, n=n: self.write(
                rt, args, st, f, first * PAGE, file_bytes(st.nonce, task, thread, first, n))

    def read_steps(self, rt, args, st, f, task, thread, chunks):
        """One io_read and compare per chunk, until ``f`` fails."""
        for first, n in chunks:
            if f.failed:
                break
            yield lambda first=first, n=n: self.read_verify(
                rt, args, st, f, first * PAGE, file_bytes(st.nonce, task, thread, first, n))

    def summarize_files(self, s, args, prepared):
        """summarize_ext2, and the files' size and number."""
        self.summarize_ext2(s, args, prepared)
        s["file_bytes"] = pages_of(args.file_mib) * PAGE
        s["files"] = args.tasks * args.threads


@workload
class SeqWrite(WholeFileWorkload):
    """Sequential writers: each task thread creates a file, writes it from start to end
    in --chunk-kib io_writes, then reads it back (io_read) and compares every byte."""

    name = "seqwrite"
    help = "sequential io_write of a file per task thread, then io_read back and verify"

    def add_arguments(self, p):
        g = p.add_argument_group("seqwrite")
        g.add_argument("--file-mib", type=positive_float, default=16.0, metavar="M",
                       help="size of each file in MiB (default 16)")
        self.add_ext2_common(g)

    def make_op(self, rt, args, st, task, thread):
        return self.stepper(self.whole_file_steps(rt, args, st, task, thread))

    def summarize(self, s, args, prepared):
        self.summarize_files(s, args, prepared)

    def check(self, s):
        n = s["files"] * s["file_bytes"]
        return self.check_work(s, {"files_created": s["files"], "bytes_written": n,
                                   "bytes_verified": n})

    def table(self, s):
        return [("files", f"{s['files']} x {s['file_bytes'] / MIB:.2f} MiB, "
                          f"{s['chunk_kib']} KiB chunks")] + self.ext2_rows(s)


@workload
class RandWrite(Ext2Workload):
    """Random writers: each task thread sizes a file (file_set_size, sparse), then does
    --writes io_writes of random bytes at random offsets and sizes, applying each to a
    model of the file kept in the task; at the end the whole file is read back through
    io_read and compared with the model."""

    name = "randwrite"
    help = "random-offset io_writes into a file per task thread, verified against a model"

    def add_arguments(self, p):
        g = p.add_argument_group("randwrite")
        g.add_argument("--file-mib", type=positive_float, default=4.0, metavar="M",
                       help="size of each file in MiB (default 4)")
        g.add_argument("--writes", type=positive_int, default=200, metavar="N",
                       help="io_writes per task thread (default 200)")
        g.add_argument("--max-kib", type=positive_int, default=64, metavar="K",
                       help="largest io_write in KiB (default 64; sizes 1 byte..K KiB)")
        g.add_argument("--seed", type=int, default=None,
                       help="random seed (default: from the run's nonce)")
        self.add_ext2_common(g)

    def make_op(self, rt, args, st, task, thread):
        size = max(1, int(args.file_mib * MIB))
        seed = (args.seed if args.seed is not None else st.nonce) ^ (task << 20) ^ thread
        rng = random.Random(seed)
        model = bytearray(size)
        f = Ext2File(st.nonce, task, thread, 0)
        chunk = args.chunk_pages * PAGE

        def sized():
            t0 = time.perf_counter()
            try:
                F.file_set_size(f.port, size, timeout=args.call_timeout, rt=rt)
            except MachError:
                f.failed = True
                raise
            st.add(set_size_s=time.perf_counter() - t0)

        def one_write():
            n = rng.randint(1, min(size, args.max_kib * 1024))
            off = rng.randrange(0, size - n + 1)
            data = rng.randbytes(n)
            model[off:off + n] = data
            self.write(rt, args, st, f, off, data)

        def steps():
            yield lambda: self.open(rt, args, st, f)
            if not f.failed:
                yield sized
            for _ in range(args.writes):
                if f.failed:
                    break
                yield one_write
            for off in range(0, size, chunk):
                if f.failed:
                    break
                yield lambda off=off: self.read_verify(
                    rt, args, st, f, off, bytes(model[off:off + chunk]))
            yield lambda: self.close(rt, args, st, f)
        st.add(seeds=0)
        return self.stepper(steps())

    def summarize(self, s, args, prepared):
        self.summarize_ext2(s, args, prepared)
        s["file_bytes"] = max(1, int(args.file_mib * MIB))
        s["files"] = args.tasks * args.threads
        s["writes_per_file"] = args.writes
        s["seed"] = args.seed

    def check(self, s):
        return self.check_work(s, {"files_created": s["files"],
                                   "writes": s["files"] * s["writes_per_file"],
                                   "bytes_verified": s["files"] * s["file_bytes"]})

    def table(self, s):
        return [("files", f"{s['files']} x {s['file_bytes'] / MIB:.2f} MiB, "
                          f"{s['writes_per_file']} random writes each")] + self.ext2_rows(s)


@workload
class Churn(Ext2Workload):
    """Small-file churn: each task thread creates --files files one after another
    (dir_lookup O_CREAT|O_EXCL), writes each (io_write, 1 byte .. --max-kib KiB), looks
    it up again by name and reads it back through the new port, then unlinks it."""

    name = "churn"
    help = "create, write, look up, read back and unlink many small files"

    def add_arguments(self, p):
        g = p.add_argument_group("churn")
        g.add_argument("--files", type=positive_int, default=100, metavar="N",
                       help="files per task thread (default 100)")
        g.add_argument("--max-kib", type=positive_int, default=16, metavar="K",
                       help="largest file in KiB (default 16)")
        self.add_ext2_common(g, chunk_kib=64)

    def make_op(self, rt, args, st, task, thread):
        rng = random.Random(st.nonce ^ (task << 20) ^ thread)

        def one_file(i):
            f = Ext2File(st.nonce, task, thread, i)
            data = rng.randbytes(rng.randint(1, args.max_kib * 1024))
            self.open(rt, args, st, f, excl=True)
            try:
                self.write(rt, args, st, f, 0, data)
                # Found again by name: the directory entry points at the same file.
                retry, rname, port = F.dir_lookup(st.root, f.name, F.O_READ, 0,
                                                  timeout=args.call_timeout, rt=rt)
                if retry != F.FS_RETRY_NORMAL or not port:
                    raise VerifyError(f"dir_lookup {f.name} again: retry {retry} "
                                        f"port {port}", count=1)
                g = Ext2File(st.nonce, task, thread, i)
                g.port = port
                try:
                    done = self.read_verify(rt, args, st, g, 0, data)
                finally:
                    mach_port_deallocate(rt.task_self, port, timeout=args.call_timeout,
                                         rt=rt)
            finally:
                self.close(rt, args, st, f)
            return done

        def steps():
            for i in range(args.files):
                yield lambda i=i: one_file(i)
        return self.stepper(steps())

    def summarize(self, s, args, prepared):
        self.summarize_ext2(s, args, prepared)
        s["files"] = args.tasks * args.threads * args.files
        s["files_created"] = s["counters"].get("files_created", 0)
        s["files_unlinked"] = s["counters"].get("files_unlinked", 0)
        s["keep_files"] = args.keep_files

    def check(self, s):
        want = {"files_created": s["files"], "files_closed": s["files"]}
        if not s.get("keep_files"):
            want["files_unlinked"] = s["files"]
        return self.check_work(s, want)

    def table(self, s):
        return [("files", f"{s['files']} created, {s['files_unlinked']} unlinked")] \
            + self.ext2_rows(s)


@workload
class DirtyStorm(WholeFileWorkload):
    """Dirty-page storm: tasks x threads each write every page of their own file once
    (io_write of --chunk-kib, as fast as they can), building up dirty pages in the
    kernel's cache; then each task calls fsys_syncfs (wait) once all its threads wrote,
    and every thread reads its file back through io_read and compares it."""

    name = "dirtystorm"
    help = "many writers dirty distinct pages of their own files, fsys_syncfs, verify"

    def add_arguments(self, p):
        g = p.add_argument_group("dirtystorm")
        g.add_argument("--file-mib", type=positive_float, default=2.0, metavar="M",
                       help="size of each thread's file in MiB (default 2)")
        self.add_ext2_common(g, chunk_kib=16)

    def task_setup(self, rt, args, index, prepared):
        st = super().task_setup(rt, args, index, prepared)
        st.barrier = threading.Barrier(args.threads)
        return st

    def make_op(self, rt, args, st, task, thread):
        def meet():
            try:
                st.barrier.wait(args.call_timeout)
            except threading.BrokenBarrierError:
                st.add(barrier_broken=1)

        def sync():
            """Every thread of the task has written: one fsys_syncfs for the task."""
            meet()
            if thread == 0:
                s0 = V.vm_statistics(rt.task_self, timeout=args.call_timeout, rt=rt)
                t0 = time.perf_counter()
                F.fsys_syncfs(st.root, 1, 0, timeout=args.call_timeout, rt=rt)
                st.add(syncfs=1, syncfs_s=time.perf_counter() - t0,
                       dirty_before_sync=s0.get("dirty_count", 0))
            meet()

        return self.stepper(self.whole_file_steps(rt, args, st, task, thread, between=sync))

    def summarize(self, s, args, prepared):
        self.summarize_files(s, args, prepared)
        c = s["counters"]
        s["syncfs"] = c.get("syncfs", 0)
        s["dirty_before_sync_max"] = c.get("dirty_before_sync", 0)

    def check(self, s):
        n = s["files"] * s["file_bytes"]
        return self.check_work(s, {"files_created": s["files"], "bytes_written": n,
                                   "syncfs": s["tasks"], "bytes_verified": n})

    def table(self, s):
        return [("files", f"{s['tasks']} tasks x {s['threads_per_task']} threads x "
                          f"{s['file_bytes'] / MIB:.2f} MiB, {s['chunk_kib']} KiB writes"),
                ("fsys_syncfs", f"{s['syncfs']} (dirty pages before, summed: "
                                f"{s['dirty_before_sync_max']})")] + self.ext2_rows(s)
