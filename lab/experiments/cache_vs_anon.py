"""E5 (small form), anonymous memory against the file cache: the ``cachemix`` workload
(lab.loadgen.cachemix: a clean file cache re-read through ext2fs while anonymous memory
grows past its share, with the default pager present) under ``classic``, ``advisory``
and ``modern``.

The kernel's counters are sampled over time; the row says how many anonymous pages went
to the default pager, how many clean pages were freed, the default pager's writes per
page the daemon freed, and where the first anonymous pageout came: how many clean pages
(all external: no anonymous page has been paged back in by then) had been freed before
it, and how far the resident external pages had fallen.  Under ``advisory`` the scan
frees clean inactive external pages first and flushes internal pages only if still
short: the file cache goes before any anonymous page.
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
    image_mib,
    physical_pages,
)
from lab.experiments.summary import counter, counter_sum, first_anon_pageout, value
from protocol.vm_param import PAGE_SIZE

MIB = 1 << 20
CACHE_FACTOR, ANON_FACTOR = 0.75, 0.5
READ_PASSES = 2
READERS, WRITERS = 2, 2
ANON_PATH = "vm.pageout.returned_internal"
FREED_PATHS = ("vm.pageout.freed_clean", "vm.pageout.freed_clean_external")


def anon_pages(sample: dict):
    """Anonymous pages the daemon sent to the default pager so far."""
    return counter(sample, ANON_PATH)


def clean_freed(sample: dict):
    """Clean pages the daemon freed so far (advisory's first pass and the scan)."""
    return counter_sum(sample, FREED_PATHS)


def external_resident(sample: dict):
    return value(sample, "resident.external")


@experiment
class CacheVsAnon(Experiment):
    name = "cache_vs_anon"
    aliases = ("E5",)
    title = "E5 anonymous memory vs file cache: which goes first under shortage"
    claim = Claim(
        text="Under memory shortage clean file cache should go before anonymous memory: "
             "advisory pageout frees clean external pages first and flushes internal "
             "pages to the default pager only if still short.",
        source="Sergio Lopez, advisory pageout 666299d0 (2011): vm_pageout_scan's "
               "first pass (MACH-FACTS §Pageout, advisory)",
        figure="no published number: the order of eviction is the claim")
    configurations = (
        Configuration("classic", "classic pageout (GNU Mach 2011)", "classic"),
        Configuration("advisory", "advisory pageout (666299d0)", "advisory"),
        Configuration("modern", "modern pageout (GNU Mach >= 1.8)", "modern"),
    )
    workload = (f"cachemix: {READERS} readers write a file each through ext2fs (together "
                f"{CACHE_FACTOR:g}x physical memory), fsys_syncfs, read them back; "
                f"{WRITERS} writers vm_allocate {ANON_FACTOR:g}x physical memory and "
                f"write every page; the readers re-read their files {READ_PASSES} times "
                f"while the anonymous pages lie idle; the writers verify every page; "
                f"defpager present")
    samples = ("the kernel's vm_statistics over time (anonymous pages sent to the default "
               "pager, clean pages freed), resident pages by kind (machemu_kernel_info), "
               "threads and RSS of every process")
    columns = (
        ("anon_to_defpager", "anon pages to defpager"),
        ("clean_freed", "clean pages freed"),
        ("defpager_writes_per_freed", "defpager writes / freed page"),
        ("reread_anon_to_defpager", "re-read: anon to defpager"),
        ("reread_clean_freed", "re-read: clean freed"),
        ("reread_clean_freed_before_anon", "re-read: clean freed before 1st anon"),
        ("anon_clean_freed_before_anon", "anon phase: clean freed before 1st anon"),
        ("reread_mib_per_s", "file read MiB/s"),
        ("anon_mib_per_s", "anon MiB/s"),
    ) + RESULT_COLUMNS
    plots = (
        (("resident.external",), "resident external pages"),
        (("resident.internal",), "resident internal pages"),
        ((ANON_PATH,), "anon pages sent to defpager"),
    )
    def timeout(self, quick: bool) -> float:
        return 150.0 if quick else 900.0

    def servers(self, config, quick):
        phys = physical_pages(self.kernel_base(quick))
        return ext2fs_servers(config, image_mib(phys, CACHE_FACTOR))

    def steps(self, config, quick):
        return [Step("cachemix", "cachemix", (
            "--tasks", "1", "--threads", str(READERS + WRITERS),
            "--file-threads", str(READERS), "--cache-factor", f"{CACHE_FACTOR:g}",
            "--anon-factor", f"{ANON_FACTOR:g}", "--read-passes", str(READ_PASSES),
            "--call-timeout", "300"))]

    def row(self, config, samples, results, kernel) -> dict:
        s = results.get("cachemix") or {}
        c = s.get("counters") or {}
        phases = {"anon": (s.get("anon_start_at"), s.get("reread_start_at")),
                  "reread": (s.get("reread_start_at"), s.get("reread_end_at"))}
        first = {k: first_anon_pageout(samples, anon_pages, clean_freed, external_resident,
                                       since=a, until=b) if a else {}
                 for k, (a, b) in phases.items()}
        whole = first_anon_pageout(samples, anon_pages, clean_freed)
        vm = [x["vm"] for x in samples if "vm" in x]
        pageouts = vm[-1].get("pageouts", 0) - vm[0].get("pageouts", 0) if vm else None
        freed = whole["freed_total"]
        daemon_freed = (freed or 0) + (pageouts or 0)
        # what the default pager was given to write: the kernel's count (its own log's
        # statistics line is written every few seconds, so it may lag)
        writes = whole["anon_total"]
        anon_s = (c.get("anon_write_s", 0) + c.get("anon_verify_s", 0)) / max(1, WRITERS)
        anon_bytes = (s.get("anon_pages_written", 0) + s.get("anon_pages_verified", 0)) \
            * PAGE_SIZE
        files = s.get("readers", 0) * s.get("file_bytes", 0)
        want_anon = s.get("writers", 0) * s.get("anon_pages_per_writer", 0)
        verified = (s.get("bytes_verified") or 0) + s.get("anon_pages_verified", 0) * PAGE_SIZE
        row = {
            "anon_to_defpager": whole["anon_total"],
            "clean_freed": freed,
            "pageouts": pageouts,
            "defpager_writes": writes,
            "defpager_reported_writes": s.get("defpager_page_writes"),
            "defpager_writes_per_freed": (round(writes / daemon_freed, 3)
                                          if writes is not None and daemon_freed else None),
            "reread_mib_per_s": s.get("read_mib_per_s"),
            "anon_mib_per_s": round(anon_bytes / MIB / anon_s, 2) if anon_s else None,
            "bytes_verified": verified or None,
            "bytes_expected": (files * (1 + READ_PASSES) + want_anon * PAGE_SIZE) or None,
            "verified_all": bool(s) and s.get("mismatches") == 0
                            and s.get("exit_status") == 0
                            and s.get("anon_pages_verified") == want_anon,
            "file_cache_pages": files // PAGE_SIZE,
            "physical_pages": s.get("physical_pages") or physical_pages(kernel),
        }
        for k, f in first.items():
            row[f"{k}_anon_to_defpager"] = f.get("anon_total")
            row[f"{k}_clean_freed"] = f.get("freed_total")
            row[f"{k}_first_anon_pageout_s"] = f.get("at")
            # None when no anonymous page went: then every clean free came "before"
            row[f"{k}_clean_freed_before_anon"] = (f.get("freed_before") if f.get("at")
                                                   is not None else f.get("freed_total"))
            row[f"{k}_clean_freed_by_anon"] = f.get("freed_by")
            row[f"{k}_external_dropped_before_anon"] = f.get("external_dropped_before")
        return row

    def findings(self, results: list[dict]) -> list[str]:
        out = []
        for r in results:
            if r.get("status") != "ok":
                continue
            row = r["row"]
            for phase, what in (("anon", "while anonymous memory grew"),
                                ("reread", "while the file cache was re-read")):
                at = row.get(f"{phase}_first_anon_pageout_s")
                freed = row.get(f"{phase}_clean_freed_before_anon")
                if at is None:
                    out.append(f"{r['config']}, {what}: {freed} clean pages freed, no "
                               f"anonymous page sent to the default pager")
                else:
                    out.append(f"{r['config']}, {what}: first anonymous pageout after "
                               f"{at} s, {freed} (at most "
                               f"{row.get(f'{phase}_clean_freed_by_anon')}) clean pages "
                               f"freed before it; "
                               f"{row.get(f'{phase}_anon_to_defpager')} anonymous pages "
                               f"to the default pager in the phase")
        return out
