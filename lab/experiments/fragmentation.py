"""E2, map fragmentation: ext2fs under the ``mixed`` workload (lab.loadgen.mixed: many
files created, written, read, appended to, overwritten and unlinked by concurrent
clients, every byte verified), allocating its own memory as the Hurd's ext2fs did
(translators.ext2fs.hurdalloc: glibc's brk heap and mprotected arenas, hurdmalloc,
libpager's pagemaps, pager_memcpy's window per call), under the kernel's two merge
modes and two lookup structures.

The entries arise by themselves in the kernel's vm_map: pieces of the heaps made
READ|WRITE page range by page range stay separate entries under classic merging (it
only extends the previous entry at vm_allocate); pagemaps placed in the holes that
pager_memcpy's windows and out-of-line buffers leave cannot merge with neighbours that
are other objects, or split ones.  GNU Mach 2023's coalescing merges the heap's pieces
back after each vm_protect, and since 2021 libpager keeps pagemaps on the heap.  The
cost: classic vm_map_lookup_entry and first-fit scan the list; the tree does not.

The configurations are the kernels of 2011 (list), 2012-2022 (tree) and 2023
(coalescing) under the ext2fs of 2011, and the kernel of 2023 with the pagemap on the
heap (the Hurd of 2023).  The workload is the same sequence of operations (one seed) in
every configuration; the files stay (--keep-files), as a node cache keeps them.
"""

from __future__ import annotations

from lab.experiments.base import (
    RESULT_COLUMNS,
    Claim,
    Configuration,
    Experiment,
    Step,
    experiment,
    ext2fs_servers,
)
from lab.experiments.summary import cpu_seconds, peak, rounded
from lab.loadgen.mixed import lookup_cost

# ext2fs's allocations as in the Hurd of 2011; then with the pagemap on the heap (2021)
HURD_2011 = ("--hurd-heap", "--hurdmalloc", "--pagemap", "mmap", "--io-window", "per-call")
HURD_2021 = ("--hurd-heap", "--hurdmalloc", "--pagemap", "heap", "--io-window", "per-call")
LIST = {"map_lookup": "list", "map_merge": "classic", "map_lookup_timing": True}
TREE = {"map_lookup": "tree", "map_merge": "classic", "map_lookup_timing": True}
COALESCE = {"map_lookup": "tree", "map_merge": "coalesce", "map_lookup_timing": True}
# (tasks, threads per task, operations per thread, physical pages, image MiB)
FULL = (2, 4, 1500, 16384, 256)
QUICK = (2, 2, 600, 8192, 96)
MAX_KIB = 16
CLASSIC_TARGET, COALESCE_TARGET = 1000, 100


def late(series: list, share: float = 1 / 3) -> list:
    """The rows of a latency_series in the last ``share`` of the run."""
    if not series:
        return []
    end = series[-1][0]
    return [r for r in series if r[0] >= end * (1 - share)]


def per_op_ms(cost: dict, lat: list, since: float) -> float | None:
    """The kernel's milliseconds in the server's map lookups per operation of the
    workload from ``since`` on: ``cost``'s ms per second over the operations per second
    its latency buckets counted then."""
    rows = [r for r in lat if r[0] >= since]
    span = (rows[-1][0] - rows[0][0] + 1) if rows else 0
    ops = sum(r[1] for r in rows)
    if not ops or cost.get("kernel_map_ms_per_s") is None:
        return None
    return round(cost["kernel_map_ms_per_s"] / (ops / span), 3)


def median_p50(rows: list):
    """The median of the buckets' p50 latencies (ms), None without rows."""
    vals = sorted(r[2] for r in rows if r[2] is not None)
    return vals[len(vals) // 2] if vals else None


@experiment
class Fragmentation(Experiment):
    name = "fragmentation"
    aliases = ("E2",)
    title = "E2 map fragmentation: ext2fs's map under classic merging and coalescing"
    claim = Claim(
        text="Under load a translator's map fragments from tens of entries to thousands "
             "(protection changed on parts of heap reservations, small permanent "
             "allocations among short-lived buffers), and every vm_map_lookup_entry "
             "scans them; coalescing entries after enter, protect and inherit keeps the "
             "map near a hundred.",
        source="Sergio Lopez, 'Reduce task map fragmentation' (Hurd wiki, 2011); the "
               "Hurd wiki's gnumach_vm_map_entry_forward_merging; Sergey Bugaev's "
               "coalescing series (GNU Mach dc0c9160 .. 1ca3a6d9, 2023) and libpager "
               "ec5632b9 (2021)",
        figure="ext2fs ~60 entries fresh, 6,500-7,500 after hours (2011); 5,000-20,000 "
               "after grep -r /usr (2022), 93 after the 2023 series")
    configurations = (
        Configuration("classic-list", "GNU Mach before 2012: list lookup, classic merging; "
                      "ext2fs allocating as in 2011", "classic", LIST, HURD_2011),
        Configuration("classic-tree", "GNU Mach 2012-2022: tree lookup, classic merging; "
                      "the same ext2fs", "classic", TREE, HURD_2011),
        Configuration("coalesce-tree", "GNU Mach 2023: tree lookup, coalescing; the same "
                      "ext2fs (the kernel's change alone)", "classic", COALESCE, HURD_2011),
        Configuration("coalesce-2023", "GNU Mach 2023 and libpager's pagemap on the heap "
                      "(ec5632b9, 2021): the Hurd of 2023", "classic", COALESCE, HURD_2021),
    )
    workload = (f"mixed: {FULL[0]} tasks x {FULL[1]} threads x {FULL[2]} operations "
                f"({QUICK[0]} x {QUICK[1]} x {QUICK[2]} with --quick) over files of up to "
                f"{MAX_KIB} KiB (create 30, read 30, append 15, overwrite 10, unlink 10, "
                f"stat 5; the same seed everywhere), then every live file read back and "
                f"compared; the files stay; before and after, alone, 100 create-write-"
                f"read-unlink cycles timed (the probe); ext2fs (multithread) with --hurd-heap "
                f"--hurdmalloc --pagemap mmap|heap --io-window per-call")
    samples = ("ext2fs's map entries over time (machemu_kernel_info, the recorder and the "
               "workload), the kernel's vm_map_lookup_entry and first-fit calls in "
               "ext2fs's map and their time (map_cost), each operation's latency by kind "
               "and over time, threads, RSS and CPU of every process")
    columns = (
        ("entries_start", "entries at start"),
        ("entries_end", "entries at end"),
        ("entries_peak", "entries peak"),
        ("files_live", "files"),
        ("lookup_us", "us / lookup"),
        ("find_space_us", "us / first-fit"),
        ("kernel_map_ms_per_s", "kernel map ms/s"),
        ("late_kernel_map_ms_per_op", "kernel map ms / op, last third"),
        ("late_lookup_us", "us / lookup, last third"),
        ("late_find_space_us", "us / first-fit, last third"),
        ("probe_before_ms", "probe cycle p50 ms, before"),
        ("probe_after_ms", "probe cycle p50 ms, after"),
        ("late_p50_ms", "op p50 ms, last third"),
        ("ops_per_s", "ops/s"),
    ) + RESULT_COLUMNS
    plots = (
        (("map_entries.ext2fs",), "ext2fs map entries"),
        (("procs.kernel.cpu",), "kernel CPU s"),
    )
    # what the report framework draws as bars and CDFs (where it draws them)
    bars = (("entries_end", "ext2fs map entries at the end"),
            ("late_lookup_us", "us per vm_map_lookup_entry, last third"),
            ("late_find_space_us", "us per first-fit search, last third"),
            ("probe_after_ms", "probe cycle p50 ms, after the run"))
    latencies = (("mixed", "latency_ms", "mixed: every operation"),)

    def timeout(self, quick: bool) -> float:
        return 150.0 if quick else 900.0

    def sizes(self, quick: bool) -> tuple:
        return QUICK if quick else FULL

    def kernel_base(self, quick: bool) -> dict:
        # Memory enough for the files the workload keeps: fragmentation, not paging.
        return {"physical_pages": self.sizes(quick)[3]}

    def servers(self, config: Configuration, quick: bool) -> list[dict]:
        return ext2fs_servers(config, self.sizes(quick)[4])

    def steps(self, config: Configuration, quick: bool) -> list[Step]:
        tasks, threads, ops = self.sizes(quick)[:3]
        return [Step("mixed", "mixed", ("--tasks", str(tasks), "--threads", str(threads),
                                        "--ops", str(ops), "--max-kib", str(MAX_KIB),
                                        "--keep-files", "--call-timeout", "300"))]

    def row(self, config, samples, results, kernel) -> dict:
        s = results.get("mixed") or {}
        series = s.get("map_series") or []
        cost = lookup_cost(series)
        end = series[-1][0] if series and series[-1][0] is not None else 0
        late_cost = lookup_cost(series, since=end * 2 / 3)
        lat = s.get("latency_series") or []
        first = [r for r in lat if lat and r[0] <= lat[-1][0] / 3]
        by_kind = s.get("latency_by_kind_ms") or {}
        return {
            "entries_start": s.get("map_entries_start"),
            "entries_end": s.get("map_entries_end"),
            "entries_peak": max(filter(None, (peak(samples, "map_entries.ext2fs"),
                                              s.get("map_entries_peak"))), default=None),
            "files_live": s.get("files_live_at_end"),
            "files_created": s.get("files_created"),
            "lookups": cost.get("lookups"),
            "lookup_us": cost.get("lookup_us_per_call"),
            "find_spaces": cost.get("find_spaces"),
            "find_space_us": cost.get("find_space_us_per_call"),
            "kernel_map_ms_per_s": cost.get("kernel_map_ms_per_s"),
            "late_lookup_us": late_cost.get("lookup_us_per_call"),
            "late_find_space_us": late_cost.get("find_space_us_per_call"),
            "late_entries_mean": late_cost.get("entries_mean"),
            "late_kernel_map_ms_per_op": per_op_ms(late_cost, lat, end * 2 / 3),
            "early_p50_ms": rounded(median_p50(first)),
            # a lone client's create-write-read-unlink cycle: median and best latency
            "probe_best_before_ms": rounded((s.get("probe_before") or {}).get("min")),
            "probe_best_after_ms": rounded((s.get("probe_after") or {}).get("min")),
            "probe_before_ms": rounded((s.get("probe_before") or {}).get("p50")),
            "probe_after_ms": rounded((s.get("probe_after") or {}).get("p50")),
            "late_p50_ms": rounded(median_p50(late(lat))),
            "read_p50_ms": rounded((by_kind.get("read") or {}).get("p50")),
            "read_p99_ms": rounded((by_kind.get("read") or {}).get("p99")),
            "create_p50_ms": rounded((by_kind.get("create") or {}).get("p50")),
            "ops_per_s": s.get("ops_per_s"),
            "ext2fs_cpu_s": rounded(cpu_seconds(samples, "ext2fs")),
            "kernel_cpu_s": rounded(cpu_seconds(samples, "kernel")),
            "bytes_written": s.get("bytes_written"),
            "bytes_verified": s.get("bytes_verified"),
            # what the final read-back alone verifies: every live file's bytes
            "bytes_expected": s.get("final_bytes"),
            "verified_all": bool(s) and s.get("exit_status") == 0 and s.get("mismatches") == 0
                            and s.get("files_final_verified") == s.get("files_live_at_end"),
            "physical_pages": kernel.get("physical_pages"),
        }

    def findings(self, results: list[dict]) -> list[str]:
        rows = {r["config"]: r["row"] for r in results if r.get("status") == "ok"}
        out = []
        for name, want in (("classic-list", f">= {CLASSIC_TARGET}"),
                           ("classic-tree", f">= {CLASSIC_TARGET}"),
                           ("coalesce-tree", f"<= {COALESCE_TARGET}"),
                           ("coalesce-2023", f"<= {COALESCE_TARGET}")):
            if r := rows.get(name):
                out.append(f"{name}: ext2fs's map went from {r.get('entries_start')} to "
                           f"{r.get('entries_end')} entries over {r.get('files_live')} "
                           f"files kept (claim: {want})")
        old, alone, new = (rows.get(c) for c in ("classic-tree", "coalesce-tree",
                                                 "coalesce-2023"))
        if old and alone and new and None not in (old.get("entries_end"),
                                                  alone.get("entries_end")):
            out.append(f"coalescing alone merged {old['entries_end'] - alone['entries_end']}"
                       f" entries (the heaps' pieces made READ|WRITE apart); the 2011 "
                       f"pagemaps, each an object of its own among others, do not merge "
                       f"(vm_object_coalesce joins an object only with itself or with "
                       f"none): with the pagemap on the heap the map ends at "
                       f"{new.get('entries_end')}")
        a, b = rows.get("classic-list"), rows.get("classic-tree")
        if a and b:
            out.append(f"list vs tree at {a.get('late_entries_mean')} / "
                       f"{b.get('late_entries_mean')} entries (last third): "
                       f"{a.get('late_lookup_us')} vs {b.get('late_lookup_us')} us per "
                       f"lookup, {a.get('late_find_space_us')} vs "
                       f"{b.get('late_find_space_us')} us per first-fit search, "
                       f"{a.get('late_kernel_map_ms_per_op')} vs "
                       f"{b.get('late_kernel_map_ms_per_op')} ms of the kernel's time in "
                       f"ext2fs's map per operation (beside an operation's p50 of "
                       f"{a.get('late_p50_ms')} vs {b.get('late_p50_ms')} ms); a lone "
                       f"client's create-write-read-unlink cycle (p50) "
                       f"{a.get('probe_before_ms')} -> {a.get('probe_after_ms')} ms (list) "
                       f"vs {b.get('probe_before_ms')} -> {b.get('probe_after_ms')} ms "
                       f"(tree), before -> after the run")
        return out
