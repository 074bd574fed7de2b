"""E3, multi-page writes: one file of 128 MiB (16 MiB with --quick) written through
ext2fs from start to end (io_write of 1 MiB), synced (fsys_syncfs, waiting: every page
on the disk), read back and compared (the ``dirtystorm`` workload with one writer), with
ext2fs writing each data_return page by page (``--write-mode page``: libpager calls
pager_write_page per page, the Hurd of 2011) or in runs (``bulk``: pager_write_pages,
runs of up to 128 blocks contiguous on disk in one store write, 5eda2dbd, 2025).

Where the kernel's data_returns come from decides what bulk mode can do, since it
coalesces only the pages of one data_return:

- ``page`` and ``bulk``: memory holds the whole file (1.5x its size), so nothing is
  paged out; the dirty file goes to the disk at the sync, whose lock_request returns
  contiguous dirty pages in data_returns of up to 32 pages (DATA_WRITE_MAX).  This is
  the Hurd's measurement ("write 128 MiB dirty file"): page mode still makes one store
  write per page, bulk mode one per run.
- ``bulk-small`` and ``bulk-small-cluster``: 8 MiB of memory, so most of the file is
  paged out while it is written.  GNU Mach's pageout sends one page per data_return
  (vm_pageout_page; data_return_cluster 1), so bulk mode has nothing to coalesce;
  machemu's ``data_return_cluster = 32`` makes the daemon send runs of contiguous dirty
  inactive pages (as OSF Mach's clustered pageout did), and bulk mode writes them whole.

Every configuration uses ext2fs's workers model (the Hurd's since 2014, as in 2025) and
a disk that costs DISK_LATENCY_MS per store write, one at a time, so that only the write
path differs.  The store writes, their average size and the pager's write calls come
from ext2fs's own statistics (translators/ext2fs/store.py ``disk_*``, its log's stats
line every second), the data_returns from the kernel's vm_statistics.
"""

from __future__ import annotations

from lab.experiments.base import (
    MIB,
    RESULT_COLUMNS,
    Claim,
    Configuration,
    Experiment,
    Step,
    experiment,
    ext2fs_servers,
)
from protocol.vm_param import PAGE_SIZE

FILE_MIB, QUICK_FILE_MIB = 128, 16
BLOCK_SIZE = 4096
DISK_LATENCY_MS = 1.0
FIT_FACTOR = 1.5      # memory of the fitting configurations: 1.5x the file
SMALL_PAGES = 2048    # memory of the small ones: 8 MiB
WORKERS = 10          # libpager's workers since c8344d90
# 5eda2dbd's measurement, 128 MiB written
HURD_STORE_WRITES = {"page": 32_874, "bulk": 1_300}
HURD_AVG_KIB = {"page": 4.0, "bulk": 103.0}


def file_mib(quick: bool) -> int:
    return QUICK_FILE_MIB if quick else FILE_MIB


def write_mode(config: Configuration) -> str:
    return config.ext2fs_args[config.ext2fs_args.index("--write-mode") + 1]


@experiment
class MultiPage(Experiment):
    name = "multipage"
    aliases = ("E3",)
    title = "E3 multi-page writes: one store write per page or per run of pages"
    claim = Claim(
        text="ext2fs should write many pages at once: writing each data_return's pages "
             "in runs of contiguous blocks (pager_write_pages) instead of one "
             "pager_write_page per page makes about 25 times fewer, 25 times larger "
             "store writes.",
        source="Milos Nikic, Hurd 5eda2dbd 'libpager, ext2fs: add bulk page write "
               "support' (2025); the Hurd of 2011 wrote one page per pager_write_page "
               "(MACH-FACTS §ext2fs and tmpfs)",
        figure="128 MiB dirty file: 32,874 store writes of 4 KiB before, 1,300 of 103 "
               "KiB after")
    configurations = (
        Configuration("page", "page writes (2011), memory holds the file: the sync's "
                      "32-page data_returns written page by page", "classic",
                      {"data_return_cluster": 1}, ("--write-mode", "page"), "workers"),
        Configuration("bulk", "bulk writes (2025), memory holds the file: the sync's "
                      "data_returns written as runs", "classic",
                      {"data_return_cluster": 1}, ("--write-mode", "bulk"), "workers"),
        Configuration("bulk-small", "bulk writes, 8 MiB of memory: pageout's one-page "
                      "data_returns (GNU Mach)", "classic",
                      {"data_return_cluster": 1, "physical_pages": SMALL_PAGES},
                      ("--write-mode", "bulk"), "workers"),
        Configuration("bulk-small-cluster", "bulk writes, 8 MiB of memory, pageout "
                      "clustered (data_return_cluster 32)", "classic",
                      {"data_return_cluster": 32, "physical_pages": SMALL_PAGES},
                      ("--write-mode", "bulk"), "workers"),
    )
    workload = (f"dirtystorm with one writer: a file of {FILE_MIB} MiB ({QUICK_FILE_MIB} "
                f"with --quick) written from start to end with io_write of 1 MiB, "
                f"fsys_syncfs (waiting), read back with io_read and compared; ext2fs "
                f"workers ({WORKERS}), {BLOCK_SIZE}-byte blocks, --disk-latency-ms "
                f"{DISK_LATENCY_MS:g} (one store write at a time), memory {FIT_FACTOR:g}x "
                f"the file or {SMALL_PAGES} pages")
    samples = ("the kernel's vm_statistics over time (data_returns and their pages, "
               "dirty pages, pageouts), ext2fs's threads and the depth of its pager port "
               "queues; ext2fs's disk statistics (store writes, bytes, blocks written) "
               "before and after, from its stats line")
    columns = (
        ("data_returns", "data_returns"),
        ("pages_per_return", "pages / data_return"),
        ("write_calls", "pager write calls"),
        ("store_writes", "store writes"),
        ("avg_store_write_kib", "avg store write KiB"),
        ("hurd_store_writes", "Hurd store writes (scaled)"),
        ("pageouts", "pageouts"),
        ("write_mib_per_s", "write MiB/s"),
        ("syncfs_s", "sync s"),
        ("disk_mib_per_s", "write+sync MiB/s"),
    ) + RESULT_COLUMNS
    plots = (
        (("vm.data_returns",), "data_returns (cumulative)"),
        (("vm.dirty_count",), "dirty pages"),
        (("ports.pager_depth",), "queued at ext2fs's pager ports"),
    )

    def timeout(self, quick: bool) -> float:
        return 120.0 if quick else 900.0  # quick: 20 to 50 s each on a loaded machine

    def kernel_base(self, quick: bool) -> dict:
        """Memory 1.5x the file: the fitting configurations' (the small ones set their
        own)."""
        pages = int(FIT_FACTOR * file_mib(quick) * MIB // PAGE_SIZE)
        return {"physical_pages": pages}

    def servers(self, config, quick):
        size = int(file_mib(quick) * 1.25) + 32
        # no periodic sync: the dirty file reaches the disk by pageout or by the sync
        return ext2fs_servers(config, size, "--block-size", str(BLOCK_SIZE),
                              "--disk-latency-ms", f"{DISK_LATENCY_MS:g}",
                              "--workers", str(WORKERS), "--sync-interval", "0")

    def steps(self, config, quick):
        return [Step("write", "dirtystorm", ("--tasks", "1", "--threads", "1",
                                             "--file-mib", str(file_mib(quick)),
                                             "--chunk-kib", "1024",
                                             "--call-timeout", "300"))]

    def row(self, config, samples, results, kernel) -> dict:
        s = results.get("write") or {}
        kv = s.get("kernel_vm") or {}
        e = ((s.get("ext2fs") or {}).get("delta")) or {}
        c = s.get("counters") or {}
        returns, rpages = kv.get("data_returns"), kv.get("data_return_pages")
        writes, blocks = e.get("disk_writes"), e.get("blocks_written")
        nbytes = s.get("bytes_written") or 0
        secs = (c.get("write_s") or 0) + (c.get("syncfs_s") or 0)
        mode = write_mode(config)
        scale = nbytes / (FILE_MIB * MIB) if nbytes else None
        expected = s.get("files", 0) * s.get("file_bytes", 0)
        return {
            "write_mode": mode,
            "data_returns": returns,
            "data_return_pages": rpages,
            "pages_per_return": round(rpages / returns, 2) if returns else None,
            "write_calls": e.get("data_returns"),
            "store_writes": writes,
            "blocks_written": blocks,
            "avg_store_write_kib": (round(blocks * BLOCK_SIZE / writes / 1024, 1)
                                    if writes and blocks is not None else None),
            "hurd_store_writes": (round(HURD_STORE_WRITES[mode] * scale) if scale
                                  else None),
            "hurd_avg_kib": HURD_AVG_KIB[mode],
            "pageouts": ((s.get("vm") or {}).get("delta") or {}).get("pageouts"),
            "dirty_before_sync": c.get("dirty_before_sync"),
            "write_mib_per_s": s.get("write_mib_per_s"),
            "disk_mib_per_s": round(nbytes / MIB / secs, 2) if secs else None,
            "syncfs_s": round(c["syncfs_s"], 2) if c.get("syncfs_s") is not None else None,
            "stats_fresh": ((s.get("ext2fs") or {}).get("after") or {}).get("fresh"),
            "bytes_written": nbytes or None,
            "bytes_verified": s.get("bytes_verified"),
            "bytes_expected": expected or None,
            "verified_all": bool(expected) and s.get("bytes_verified") == expected
                            and s.get("mismatches") == 0,
            "physical_pages": int(kernel.get("physical_pages", 0)) or None,
        }

    def findings(self, results: list[dict]) -> list[str]:
        rows = {r["config"]: r["row"] for r in results if r.get("status") == "ok"}
        out = []
        p, b = rows.get("page"), rows.get("bulk")
        if p and b and p.get("store_writes") and b.get("store_writes"):
            out.append(f"memory holding the file: {p['store_writes']} store writes of "
                       f"{p['avg_store_write_kib']} KiB in page mode, {b['store_writes']} "
                       f"of {b['avg_store_write_kib']} KiB in bulk mode: "
                       f"{p['store_writes'] / b['store_writes']:.1f}x fewer (Hurd: "
                       f"{HURD_STORE_WRITES['page'] / HURD_STORE_WRITES['bulk']:.1f}x, "
                       f"32,874 vs 1,300 for 128 MiB); the same "
                       f"{b['data_returns']} data_returns of "
                       f"{b['pages_per_return']} pages reached both")
        s, sc = rows.get("bulk-small"), rows.get("bulk-small-cluster")
        if s and sc:
            out.append(f"8 MiB of memory: bulk mode made {s['store_writes']} store writes "
                       f"({s['avg_store_write_kib']} KiB) from {s['data_returns']} "
                       f"data_returns of {s['pages_per_return']} pages (GNU Mach's "
                       f"pageout: one page each), {sc['store_writes']} "
                       f"({sc['avg_store_write_kib']} KiB) when the daemon sends runs "
                       f"({sc['pages_per_return']} pages per data_return): bulk writes "
                       f"need multi-page data_returns")
        return out
