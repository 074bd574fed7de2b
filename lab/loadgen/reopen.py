"""The reopen workload: files opened, read and closed in a loop, so that their memory
objects enter and leave the kernel's object cache (issue 10's E4), beside files held
open and read as often.

Each task (one thread: the reads are sequential, so that the kernel's counters taken
between them belong to one set of files) makes ``--files`` files and ``--held`` files
of ``--file-kib`` KiB through ext2fs, syncs them (fsys_syncfs, waiting: their pages are
clean) and closes the first set.  Then ``--passes`` times:

- the reopened set: each file is opened (dir_lookup O_READ), read whole (io_read) and
  compared, and closed (its port deallocated).  Closing the last open of a file makes
  ext2fs unmap its window on it, the kernel caches the object (vm_object_deallocate)
  and — with deactivate_on_cache — deactivates every resident page; the next open's
  first io_read finds the object in the cache (vm_object_enter);
- the held set: each file, open since it was made, is read whole and compared.  Its
  objects stay mapped: they never enter the cache.

Around each set's reads the task takes vm_statistics: the deltas (data_requests: pages
the kernel had to ask ext2fs for again; reactivations; objects entering the cache;
pages deactivated on entry; cache lookups and hits) are summed per set over the passes.
The task reports the Unix time the loop started and ended (``loop_start_at``,
``loop_end_at``) so that a recorder's samples can be cut to it, and the CPU seconds the
kernel and the file system used in between (psutil: ``kernel_cpu_s``, ``server_cpu_s``).
"""

from __future__ import annotations

import time

import psutil

from lab.loadgen.ext2 import Ext2File, Ext2Workload, file_bytes, file_chunks
from lab.loadgen.files import call_all, create_file
from lab.loadgen.table import dash
from lab.loadgen.workload import positive_int, workload
from protocol.defs import fs as F
from protocol.defs import mach as V
from protocol.defs.mach_port import mach_port_deallocate
from protocol.vm_param import PAGE_SIZE as PAGE

SETS = ("reopen", "held")
# vm_statistics counters whose deltas are summed per set
KERNEL_KEYS = ("data_requests", "pageins", "reactivations", "cache_entered",
               "cache_deactivated", "cache_deactivate_ms", "lookups", "hits")
HELD_INDEX = 1 << 20  # held files' index (in names and page keys) starts here
MAX_FILES = 4096  # per task and set: the ports a task holds stay bounded


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` (psutil), None if unknown."""
    if not pid:
        return None
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return t.user + t.system


def ratio(part, whole, digits: int = 4):
    """part / whole rounded, None when whole is 0 or either is unknown."""
    if part is None or not whole:
        return None
    return round(part / whole, digits)


@workload
class Reopen(Ext2Workload):
    """Files opened, read whole and closed in a loop (their objects enter and leave the
    object cache), beside files held open and read as often; every byte verified."""

    name = "reopen"
    help = "open, read and close files in a loop (object cache entries), beside held files"

    def add_arguments(self, p):
        g = p.add_argument_group("reopen")
        g.add_argument("--files", type=positive_int, default=16, metavar="N",
                       help="files per task opened, read and closed each pass (default 16)")
        g.add_argument("--held", type=int, default=0, metavar="N",
                       help="files per task held open and read each pass (default 0)")
        g.add_argument("--held-every", type=positive_int, default=1, metavar="K",
                       help="read each held file every K-th pass, a K-th of them each "
                            "pass in turn (default 1: all of them every pass)")
        g.add_argument("--file-kib", type=positive_int, default=256, metavar="K",
                       help="size of each file in KiB (default 256)")
        # (dest: the ext2fs family's check_args sets args.passes to 1)
        g.add_argument("--passes", dest="reopen_passes", type=positive_int, default=10,
                       metavar="P", help="passes over the files (default 10)")
        self.add_ext2_common(g)

    def prepare(self, cluster, args):
        prep = super().prepare(cluster, args)
        prep["kernel_pid"] = cluster.process_pid("kernel")
        return prep

    def check_args(self, args, parser):
        super().check_args(args, parser)
        if args.threads != 1:
            parser.error("reopen runs one thread per task (--threads 1): the kernel's "
                         "counters taken between its reads must belong to one set")
        if not 0 <= args.held <= MAX_FILES or args.files > MAX_FILES:
            parser.error(f"--files and --held at most {MAX_FILES} (--held at least 0)")
        args.file_pages = max(1, -(-args.file_kib * 1024 // PAGE))

    def task_setup(self, rt, args, index, prepared):
        st = super().task_setup(rt, args, index, prepared)
        st.kernel = {s: dict.fromkeys(KERNEL_KEYS + ("pages_read",), 0) for s in SETS}
        st.per_pass = []  # [reopen data_requests, held data_requests] per pass
        st.marks = {}
        st.cpu = {}  # "kernel_loop_start" ... -> CPU seconds then
        return st

    def make_op(self, rt, args, st, task, thread):
        return self.stepper(self.steps(rt, args, st, task))

    # ---- task side

    def files(self, st, task, args):
        reopen = [Ext2File(st.nonce, task, i, 0) for i in range(args.files)]
        held = [Ext2File(st.nonce, task, HELD_INDEX + i, 0) for i in range(args.held)]
        return reopen, held

    def key(self, f) -> int:
        """The page-pattern slot of a file (its index, in the thread position)."""
        return int(f.name.split("-")[3])

    def stats(self, rt, args) -> dict:
        return V.vm_statistics(rt.task_self, timeout=args.call_timeout, rt=rt)

    def read_file(self, rt, args, st, task, f) -> int:
        """io_read the whole file in chunks and compare every page; the bytes
        verified."""
        done = 0
        for first, n in file_chunks(args.file_pages, args.chunk_pages):
            want = file_bytes(st.nonce, task, self.key(f), first, n)
            done += self.read_verify(rt, args, st, f, first * PAGE, want)
        return done

    def reopen_file(self, rt, args, st, task, f):
        """dir_lookup O_READ, read whole, deallocate the port (the close)."""
        t0 = time.perf_counter()
        create_file(rt, st.root, f, F.O_READ, args.call_timeout)
        st.add(opens=1, open_s=time.perf_counter() - t0)
        try:
            return self.read_file(rt, args, st, task, f)
        finally:
            self.drop_port(rt, args, st, f)

    def drop_port(self, rt, args, st, f):
        port, f.port = f.port, 0
        if port:
            mach_port_deallocate(rt.task_self, port, timeout=args.call_timeout, rt=rt)
            st.add(closes=1)

    def steps(self, rt, args, st, task):
        """The task's steps: make and write every file, sync, close the reopened set;
        the passes (each set's reads between two vm_statistics); close and unlink."""
        reopen, held = self.files(st, task, args)
        pages = args.file_pages
        for f in reopen + held:
            yield lambda f=f: self.open(rt, args, st, f)
            for first, n in file_chunks(pages, args.chunk_pages):
                yield lambda f=f, first=first, n=n: self.write(
                    rt, args, st, f, first * PAGE,
                    file_bytes(st.nonce, task, self.key(f), first, n))

        def sync_and_close():
            t0 = time.perf_counter()
            F.fsys_syncfs(st.root, 1, 0, timeout=args.call_timeout, rt=rt)
            st.add(syncfs=1, syncfs_s=time.perf_counter() - t0)
            err = call_all([lambda f=f: self.drop_port(rt, args, st, f) for f in reopen])
            if err is not None:
                raise err

        def mark(what):
            st.marks.setdefault(what, time.time())
            for who in ("kernel", "server"):
                st.cpu.setdefault(f"{who}_{what}", cpu_seconds(st.prepared.get(f"{who}_pid")))

        def snapshot(box):
            box["before"] = self.stats(rt, args)

        yield sync_and_close
        yield lambda: mark("loop_start")
        for n in range(args.reopen_passes):
            counts = []
            turn = [f for i, f in enumerate(held) if i % args.held_every == n % args.held_every]
            for name, group in (("reopen", reopen), ("held", turn)):
                if not group:
                    counts.append(0)
                    continue
                box = {}
                yield lambda box=box: snapshot(box)
                for f in group:
                    if name == "reopen":
                        yield lambda f=f: self.reopen_file(rt, args, st, task, f)
                    elif not f.failed:
                        yield lambda f=f: self.read_file(rt, args, st, task, f)
                yield lambda box=box, name=name, counts=counts, n=len(group): self.account(
                    rt, args, st, name, box, counts, n * args.file_pages)
            yield lambda counts=counts: self.pass_done(st, counts)
        yield lambda: mark("loop_end")
        for f in reopen + held:
            yield lambda f=f: self.close(rt, args, st, f)

    def pass_done(self, st, counts):
        st.per_pass.append(counts)
        st.add(passes_done=1)

    def account(self, rt, args, st, name, box, counts, pages: int):
        """The kernel's deltas over one set's reads (``pages`` pages read), added to the
        set's sums."""
        before = box.get("before")
        if before is None:
            return  # its snapshot failed (counted as an error): nothing to add
        after = self.stats(rt, args)
        d = {k: after.get(k, 0) - before.get(k, 0) for k in KERNEL_KEYS}
        d["pages_read"] = pages
        with st.lock:
            for k, v in d.items():
                st.kernel[name][k] += v
        counts.append(d["data_requests"])

    def close(self, rt, args, st, f):
        """Unlink the file (unless --keep-files) and drop its port if still open."""
        calls = [] if args.keep_files else [
            lambda: F.dir_unlink(st.root, f.name, timeout=args.call_timeout, rt=rt)]
        first_err = call_all(calls + [lambda: self.drop_port(rt, args, st, f)])
        st.add(files_closed=1)
        if first_err is not None:
            raise first_err

    def task_extra(self, st):
        cpu = {}
        for who in ("kernel", "server"):
            a, b = st.cpu.get(f"{who}_loop_start"), st.cpu.get(f"{who}_loop_end")
            cpu[who] = round(b - a, 3) if a is not None and b is not None else None
        return {"marks": dict(st.marks), "kernel": st.kernel, "per_pass": st.per_pass,
                "cpu": cpu}

    # ---- parent side

    def summarize(self, s, args, prepared):
        self.summarize_ext2(s, args, prepared)
        c = s["counters"]
        extra = prepared.get("task_extra", ())
        s["files"] = args.files
        s["held"] = args.held
        s["file_bytes"] = args.file_pages * PAGE
        s["passes"] = args.reopen_passes
        s["passes_done"] = c.get("passes_done", 0)
        s["opens"] = c.get("opens", 0)
        per_set = {name: dict.fromkeys(KERNEL_KEYS + ("pages_read",), 0) for name in SETS}
        for e in extra:
            for name in SETS:
                for k, v in (e.get("kernel") or {}).get(name, {}).items():
                    per_set[name][k] = per_set[name].get(k, 0) + v
        for name in SETS:
            d = per_set[name]
            d["cache_deactivate_ms"] = round(d["cache_deactivate_ms"], 3)
            # a page read that the kernel had to ask ext2fs for again was not resident
            d["page_hit_rate"] = (None if not d["pages_read"] else
                                  round(1 - d["data_requests"] / d["pages_read"], 4))
        s["sets"] = per_set
        r = per_set["reopen"]
        s["cache_hit_rate"] = ratio(r["hits"], r["lookups"])
        s["per_pass_data_requests"] = [e.get("per_pass") for e in extra]
        for mark in ("loop_start", "loop_end"):
            ts = [e["marks"][mark] for e in extra if (e.get("marks") or {}).get(mark)]
            s[f"{mark}_at"] = (min if mark == "loop_start" else max)(ts) if ts else None
        s["held_every"] = args.held_every
        for who in ("kernel", "server"):
            vals = [(e.get("cpu") or {}).get(who) for e in extra]
            s[f"{who}_cpu_s"] = (round(sum(vals), 3) if vals and None not in vals
                                 else None)
        entries = sum(per_set[name]["cache_entered"] for name in SETS)  # over the loop
        s["cache_entered"] = entries
        s["kernel_cpu_per_cache_entry_ms"] = (
            None if s["kernel_cpu_s"] is None or not entries
            else round(s["kernel_cpu_s"] * 1000 / entries, 4))
        # what vm_object_deactivate_pages itself took, timed in the kernel
        spent = sum(per_set[name]["cache_deactivate_ms"] for name in SETS)
        s["deactivate_us_per_cache_entry"] = (round(spent * 1000 / entries, 2) if entries
                                              else None)
        s["bytes_expected"] = args.tasks * self.pages_expected(args) * PAGE

    @staticmethod
    def pages_expected(args) -> int:
        """Pages one task reads and verifies: the reopened files every pass, each held
        one in every --held-every-th pass (its turn)."""
        k, held_reads = args.held_every, 0
        for n in range(args.reopen_passes):
            held_reads += sum(1 for i in range(args.held) if i % k == n % k)
        return args.file_pages * (args.files * args.reopen_passes + held_reads)

    def check(self, s):
        files = s["tasks"] * (s["files"] + s["held"])
        return self.check_work(s, {"files_created": files, "syncfs": s["tasks"],
                                   "passes_done": s["tasks"] * s["passes"],
                                   "bytes_written": files * s["file_bytes"],
                                   "bytes_verified": s["bytes_expected"]})

    def table(self, s):
        rows = [("files", f"{s['tasks']} task(s) x ({s['files']} reopened + {s['held']} "
                          f"held) x {s['file_bytes'] / 1024:.0f} KiB, {s['passes_done']} "
                          f"passes")]
        for name in SETS:
            d = s["sets"][name]
            if not d["pages_read"]:
                continue
            rows.append((f"{name} set", f"{d['pages_read']} pages read, "
                         f"{d['data_requests']} asked again (page hit rate "
                         f"{dash(d['page_hit_rate'])}), reactivations {d['reactivations']}, "
                         f"cache entries {d['cache_entered']}, pages deactivated on entry "
                         f"{d['cache_deactivated']}, cache hits {d['hits']} of "
                         f"{d['lookups']} lookups"))
        return rows + self.ext2_rows(s)
