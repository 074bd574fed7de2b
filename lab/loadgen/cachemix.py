"""The cachemix workload: a clean file cache and anonymous memory competing for the
same physical memory (issue 10's E5: which does the pageout daemon take first?).

Each task has ``--file-threads`` readers and the rest of its ``--threads`` anonymous
writers, in four phases (every thread of the task meets at each boundary):

1. files: each reader writes a file through ext2fs (together ``--cache-factor`` x
   physical memory), the task syncs them (fsys_syncfs, waiting) so their pages are
   clean, and each reader reads its file back once and verifies it;
2. anon: the writers vm_allocate their share (together ``--anon-factor`` x physical
   memory) and vm_write every page once; the file cache, now the older, shrinks;
3. re-read: the readers read their files again ``--read-passes`` times, verifying
   every byte, while the anonymous pages lie idle: now the file pages are the hot
   ones, and what the daemon takes — clean file pages, or idle anonymous pages it must
   write to the default pager — is the policy's choice;
4. verify: the writers read every anonymous page back (vm_read) and compare it.

The task reports (``task_extra``) the Unix time phases 2, 3 and 4 started (summary
keys ``anon_start_at``, ``reread_start_at``, ``reread_end_at``), so that a recorder's
samples can be split into the phases.
"""

from __future__ import annotations

import threading
import time

from lab.client import ClusterError
from lab.loadgen.ext2 import Ext2File, WholeFileWorkload, file_chunks
from lab.loadgen.pages import MIB, check_pages, page_pattern
from lab.loadgen.table import dash
from lab.loadgen.workload import positive_float, positive_int, workload
from protocol.defs import fs as F
from protocol.defs import mach as V
from protocol.vm_param import PAGE_SIZE as PAGE

ANON_KEY = 1 << 40  # anonymous pages' keys never meet a file page's


def shares(total_pages: int, parts: int) -> int:
    """Pages of each of ``parts`` equal shares of ``total_pages`` (rounded up, >= 1)."""
    return max(1, -(-total_pages // max(1, parts)))


@workload
class CacheMix(WholeFileWorkload):
    """Clean file cache (readers of ext2fs files, re-reading) against anonymous memory
    (writers of vm_allocated memory), both larger than their share."""

    name = "cachemix"
    help = "clean file cache re-read through ext2fs while anonymous memory grows; verify"

    def add_arguments(self, p):
        g = p.add_argument_group("cachemix")
        g.add_argument("--file-threads", type=positive_int, default=2, metavar="R",
                       help="readers per task (the other --threads write anonymous "
                            "memory; default 2)")
        g.add_argument("--cache-factor", type=positive_float, default=0.75, metavar="F",
                       help="all files together are F x physical memory (default 0.75)")
        g.add_argument("--anon-factor", type=positive_float, default=1.0, metavar="F",
                       help="all anonymous memory together is F x physical memory "
                            "(default 1)")
        g.add_argument("--read-passes", type=positive_int, default=2, metavar="N",
                       help="re-reads of each file while the anonymous pages lie idle "
                            "(default 2)")
        self.add_ext2_common(g, chunk_kib=64)

    def check_args(self, args, parser):
        super().check_args(args, parser)
        if args.threads <= args.file_threads:
            parser.error(f"--threads ({args.threads}) must exceed --file-threads "
                         f"({args.file_threads}): the rest write anonymous memory")

    def prepare(self, cluster, args):
        prep = super().prepare(cluster, args)
        phys = prep["vm_before"]["physical_pages"]
        readers = args.tasks * args.file_threads
        writers = args.tasks * (args.threads - args.file_threads)
        prep["file_pages"] = shares(int(args.cache_factor * phys), readers)
        prep["anon_pages"] = shares(int(args.anon_factor * phys), writers)
        if not self.default_pager_present(cluster):
            raise ClusterError("no default pager registered: anonymous memory beyond "
                               "physical memory cannot be paged out")
        return prep

    def watch(self, cluster, args, prepared):
        return {**super().watch(cluster, args, prepared),
                "defpager": cluster.process_pid(args.pager_name)}

    def task_setup(self, rt, args, index, prepared):
        st = super().task_setup(rt, args, index, prepared)
        st.readers = threading.Barrier(args.file_threads)
        st.all = threading.Barrier(args.threads)
        st.marks = {}  # phase -> the Unix time it started
        return st

    def meet(self, args, st, barrier):
        try:
            barrier.wait(args.call_timeout)
        except threading.BrokenBarrierError:
            st.add(barrier_broken=1)

    def make_op(self, rt, args, st, task, thread):
        if thread < args.file_threads:
            return self.stepper(self.reader_steps(rt, args, st, task, thread))
        return self.stepper(self.writer_steps(rt, args, st, task, thread))

    def phase(self, args, st, mark: str | None = None):
        """Every thread of the task meets here between two phases; the first past the
        barrier notes the time the next phase starts as ``mark``."""
        self.meet(args, st, st.all)
        if mark:
            with st.lock:
                st.marks.setdefault(mark, time.time())

    def reader_steps(self, rt, args, st, task, thread):
        """Write the file, sync (one reader per task), read it once; let the writers
        fill their memory; then re-read it --read-passes times while their pages lie idle."""
        f = Ext2File(st.nonce, task, thread, 0)
        chunks = file_chunks(st.prepared["file_pages"], args.chunk_pages)

        def sync():
            self.meet(args, st, st.readers)
            if thread == 0:
                t0 = time.perf_counter()
                F.fsys_syncfs(st.root, 1, 0, timeout=args.call_timeout, rt=rt)
                st.add(syncfs=1, syncfs_s=time.perf_counter() - t0)
            self.meet(args, st, st.readers)

        yield lambda: self.open(rt, args, st, f)
        yield from self.write_steps(rt, args, st, f, task, thread, chunks)
        yield sync
        yield from self.read_steps(rt, args, st, f, task, thread, chunks)
        yield lambda: self.phase(args, st, "anon_start")
        yield lambda: self.phase(args, st, "reread_start")
        for _ in range(args.read_passes):
            yield from self.read_steps(rt, args, st, f, task, thread, chunks)
            st.add(rereads=1)
        yield lambda: self.phase(args, st, "reread_end")
        yield lambda: self.close(rt, args, st, f)

    def writer_steps(self, rt, args, st, task, thread):
        """Once the readers' cache is clean: vm_allocate, write every page; leave the
        pages idle while the readers re-read; then read every page back and compare,
        vm_deallocate."""
        pages, ch = st.prepared["anon_pages"], args.chunk_pages
        me, timeout = rt.task_self, args.call_timeout
        region = {"addr": 0}

        def key(pg):
            return task, ANON_KEY | (thread << 32) | pg

        def start():
            self.phase(args, st, "anon_start")
            region["addr"] = V.vm_allocate(me, 0, pages * PAGE, True, timeout=timeout, rt=rt)

        def write(first, n):
            data = b"".join(page_pattern(st.nonce, *key(pg), 0)
                            for pg in range(first, first + n))
            t0 = time.perf_counter()
            V.vm_write(me, region["addr"] + first * PAGE, data, timeout=timeout, rt=rt)
            st.add(anon_pages_written=n, anon_write_s=time.perf_counter() - t0)
            st.progress += n

        def verify(first, n):
            t0 = time.perf_counter()
            got = V.vm_read(me, region["addr"] + first * PAGE, n * PAGE, timeout=timeout,
                            rt=rt)
            st.add(anon_verify_s=time.perf_counter() - t0)
            return check_pages(st, got, first, n, 0, key, "vm_read", "anon_pages_verified")

        def finish():
            if region["addr"]:
                V.vm_deallocate(me, region["addr"], pages * PAGE, timeout=timeout, rt=rt)

        chunks = file_chunks(pages, ch)
        yield start
        for c in chunks:
            yield lambda c=c: write(*c)  # a failed write is counted; the rest still runs
        yield lambda: self.phase(args, st, "reread_start")
        yield lambda: self.phase(args, st, "reread_end")
        for c in chunks:
            yield lambda c=c: verify(*c)
        yield finish

    def task_extra(self, st):
        return dict(st.marks)

    def summarize(self, s, args, prepared):
        self.summarize_ext2(s, args, prepared)
        c = s["counters"]
        phys = prepared["vm_before"]["physical_pages"]
        s["physical_pages"] = phys
        s["readers"] = args.tasks * args.file_threads
        s["writers"] = args.tasks * (args.threads - args.file_threads)
        s["file_bytes"] = prepared["file_pages"] * PAGE
        s["anon_pages_per_writer"] = prepared["anon_pages"]
        s["cache_factor"] = round(prepared["file_pages"] * s["readers"] / phys, 3)
        s["anon_factor"] = round(prepared["anon_pages"] * s["writers"] / phys, 3)
        s["rereads"] = c.get("rereads", 0)
        s["read_passes"] = args.read_passes
        s["anon_pages_written"] = c.get("anon_pages_written", 0)
        s["anon_pages_verified"] = c.get("anon_pages_verified", 0)
        s["syncfs"] = c.get("syncfs", 0)
        for mark in ("anon_start", "reread_start", "reread_end"):
            ts = [e[mark] for e in prepared.get("task_extra", ()) if e.get(mark)]
            s[f"{mark}_at"] = min(ts) if ts else None
        s["barrier_broken"] = c.get("barrier_broken", 0)
        a = prepared.get("swap_after") or {}
        b = prepared.get("swap_before") or {}
        s["defpager_page_writes"] = (a["page_writes"] - b.get("page_writes", 0)
                                     if "page_writes" in a else None)

    def check(self, s):
        files = s["readers"]
        anon = s["writers"] * s["anon_pages_per_writer"]
        if s["barrier_broken"]:
            return f"phases out of step: {s['barrier_broken']} barrier wait(s) timed out"
        # every file written once, read once before the writers, --read-passes times after
        return self.check_work(s, {"files_created": files, "syncfs": s["tasks"],
                                   "bytes_written": files * s["file_bytes"],
                                   "bytes_verified": files * s["file_bytes"]
                                   * (1 + s["read_passes"]),
                                   "anon_pages_written": anon,
                                   "anon_pages_verified": anon})

    def table(self, s):
        return [("file cache", f"{s['readers']} files x {s['file_bytes'] / MIB:.2f} MiB = "
                               f"{s['cache_factor']}x physical, {s['rereads']} re-reads"),
                ("anonymous", f"{s['writers']} writers x "
                              f"{s['anon_pages_per_writer'] * PAGE / MIB:.2f} MiB = "
                              f"{s['anon_factor']}x physical; written "
                              f"{s['anon_pages_written']}, verified "
                              f"{s['anon_pages_verified']} pages"),
                ("default pager", f"{dash(s['defpager_page_writes'])} page writes"),
                ] + self.ext2_rows(s) + self.vm_rows(s)
