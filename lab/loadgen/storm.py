"""The storm workload (issue 9): the dirty-page flood that made the Hurd's ext2fs spawn
hundreds to thousands of threads.

``storm`` runs at least 32 writers (``--tasks 4 --threads 8``; fewer are refused unless
``--min-writers`` says so), each writing its own file through ext2fs with io_write from
start to end, as fast as it can.  Together the files are ``--factor`` (default 4) times
the kernel's physical memory (``physical_pages`` from vm_statistics, so the size follows
the cluster: 64 MiB of memory, 256 MiB written).  Each writer then reads its file back
through io_read and compares every byte.  Nothing syncs: the dirty pages reach the disk
only when the pageout daemon (or ext2fs's periodic sync) sends them to the file pagers,
which is where a pageout policy shows what it is made of.

Measured: each io_write's latency (p50 / p99 of the writes alone, not of the reads or
opens), the write phase's wall time and MiB/s, bytes written and verified, the kernel's
VM counters and ext2fs's own before and after.  ext2fs's image must hold the files:
about ``factor x physical memory`` plus metadata (``--size-mib``).
"""

from __future__ import annotations

import threading
import time

from lab.loadgen.ext2 import WholeFileWorkload
from lab.loadgen.latency import EXACT_CAP_TASK, Latencies
from lab.loadgen.pages import MIB, pages_of
from lab.loadgen.table import dash, fmt_ms
from lab.loadgen.workload import positive_float, positive_int, workload
from protocol.vm_param import PAGE_SIZE as PAGE

MIN_WRITERS = 32


def storm_file_pages(physical_pages: int, factor: float, writers: int) -> int:
    """Pages of each writer's file so that ``writers`` files together are ``factor``
    times ``physical_pages`` (rounded up, at least one page)."""
    return max(1, -(-int(factor * physical_pages) // writers))


def write_window(windows: list[tuple[float, float]]) -> float | None:
    """Wall seconds from the first write's start to the last write's end over
    ``windows`` (each a writer's (first start, last end)); None without writes."""
    if not windows:
        return None
    return max(t1 for _, t1 in windows) - min(t0 for t0, _ in windows)


@workload
class Storm(WholeFileWorkload):
    """The storm: >= 32 writers dirty --factor x physical memory through ext2fs with
    io_write, then read every byte back and compare it."""

    name = "storm"
    help = "the thread storm: >= 32 writers dirty F x physical memory through ext2fs, verify"

    def add_arguments(self, p):
        g = p.add_argument_group("storm")
        m = g.add_mutually_exclusive_group()
        m.add_argument("--factor", type=positive_float, default=4.0, metavar="F",
                       help="all files together are F x the kernel's physical memory "
                            "(default 4)")
        m.add_argument("--file-mib", type=positive_float, metavar="M",
                       help="size of each writer's file in MiB (instead of --factor)")
        g.add_argument("--min-writers", type=positive_int, default=MIN_WRITERS, metavar="N",
                       help=f"refuse fewer than N writers, tasks x threads (default "
                            f"{MIN_WRITERS}: the storm's definition)")
        self.add_ext2_common(g, chunk_kib=16)

    def check_args(self, args, parser):
        super().check_args(args, parser)
        if args.tasks * args.threads < args.min_writers:
            parser.error(f"storm needs at least {args.min_writers} writers (tasks x "
                         f"threads), e.g. --tasks 4 --threads 8; got {args.tasks} x "
                         f"{args.threads}")

    def prepare(self, cluster, args):
        prep = super().prepare(cluster, args)
        phys = prep["vm_before"]["physical_pages"]
        writers = args.tasks * args.threads
        prep["file_pages"] = (pages_of(args.file_mib) if args.file_mib is not None
                              else storm_file_pages(phys, args.factor, writers))
        return prep

    def task_setup(self, rt, args, index, prepared):
        st = super().task_setup(rt, args, index, prepared)
        # per OS thread (each writes only its own): Latencies of its io_writes, and
        # [first write start, last write end] in Unix time
        st.write_lat, st.windows = {}, {}
        st.lat_cap = max(1, EXACT_CAP_TASK // args.threads)
        return st

    def make_op(self, rt, args, st, task, thread):
        return self.stepper(self.whole_file_steps(rt, args, st, task, thread,
                                                  pages=st.prepared["file_pages"]))

    def write(self, rt, args, st, f, offset, data):
        """io_write as the ext2fs family does it, timed into this thread's latencies."""
        me = threading.get_ident()
        t0, w0 = time.perf_counter(), time.time()
        super().write(rt, args, st, f, offset, data)
        lat = st.write_lat.get(me)
        if lat is None:
            lat = st.write_lat[me] = Latencies(st.lat_cap)
        lat.add(time.perf_counter() - t0)
        win = st.windows.setdefault(me, [w0, w0])
        win[1] = time.time()

    def task_extra(self, st):
        lat = Latencies(EXACT_CAP_TASK)
        for one in st.write_lat.values():
            lat.merge(one)
        return {"write_latencies": lat.to_wire(),
                "windows": [tuple(w) for w in st.windows.values()]}

    def summarize(self, s, args, prepared):
        self.summarize_ext2(s, args, prepared)
        pages = prepared["file_pages"]
        s["files"] = args.tasks * args.threads
        phys = prepared["vm_before"]["physical_pages"]
        s["file_bytes"] = pages * PAGE
        s["physical_pages"] = phys
        s["memory_factor"] = round(pages * s["files"] / phys, 3)
        lat = Latencies()
        windows = []
        for extra in prepared.get("task_extra", ()):
            lat.merge(Latencies.from_wire(extra["write_latencies"]))
            windows += extra["windows"]
        s["write_latency_ms"] = lat.summary_ms()
        wall = write_window(windows)
        s["write_phase_s"] = None if wall is None else round(wall, 3)
        s["write_phase_mib_per_s"] = (round(s["bytes_written"] / MIB / wall, 2)
                                      if wall else None)

    def check(self, s):
        n = s["files"] * s["file_bytes"]
        return self.check_work(s, {"files_created": s["files"], "bytes_written": n,
                                   "bytes_verified": n})

    def table(self, s):
        lat = s["write_latency_ms"]
        return [("files", f"{s['tasks']} tasks x {s['threads_per_task']} writers x "
                          f"{s['file_bytes'] / MIB:.2f} MiB = {s['memory_factor']}x "
                          f"physical memory ({s['physical_pages']} pages), "
                          f"{s['chunk_kib']} KiB writes"),
                ("write phase", f"{dash(s['write_phase_s'])} s, "
                                f"{dash(s['write_phase_mib_per_s'])} MiB/s"),
                ("io_write latency", f"p50 {fmt_ms(lat['p50'])}, p99 {fmt_ms(lat['p99'])}, "
                                     f"max {fmt_ms(lat['max'])} ({lat['samples']} writes)"),
                ] + self.ext2_rows(s)
