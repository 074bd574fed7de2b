"""E1, the thread storm: the ``storm`` workload (lab.loadgen.storm: 4 tasks x 8 writers
dirtying 4x physical memory through ext2fs, every byte verified) under each pageout
policy and under the workers thread model.

Under ``classic`` every dirty page the daemon finds goes to ext2fs as its own
data_return, nothing bounds how many are outstanding, and a multithread ext2fs makes a
thread for each message no thread waits for: the Hurd's storm.  ``advisory`` leaves
dirty file pages to their pager and puts writers to sleep above its hard limit;
``modern`` bounds laundry and evictions per round; ``throttle`` makes the writer pay;
the ``workers`` model caps the threads whatever the kernel sends.
"""

from __future__ import annotations

from kernel.config import KernelConfig
from kernel.vm_pageout import DATA_WRITE_MAX
from lab.experiments.base import (
    QUICK_KERNEL,
    RESULT_COLUMNS,
    Claim,
    Configuration,
    Experiment,
    Step,
    experiment,
    ext2fs_servers,
    image_mib,
    physical_pages,
)
from lab.experiments.summary import delta, peak, rounded, sum_peak, value
from lab.loadgen.storm import MIN_WRITERS

DISK_LATENCY_MS = 5.0
TASKS, THREADS = 4, 8
FACTOR = 4.0
WORKERS = 10  # the Hurd's libpager workers since c8344d90 (libports DEFAULT_WORKERS)
# --quick: a smaller memory (the same 32 writers and 5 ms disk), so that five
# configurations fit in three minutes on a slow host (2x took 186 s where 1.5x takes
# 138 s) and the storm still builds (classic 1,004 threads, advisory 56)
QUICK_FACTOR = 1.5


def dirty_limits(kernel: dict) -> tuple[int | None, int | None]:
    """The advisory policy's (soft, hard) dirty limits under ``kernel`` (after
    scaling), (None, None) under other policies."""
    if kernel.get("pageout_policy") != "advisory":
        return None, None
    from kernel.vm_pageout_advisory import advisory_limits

    return advisory_limits(KernelConfig.load(**kernel))


def advisory_thread_floor(row: dict) -> int | None:
    """The fewest ext2fs threads advisory can peak at with this run's parameters: the
    threads ext2fs had when the run began, one per writer asleep on the dirty limit (its
    io_write faulted in ext2fs's own task) and one per data_return the periodic sync
    (diskfs_sync_everything (0)) gets at once when the soft limit's pages are dirty,
    DATA_WRITE_MAX pages a data_return; None without those figures."""
    parts = (row.get("threads_start"), row.get("writers_sleeping_peak"), row.get("soft_limit"))
    if any(v is None for v in parts):
        return None
    start, asleep, soft = parts
    return start + asleep + -(-soft // DATA_WRITE_MAX)


@experiment
class Storm(Experiment):
    name = "storm"
    aliases = ("E1",)
    title = "E1 thread storm: dirty-page floods make ext2fs spawn threads; the cures"
    claim = Claim(
        text="Under a flood of dirty file pages the multithread ext2fs spawns a thread "
             "per data_return, hundreds to thousands of them; advisory pageout (writers "
             "sleep above a dirty limit, pagers clean their own pages) keeps it to a few "
             "dozen.",
        source="Sergio Lopez, advisory pageout for GNU Mach, 666299d0 (2011), and the "
               "Hurd's reports of thread storms (MACH-FACTS §libpager and libports)",
        figure="hundreds to thousands of threads (/hurd/fifo at 10,118; '72 tasks, "
               "2090 threads'); a kernel panic near 3,000")
    configurations = (
        Configuration("classic-page", "classic, ext2fs page writes (one write_page per "
                      "page), data_return_cluster 1", "classic",
                      {"data_return_cluster": 1}, ("--write-mode", "page")),
        Configuration("advisory", "advisory pageout (666299d0)", "advisory"),
        Configuration("modern", "modern pageout (GNU Mach >= 1.8)", "modern"),
        Configuration("throttle", "Linux-style dirty throttling at the writer", "throttle"),
        Configuration("classic-workers", f"classic, ext2fs workers model ({WORKERS} "
                      "workers)", "classic", {}, ("--workers", str(WORKERS)), "workers"),
    )
    headline = ("classic-page", "advisory")  # the seed's comparison (issue 10)
    workload = (f"storm: {TASKS} tasks x {THREADS} writers, each writing its own file "
                f"through ext2fs (io_write, 16 KiB), together {FACTOR:g}x physical "
                f"memory ({QUICK_FACTOR:g}x of {QUICK_KERNEL['physical_pages']} pages with --quick), then "
                f"every byte read back and compared; ext2fs multithread with "
                f"--disk-latency-ms {DISK_LATENCY_MS:g}")
    samples = ("ext2fs threads and RSS (psutil), the kernel's vm_statistics (potentially "
               "dirty pages, writer sleeps and pauses, laundry, returns_in_flight where "
               "the kernel has it), the depth of ext2fs's pager port queues "
               "(machemu_kernel_info)")
    columns = (
        ("threads_peak", "ext2fs threads peak"),
        ("returns_in_flight_peak", "data_returns in flight peak"),
        ("returns_queued_peak", "queued at pager ports peak"),
        ("potentially_dirty_peak", "potentially dirty peak"),
        ("hard_limit", "hard limit"),
        ("writer_sleeps", "writer sleeps"),
        ("writer_sleep_s", "sleep s"),
        ("writer_pauses", "writer pauses"),
        ("laundry_peak", "laundry peak"),
        ("laundry_external_peak", "ext. laundry peak"),
        ("mib_per_s", "write MiB/s"),
        ("p99_write_ms", "p99 write ms"),
    ) + RESULT_COLUMNS
    plots = (
        (("procs.ext2fs.threads",), "ext2fs threads"),
        (("vm.returns_in_flight", "ports.pager_depth"), "data_returns in flight / queued"),
    )

    def timeout(self, quick: bool) -> float:
        return 240.0 if quick else 1200.0  # quick runs take about 50 s on a quiet machine

    def factor(self, quick: bool) -> float:
        return QUICK_FACTOR if quick else FACTOR

    def servers(self, config: Configuration, quick: bool) -> list[dict]:
        phys = physical_pages(self.kernel_base(quick))
        return ext2fs_servers(config, image_mib(phys, self.factor(quick)),
                              "--disk-latency-ms", f"{DISK_LATENCY_MS:g}")

    def steps(self, config: Configuration, quick: bool) -> list[Step]:
        return [Step("storm", "storm", ("--tasks", str(TASKS), "--threads", str(THREADS),
                                        "--factor", f"{self.factor(quick):g}",
                                        "--min-writers", str(MIN_WRITERS),
                                        "--call-timeout", "300"))]

    def row(self, config, samples, results, kernel) -> dict:
        s = results.get("storm") or {}
        lat = s.get("write_latency_ms") or {}
        expected = s.get("files", 0) * s.get("file_bytes", 0)
        soft, hard = dirty_limits(kernel)
        return {
            "threads_peak": peak(samples, "procs.ext2fs.threads"),
            "threads_start": next((v for v in (value(x, "procs.ext2fs.threads")
                                               for x in samples) if v is not None), None),
            "writers_sleeping_peak": peak(samples, "vm.dirty_sleeping"),
            "returns_in_flight_peak": peak(samples, "vm.returns_in_flight"),
            "returns_queued_peak": peak(samples, "ports.pager_depth"),
            "potentially_dirty_peak": peak(samples, "vm.potentially_dirty"),
            "hard_limit": hard,
            "soft_limit": soft,
            "writer_sleeps": delta(samples, "vm.dirty_sleeps"),
            "writer_sleep_s": rounded(delta(samples, "vm.dirty_sleep_seconds")),
            "writer_pauses": delta(samples, "vm.dirty_pauses"),
            "writer_pause_ms": rounded(delta(samples, "vm.dirty_pause_ms")),
            "laundry_peak": peak(samples, "vm.laundry_count"),
            "laundry_internal_peak": peak(samples, "vm.laundry_internal"),
            "laundry_external_peak": peak(samples, "vm.laundry_external"),
            "dirty_peak": peak(samples, "vm.dirty_count"),
            "ext2fs_rss_peak": peak(samples, "procs.ext2fs.rss"),
            "loadgen_threads_peak": sum_peak(samples, "loadgen", "threads"),
            "writers": TASKS * THREADS,
            "workers": WORKERS if config.threads == "workers" else None,
            "mib_per_s": s.get("write_phase_mib_per_s"),
            "p50_write_ms": rounded(lat.get("p50")),
            "p99_write_ms": rounded(lat.get("p99")),
            "bytes_written": s.get("bytes_written"),
            "bytes_verified": s.get("bytes_verified"),
            "bytes_expected": expected or None,
            "verified_all": bool(expected) and s.get("bytes_verified") == expected
                            and s.get("mismatches") == 0,
            "physical_pages": s.get("physical_pages") or physical_pages(kernel),
        }

    def findings(self, results: list[dict]) -> list[str]:
        """The issue's acceptance, checked against the rows that ran."""
        rows = {r["config"]: r for r in results if r.get("status") == "ok"}
        out = []
        if c := rows.get("classic-page"):
            out.append(f"classic + page writes: ext2fs peaked at "
                       f"{c['row'].get('threads_peak')} threads (claim: >= 300)")
        if a := rows.get("advisory"):
            r = a["row"]
            over = (None if r.get("potentially_dirty_peak") is None or r.get("hard_limit")
                    is None else r["potentially_dirty_peak"] - r["hard_limit"])
            out.append(f"advisory: ext2fs peaked at {r.get('threads_peak')} threads "
                       f"(claim: <= 40); potentially dirty peak "
                       f"{r.get('potentially_dirty_peak')} vs hard limit "
                       f"{r.get('hard_limit')} (over by {over}; writers in flight at "
                       f"most {r.get('writers')}); {r.get('writer_sleeps')} writer sleeps; "
                       f"at most {r.get('writers_sleeping_peak')} writers asleep at once "
                       f"on the dirty limit, each holding an ext2fs thread (its io_write "
                       f"faults in ext2fs's own task, as pager_memcpy's did)")
            if (floor := advisory_thread_floor(r)) is not None:
                out.append(f"advisory's floor with these parameters: {r['threads_start']} "
                           f"threads at the start + {r['writers_sleeping_peak']} writers "
                           f"asleep + the periodic sync's data_returns at once, "
                           f"{r['soft_limit']} pages dirty (the soft limit) in data_returns "
                           f"of {DATA_WRITE_MAX} pages = {floor} threads; the run's peak "
                           f"of data_returns in flight was {r.get('returns_in_flight_peak')}")
        if w := rows.get("classic-workers"):
            r = w["row"]
            grown = (None if r.get("threads_start") is None or r.get("threads_peak") is None
                     else r["threads_peak"] - r["threads_start"])
            out.append(f"workers model: ext2fs peaked at {r.get('threads_peak')} threads, "
                       f"{r.get('threads_start')} when the run began (grew by {grown}); "
                       f"claim: <= {WORKERS} workers + 4, where ext2fs has two pools of "
                       f"{WORKERS} (file and pager requests) with a receiver each")
        return out
