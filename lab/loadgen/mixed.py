"""The mixed file workload (E2): a long run of creates, writes, reads, appends,
overwrites, stats and unlinks over many files, by concurrent clients, against a file
system server (ext2fs by default), every byte checked against a model of each file.

Each task thread works in a directory of its own, ``mx-NONCE-TASK-THREAD``, its files
in subdirectories of at most ``--files-per-dir`` (``d0``, ``d1``, ...).  It does
``--ops`` operations drawn from a seeded generator (``--seed``: the same sequence, the
same sizes, the same bytes in every run, so that configurations see the same workload),
with weights create 30, read 30, append 15, overwrite 10, unlink 10, stat 5:

- create: dir_lookup(O_CREAT|O_EXCL) of a new file, io_write of 1 B .. --max-kib KiB;
- read: dir_lookup of a file, io_read of all of it, compared with the model;
- append / overwrite: dir_lookup(O_WRITE), io_write at the end / at a random offset;
- stat: dir_lookup, io_stat, the size compared with the model;
- unlink: the file read back and compared first, then dir_unlink.

Every file is opened for the operation and closed after it (its port deallocated), as a
shell's tools do.  After the operations every live file is read back and compared, then
(unless --keep-files) unlinked, and the directories removed.  A thread with no live
file creates one instead of another operation; a file at --max-file-kib is overwritten
rather than appended to.

Measured: each operation's latency by kind, and over time (one-second buckets from the
start: the service latency as the server's map grows); sampled by the parent every
--sample-s seconds through machemu_kernel_info on host_priv, the server task's map
entries and the kernel's vm_map_lookup_entry / first-fit calls in that map and the
time they took (``map_cost``); and the probe: before the tasks start and after they
all finished, with nothing else running, the parent times --probe cycles of a lone
client's file — create, write --max-kib KiB, read back and compare, unlink — so the
service latency is seen at the fresh map's size and at the final one.
"""

from __future__ import annotations

import collections
import random
import threading
import time

from lab.client import ClusterError, err_name
from lab.loadgen.ext2 import Ext2Workload
from lab.loadgen.files import call_all, create_file
from lab.loadgen.latency import Latencies
from lab.loadgen.table import dash, fmt_ms
from lab.loadgen.workload import VerifyError, positive_float, positive_int, workload
from protocol.defs import fs as F
from protocol.defs.mach_port import mach_port_deallocate
from protocol.kern_return import MachError

KINDS = ("create", "read", "append", "overwrite", "stat", "unlink")
WEIGHTS = (30, 30, 15, 10, 5, 10)
OVERWRITE_MAX = 8 * 1024
BUCKET_S = 1.0                # latency-over-time bucket
BUCKETS_MAX = 3600            # an hour of buckets, then the last one takes the rest
BUCKET_CAP = 2000             # exact latencies kept per bucket per task
SERIES_MAX = 7200             # map samples kept


class FileRef:
    """One open of a file (what Ext2Workload's write / read_verify take)."""

    def __init__(self, name: str, port: int = 0):
        self.name, self.port, self.failed = name, port, False


class ThreadFiles:
    """One thread's directory, subdirectories (their ports) and files (name -> the
    model of its contents, and which subdirectory holds it)."""

    def __init__(self, name: str, rng: random.Random):
        self.name, self.rng = name, rng
        self.dir_port = 0
        self.subdirs: list[int] = []  # ports of d0, d1, ...
        self.in_last = 0              # files created in the last subdirectory
        self.model: dict[str, bytearray] = {}
        self.where: dict[str, int] = {}
        self.live: list[str] = []     # names, for picking at random
        self.next_id = 0


@workload
class Mixed(Ext2Workload):
    """The E2 workload (module docstring): many files created, written, read, appended
    to, overwritten, stat'ed and unlinked by concurrent clients, all bytes checked."""

    name = "mixed"
    help = ("many files created, written, read, appended, overwritten, unlinked by "
            "concurrent clients; every byte verified; the server's map sampled")
    progress_unit = "ops"

    def add_arguments(self, p):
        g = p.add_argument_group("mixed")
        g.add_argument("--ops", type=positive_int, default=500, metavar="N",
                       help="operations per task thread (default 500)")
        g.add_argument("--seed", type=int, default=1, metavar="S",
                       help="the operations' generator seed (default 1)")
        g.add_argument("--max-kib", type=positive_int, default=16, metavar="K",
                       help="largest file made by a create, in KiB (default 16)")
        g.add_argument("--max-file-kib", type=positive_int, default=256, metavar="K",
                       help="appends stop at this file size, in KiB (default 256)")
        g.add_argument("--files-per-dir", type=positive_int, default=100, metavar="N",
                       help="files created per subdirectory (default 100)")
        g.add_argument("--sample-s", type=positive_float, default=1.0, metavar="S",
                       help="seconds between samples of the server's map (default 1)")
        g.add_argument("--probe", type=int, default=100, metavar="N",
                       help="create-write-read-unlink cycles of one file timed before and "
                            "after the run, nothing else running (default 100; 0: none)")
        self.add_ext2_common(g, chunk_kib=64)

    def check_args(self, args, parser):
        super().check_args(args, parser)
        if args.max_kib > args.max_file_kib:
            parser.error("--max-kib must not exceed --max-file-kib")
        if args.probe < 0:
            parser.error("--probe must not be negative")

    # ---- parent side: the server's map over time

    def prepare(self, cluster, args):
        prep = super().prepare(cluster, args)
        self._series: collections.deque = collections.deque(maxlen=SERIES_MAX)
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_map, args=(cluster, args),
                                         name="mixed-map-sampler", daemon=True)
        self._sample_once(cluster, args)
        if args.probe:
            try:
                prep["probe_before"] = self._probe(cluster, args, prep["nonce"], "before")
            except (MachError, VerifyError) as e:
                why = err_name(e.code) if isinstance(e, MachError) else str(e)
                raise ClusterError(f"the probe on {args.server}: {why}") from None
        self._sampler.start()
        return prep

    def _probe(self, cluster, args, nonce: int, phase: str) -> dict:
        """Parent side, alone: --probe cycles of one client's file life — create, write
        --max-kib KiB, read back and compare, unlink — each timed whole; the cycles'
        latency summary and the bytes verified."""
        rt, t = cluster.rt, args.call_timeout
        data = random.Random(args.seed).randbytes(args.max_kib * 1024)
        root = cluster.look_up(args.server)
        lat, verified, bad = Latencies(), 0, 0
        try:
            for i in range(args.probe):
                f = FileRef(f"mx-{nonce:016x}-probe-{phase}-{i}")
                t0 = time.perf_counter()
                create_file(rt, root, f, F.O_CREAT | F.O_EXCL | F.O_READ | F.O_WRITE, t)
                try:
                    F.io_write(f.port, data, 0, timeout=t, rt=rt)
                    got = F.io_read(f.port, 0, len(data), timeout=t, rt=rt)
                    F.dir_unlink(root, f.name, timeout=t, rt=rt)
                finally:
                    mach_port_deallocate(rt.task_self, f.port, timeout=t, rt=rt)
                lat.add(time.perf_counter() - t0)
                if got == data:
                    verified += len(data)
                else:
                    bad += 1
        finally:
            mach_port_deallocate(rt.task_self, root, timeout=t, rt=rt)
        return {**lat.summary_ms(), "bytes_verified": verified, "mismatches": bad}

    def _sample_once(self, cluster, args):
        ki = cluster.kernel_info()
        if ki is None:
            return
        for t in ki.get("tasks", []):
            if t.get("name") == args.server:
                c = t.get("map_cost") or {}
                self._series.append([round(time.time(), 3), t.get("map_entries"),
                                     c.get("lookups"), c.get("lookup_us"),
                                     c.get("find_spaces"), c.get("find_space_us")])
                return

    def _sample_map(self, cluster, args):
        while not self._stop.wait(args.sample_s):
            self._sample_once(cluster, args)

    def finish(self, cluster, args, prepared):
        self._stop.set()
        self._sampler.join(timeout=30)
        self._sample_once(cluster, args)
        prepared["map_series"] = list(self._series)
        if args.probe:
            try:
                prepared["probe_after"] = self._probe(cluster, args, prepared["nonce"],
                                                      "after")
            except (MachError, VerifyError) as e:
                prepared["probe_after"] = {"error": str(e)}
        super().finish(cluster, args, prepared)

    # ---- task side

    def task_setup(self, rt, args, index, prepared):
        st = super().task_setup(rt, args, index, prepared)
        st.kind_lat = {k: Latencies(BUCKET_CAP) for k in KINDS}
        st.buckets: dict[int, Latencies] = {}
        st.t0 = None
        return st

    def _timed(self, st, kind: str, fn):
        """Run one operation, its latency counted by kind and in its time bucket."""
        t0 = time.perf_counter()
        now = time.time()
        r = fn()
        dt = time.perf_counter() - t0
        with st.lock:
            if st.t0 is None:
                st.t0 = now
            st.kind_lat[kind].add(dt)
            b = min(int((now - st.t0) / BUCKET_S), BUCKETS_MAX)
            lat = st.buckets.get(b)
            if lat is None:
                lat = st.buckets[b] = Latencies(BUCKET_CAP)
            lat.add(dt)
        st.add(**{f"op_{kind}": 1})
        return r

    def _open(self, rt, args, st, tf: ThreadFiles, name: str, flags: int) -> FileRef:
        f = FileRef(name)
        create_file(rt, tf.subdirs[tf.where[name]], f, flags, args.call_timeout)
        return f

    def _close(self, rt, args, f: FileRef):
        if f.port:
            port, f.port = f.port, 0
            mach_port_deallocate(rt.task_self, port, timeout=args.call_timeout, rt=rt)

    def _dir(self, rt, args, parent: int, name: str) -> int:
        """dir_mkdir ``name`` in ``parent`` and open it: its port."""
        F.dir_mkdir(parent, name, 0o755, timeout=args.call_timeout, rt=rt)
        retry, _, port = F.dir_lookup(parent, name, F.O_READ, 0, timeout=args.call_timeout,
                                      rt=rt)
        if retry != F.FS_RETRY_NORMAL or not port:
            raise VerifyError(f"dir_lookup {name}: retry {retry} port {port}", count=0)
        return port

    def _write_all(self, rt, args, st, f: FileRef, offset: int, data: bytes):
        """io_write ``data`` at ``offset``, --chunk-kib at a time."""
        step = args.chunk_kib * 1024
        for o in range(0, len(data), step):
            self.write(rt, args, st, f, offset + o, data[o:o + step])

    def _verify_all(self, rt, args, st, f: FileRef, want: bytearray) -> int:
        """io_read the whole file, --chunk-kib at a time, and compare with ``want``."""
        step, done = args.chunk_kib * 1024, 0
        for o in range(0, len(want), step):
            done += self.read_verify(rt, args, st, f, o, bytes(want[o:o + step]))
        return done

    def make_op(self, rt, args, st, task, thread):
        rng = random.Random((args.seed << 32) ^ (task << 16) ^ thread)
        tf = ThreadFiles(f"mx-{st.nonce:016x}-{task}-{thread}", rng)
        max_file = args.max_file_kib * 1024

        def setup():
            tf.dir_port = self._dir(rt, args, st.root, tf.name)
            tf.subdirs.append(self._dir(rt, args, tf.dir_port, "d0"))

        def create():
            if tf.in_last >= args.files_per_dir:
                tf.subdirs.append(self._dir(rt, args, tf.dir_port, f"d{len(tf.subdirs)}"))
                tf.in_last = 0
            name = f"f{tf.next_id}"
            tf.next_id += 1
            data = rng.randbytes(rng.randint(1, args.max_kib * 1024))
            tf.where[name] = len(tf.subdirs) - 1
            f = self._open(rt, args, st, tf, name, F.O_CREAT | F.O_EXCL | F.O_READ
                           | F.O_WRITE)
            tf.in_last += 1
            tf.model[name] = bytearray()
            tf.live.append(name)
            st.add(files_created=1)
            try:
                self._write_all(rt, args, st, f, 0, data)
                tf.model[name][:] = data
            finally:
                self._close(rt, args, f)

        def pick() -> str:
            return tf.live[rng.randrange(len(tf.live))]

        def read():
            name = pick()
            f = self._open(rt, args, st, tf, name, F.O_READ)
            try:
                return self._verify_all(rt, args, st, f, tf.model[name])
            finally:
                self._close(rt, args, f)

        def write_at(name: str, offset: int, data: bytes):
            f = self._open(rt, args, st, tf, name, F.O_WRITE)
            try:
                self._write_all(rt, args, st, f, offset, data)
                m = tf.model[name]
                m[offset:offset + len(data)] = data
            finally:
                self._close(rt, args, f)

        def append():
            name = pick()
            size = len(tf.model[name])
            if size >= max_file:
                return overwrite(name)
            n = rng.randint(1, min(max_file - size, max(1, args.max_kib * 256)))
            write_at(name, size, rng.randbytes(n))

        def overwrite(name: str | None = None):
            name = name or pick()
            size = len(tf.model[name])
            off = rng.randint(0, size)
            n = rng.randint(1, max(1, min(OVERWRITE_MAX, max_file - off)))
            write_at(name, off, rng.randbytes(n))

        def stat():
            name = pick()
            f = self._open(rt, args, st, tf, name, F.O_READ)
            try:
                size = F.io_stat(f.port, timeout=args.call_timeout, rt=rt)["st_size"]
            finally:
                self._close(rt, args, f)
            if size != len(tf.model[name]):
                raise VerifyError(f"io_stat {name}: size {size}, "
                                  f"{len(tf.model[name])} written", count=1)
            return True

        def unlink(name: str | None = None):
            name = name or pick()
            done = read_named(name)
            F.dir_unlink(tf.subdirs[tf.where[name]], name, timeout=args.call_timeout,
                         rt=rt)
            forget(name)
            st.add(files_unlinked=1)
            return done

        def read_named(name: str) -> int:
            f = self._open(rt, args, st, tf, name, F.O_READ)
            try:
                return self._verify_all(rt, args, st, f, tf.model[name])
            finally:
                self._close(rt, args, f)

        def forget(name: str):
            del tf.model[name], tf.where[name]
            tf.live.remove(name)

        ops = {"create": create, "read": read, "append": append, "overwrite": overwrite,
               "stat": stat, "unlink": unlink}

        def one_op():
            kind = rng.choices(KINDS, WEIGHTS)[0]
            if not tf.live:
                kind = "create"
            r = self._timed(st, kind, ops[kind])
            st.add(random_ops=1)
            st.progress += 1
            return r

        def final_check(name: str):
            """The end: every live file read back and compared (then unlinked)."""
            done = read_named(name)
            st.add(files_final_verified=1, final_bytes=len(tf.model[name]))
            if not args.keep_files:
                F.dir_unlink(tf.subdirs[tf.where[name]], name, timeout=args.call_timeout,
                             rt=rt)
                st.add(files_unlinked=1)
            return done

        def teardown():
            calls = []
            if not args.keep_files:
                calls += [lambda i=i: F.dir_rmdir(tf.dir_port, f"d{i}",
                                                  timeout=args.call_timeout, rt=rt)
                          for i in range(len(tf.subdirs))]
                calls.append(lambda: F.dir_rmdir(st.root, tf.name,
                                                 timeout=args.call_timeout, rt=rt))
            calls += [lambda p=p: mach_port_deallocate(rt.task_self, p,
                                                       timeout=args.call_timeout, rt=rt)
                      for p in (*tf.subdirs, tf.dir_port) if p]
            err = call_all(calls)
            if err is not None:
                raise err

        def steps():
            yield setup
            for _ in range(args.ops):
                yield one_op
            st.add(files_live_at_end=len(tf.live))
            for name in list(tf.live):
                yield lambda name=name: final_check(name)
            yield teardown

        return self.stepper(steps())

    def task_extra(self, st):
        return {"t0": st.t0, "kinds": {k: v.to_wire() for k, v in st.kind_lat.items()},
                "buckets": {b: v.to_wire() for b, v in st.buckets.items()}}

    # ---- parent side: the summary

    def summarize(self, s, args, prepared):
        self.summarize_ext2(s, args, prepared)
        c = s["counters"]
        extras = prepared.get("task_extra", ())
        t0s = [e["t0"] for e in extras if e.get("t0")]
        start = min(t0s) if t0s else None
        kinds = {k: Latencies() for k in KINDS}
        buckets: dict[int, Latencies] = {}
        for e in extras:
            for k, w in e["kinds"].items():
                kinds[k].merge(Latencies.from_wire(w))
            shift = int((e["t0"] - start) / BUCKET_S) if e.get("t0") else 0
            for b, w in e["buckets"].items():
                buckets.setdefault(int(b) + shift, Latencies()).merge(
                    Latencies.from_wire(w))
        s["ops_per_thread"] = args.ops
        s["seed"] = args.seed
        s["ops_by_kind"] = {k: c.get(f"op_{k}", 0) for k in KINDS}
        s["latency_by_kind_ms"] = {k: v.summary_ms() for k, v in kinds.items() if v.n}
        s["latency_series"] = []
        for b in sorted(buckets):
            m = buckets[b].summary_ms()
            s["latency_series"].append([round(b * BUCKET_S, 1), m["samples"], m["p50"],
                                        m["p99"], m["mean"]])
        s["start_time"] = start
        series = prepared.get("map_series") or []
        s["map_series"] = [[round(x[0] - start, 2) if start else None, *x[1:]]
                           for x in series]
        entries = [x[1] for x in series if x[1] is not None]
        s["map_entries_start"] = entries[0] if entries else None
        s["map_entries_end"] = entries[-1] if entries else None
        s["map_entries_peak"] = max(entries) if entries else None
        for k in ("files_created", "files_unlinked", "files_live_at_end",
                  "files_final_verified", "final_bytes", "random_ops"):
            s[k] = c.get(k, 0)
        s["keep_files"] = args.keep_files
        s["probe_before"] = prepared.get("probe_before")
        s["probe_after"] = prepared.get("probe_after")

    def check(self, s):
        want = {"random_ops": s["tasks"] * s["threads_per_task"] * s["ops_per_thread"],
                "files_final_verified": s["files_live_at_end"]}
        for k in ("probe_before", "probe_after"):
            p = s.get(k) or {}
            if p.get("mismatches") or "error" in p:
                return f"{k}: {p}"
        return self.check_work(s, want)

    def table(self, s):
        lat = s["latency_by_kind_ms"]
        kinds = ", ".join(f"{k} {s['ops_by_kind'][k]} (p50 {fmt_ms(lat[k]['p50'])})"
                          for k in KINDS if k in lat)
        return [("operations", f"{s['tasks']} x {s['threads_per_task']} threads x "
                               f"{s['ops_per_thread']}: {kinds}"),
                ("files", f"{s['files_created']} created, {s['files_unlinked']} unlinked, "
                          f"{s['files_live_at_end']} live at the end, all read back"),
                (f"{s['server_name']} map entries",
                 f"{dash(s['map_entries_start'])} at the start, "
                 f"{dash(s['map_entries_end'])} at the end, peak "
                 f"{dash(s['map_entries_peak'])}"),
                ("probe cycle", " -> ".join(
                    f"p50 {fmt_ms(p.get('p50'))}" for p in (s.get("probe_before") or {},
                                                             s.get("probe_after") or {}))
                 + " (before -> after)"),
                ] + self.ext2_rows(s)


def lookup_cost(series: list, since: float = 0.0) -> dict:
    """Calls and microseconds per call of vm_map_lookup_entry and of first-fit from
    ``since`` seconds on (from the last sample at or before it; ``map_series`` rows) to
    the last sample, the mean entries over those samples, and the kernel's milliseconds
    per second in both."""
    rows = [r for r in series if r[0] is not None and r[2] is not None]
    base = [r for r in rows if r[0] <= since]
    rows = ([base[-1]] if base else []) + [r for r in rows if r[0] > since]
    if len(rows) < 2:
        return {}
    a, b = rows[0], rows[-1]
    n, us, f, fus = b[2] - a[2], b[3] - a[3], b[4] - a[4], b[5] - a[5]
    return {"lookups": n, "lookup_us_per_call": round(us / n, 2) if n else None,
            "find_spaces": f, "find_space_us_per_call": round(fus / f, 2) if f else None,
            "entries_mean": round(sum(r[1] for r in rows) / len(rows), 1),
            "kernel_map_ms_per_s": round((us + fus) / 1000 / max(1e-9, b[0] - a[0]), 2)}
