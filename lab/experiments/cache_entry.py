"""E4, cache-entry deactivation: files opened, read whole and closed in a loop (the
``reopen`` workload, lab.loadgen.reopen) so that their memory objects enter the kernel's
object cache at every close and leave it at the next open, with the classic kernel's
``deactivate_on_cache`` on (GNU Mach until 98d64d1a, 2013: vm_object_deallocate calls
vm_object_deactivate_pages on every object it caches) and off (the 2013 change's
"these cached pages are not automatically deactivated", alone: same pageout, same
4,000-object cache).

Two steps on one cluster:

- ``quiet``: the reopened files (half of physical memory) alone, every page resident
  after the first pass.  What deactivation costs by itself: every close moves the
  file's pages to the inactive queue, every reopen's reads find them there and
  reactivate them; the kernel's CPU per cache entry pays for both.
- ``pressure``: the same reopened set beside files held open (one and a half times
  physical memory, a quarter of them read each pass in turn: each held file every
  fourth pass).  The held files never enter the cache; their pages come in through the
  active queue and leave it by the classic scan's balancing.  The reopened files' pages,
  deactivated at each close, are on the inactive queue ahead of them, so under the
  shortage the scan frees them first, and the next pass asks ext2fs for them again.

ext2fs lets go of a file's mapping when its last open goes (translators.fsserver
``_last_close``): that is what makes a close an object-cache entry, as pager_memcpy's
unmapping after each call did in the Hurd.
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
    physical_pages,
)
from protocol.vm_param import PAGE_SIZE

FILE_KIB = 256
FILE_PAGES = FILE_KIB * 1024 // PAGE_SIZE
HOT_SHARE = 0.5     # the reopened files together: this share of physical memory
HELD_FACTOR = 1.5   # the held files together: this many times physical memory
HELD_EVERY = 4      # each held file read every 4th pass (a quarter of them each pass)
QUIET_PASSES = 40
PRESSURE_PASSES = 16


def hot_files(pages: int) -> int:
    return max(1, int(HOT_SHARE * pages) // FILE_PAGES)


def held_files(pages: int) -> int:
    return max(1, int(HELD_FACTOR * pages) // FILE_PAGES)


def step_sets(results: dict, step: str) -> dict:
    return ((results.get(step) or {}).get("sets")) or {}


@experiment
class CacheEntry(Experiment):
    name = "cache_entry"
    aliases = ("E4",)
    title = "E4 cache-entry deactivation: a closed file's pages sent to the inactive queue"
    claim = Claim(
        text="GNU Mach should not deactivate every page of an object that enters the "
             "object cache: a file closed and soon reopened has its pages moved to the "
             "inactive queue at each close, reactivated at each reopen, and reclaimed "
             "first under pressure.",
        source="GNU Mach vm/vm_object.c vm_object_deallocate -> "
               "vm_object_deactivate_pages (6af53cb9, 2011); removed by Richard Braun, "
               "98d64d1a 'VM cache policy change' (2013): 'these cached pages are not "
               "automatically deactivated as objects can quickly be referenced again' "
               "(MACH-FACTS §Pageout classic, modern)",
        figure="no published number: the deactivations, reactivations and pages lost "
               "are the claim")
    configurations = (
        Configuration("deactivate", "classic, deactivate_on_cache = true (GNU Mach "
                      "before 98d64d1a)", "classic", {"deactivate_on_cache": True}),
        Configuration("keep", "classic, deactivate_on_cache = false (98d64d1a's "
                      "no-deactivation alone)", "classic", {"deactivate_on_cache": False}),
    )
    workload = (f"reopen: files of {FILE_KIB} KiB, together {HOT_SHARE:g}x physical "
                f"memory, each opened (dir_lookup), read whole (io_read), compared and "
                f"closed, {QUIET_PASSES} passes alone (quiet), then {PRESSURE_PASSES} "
                f"passes beside files held open ({HELD_FACTOR:g}x physical memory, each "
                f"read every {HELD_EVERY}th pass, 1/{HELD_EVERY} of them each pass); "
                f"every byte verified; one sequential reader, so the kernel counters "
                f"taken between its reads belong to one set of files")
    samples = ("the kernel's vm_statistics over time (active and inactive pages, "
               "reactivations, object-cache entries and pages deactivated on entry, "
               "data_requests), the kernel's and ext2fs's CPU (psutil); the workload "
               "takes vm_statistics around each set's reads and the kernel's CPU around "
               "each loop")
    columns = (
        ("cache_deactivated", "pages deactivated on entry"),
        ("reactivations", "reactivations"),
        ("cache_hit_rate", "cache hit rate"),
        ("kernel_cpu_per_entry_ms", "kernel CPU ms / cache entry"),
        ("deactivate_us_per_entry", "of which deactivating, us"),
        ("pressure_deactivated", "pressure: deactivated"),
        ("pressure_reactivations", "pressure: reactivations"),
        ("pressure_reread_pages", "pressure: reopened pages read again"),
        ("pressure_page_hit_rate", "pressure: reopened page hit rate"),
        ("pressure_held_hit_rate", "pressure: held page hit rate"),
        ("read_mib_per_s", "quiet read MiB/s"),
    ) + RESULT_COLUMNS
    plots = (
        (("vm.inactive_count",), "inactive pages"),
        (("vm.reactivations",), "reactivations (cumulative)"),
        (("vm.cache_deactivated",), "pages deactivated on cache entry (cumulative)"),
        (("vm.data_requests",), "data_requests (cumulative)"),
    )

    def timeout(self, quick: bool) -> float:
        return 150.0 if quick else 1200.0  # quick runs take about 40 s on a quiet machine

    def servers(self, config, quick):
        pages = physical_pages(self.kernel_base(quick))
        files = hot_files(pages) + held_files(pages)
        size = files * FILE_KIB // 1024 * 5 // 4 + 32
        return ext2fs_servers(config, size, "--sync-interval", "0")

    def steps(self, config, quick):
        pages = physical_pages(self.kernel_base(quick))
        hot, held = hot_files(pages), held_files(pages)
        common = ("--tasks", "1", "--threads", "1", "--file-kib", str(FILE_KIB),
                  "--call-timeout", "300")
        return [Step("quiet", "reopen", (*common, "--files", str(hot),
                                         "--passes", str(QUIET_PASSES))),
                Step("pressure", "reopen", (*common, "--files", str(hot),
                                            "--held", str(held),
                                            "--held-every", str(HELD_EVERY),
                                            "--passes", str(PRESSURE_PASSES)))]

    def row(self, config, samples, results, kernel) -> dict:
        q, p = results.get("quiet") or {}, results.get("pressure") or {}
        qr = step_sets(results, "quiet").get("reopen") or {}
        pr = step_sets(results, "pressure").get("reopen") or {}
        ph = step_sets(results, "pressure").get("held") or {}
        steps = [s for s in (q, p) if s]
        verified = sum(s.get("bytes_verified") or 0 for s in steps)
        expected = sum(s.get("bytes_expected") or 0 for s in steps)
        return {
            "cache_entered": q.get("cache_entered"),
            "cache_deactivated": qr.get("cache_deactivated"),
            "reactivations": qr.get("reactivations"),
            "cache_hit_rate": q.get("cache_hit_rate"),
            "kernel_cpu_s": q.get("kernel_cpu_s"),
            "server_cpu_s": q.get("server_cpu_s"),
            "kernel_cpu_per_entry_ms": q.get("kernel_cpu_per_cache_entry_ms"),
            "deactivate_us_per_entry": q.get("deactivate_us_per_cache_entry"),
            "quiet_reread_pages": qr.get("data_requests"),
            "pages_read": qr.get("pages_read"),
            "read_mib_per_s": q.get("read_mib_per_s"),
            "pressure_deactivated": pr.get("cache_deactivated"),
            "pressure_reactivations": pr.get("reactivations"),
            "pressure_reread_pages": pr.get("data_requests"),
            "pressure_pages_read": pr.get("pages_read"),
            "pressure_page_hit_rate": pr.get("page_hit_rate"),
            "pressure_held_hit_rate": ph.get("page_hit_rate"),
            "pressure_cache_hit_rate": p.get("cache_hit_rate"),
            "pressure_kernel_cpu_s": p.get("kernel_cpu_s"),
            "pressure_read_mib_per_s": p.get("read_mib_per_s"),
            "per_pass_reread": (p.get("per_pass_data_requests") or [None])[0],
            "hot_files": q.get("files"), "held_files": p.get("held"),
            "bytes_verified": verified or None,
            "bytes_expected": expected or None,
            "verified_all": len(steps) == 2 and all(
                s.get("mismatches") == 0 and s.get("exit_status") == 0
                and s.get("bytes_verified") == s.get("bytes_expected") for s in steps),
            "physical_pages": physical_pages(kernel),
        }

    def findings(self, results: list[dict]) -> list[str]:
        rows = {r["config"]: r["row"] for r in results if r.get("status") == "ok"}
        d, k = rows.get("deactivate"), rows.get("keep")
        out = []
        for name, r in rows.items():
            out.append(f"{name}, quiet: {r.get('cache_entered')} cache entries, "
                       f"{r.get('cache_deactivated')} pages deactivated on entry, "
                       f"{r.get('reactivations')} reactivations for {r.get('pages_read')} "
                       f"pages read, kernel CPU {r.get('kernel_cpu_per_entry_ms')} ms per "
                       f"cache entry; pressure: {r.get('pressure_reread_pages')} of "
                       f"{r.get('pressure_pages_read')} reopened pages read again from "
                       f"ext2fs (page hit rate {r.get('pressure_page_hit_rate')}), held "
                       f"files' hit rate {r.get('pressure_held_hit_rate')}")
        if d and k:
            cd, ck = d.get("kernel_cpu_per_entry_ms"), k.get("kernel_cpu_per_entry_ms")
            us = d.get("deactivate_us_per_entry")
            if cd and ck and us is not None:
                out.append(f"kernel CPU per cache entry: {cd} ms with deactivation, {ck} "
                           f"ms without ({(cd / ck - 1) * 100:+.0f} %); "
                           f"vm_object_deactivate_pages itself took {us} us per entry "
                           f"(timed in the kernel), {us / 10 / cd:.1f} % of it, and each "
                           f"deactivated page costs a reactivation at the next read: "
                           f"a difference of a few percent, which a shared machine's "
                           f"noise can hide or reverse")
            hd, hk = d.get("pressure_page_hit_rate"), k.get("pressure_page_hit_rate")
            if hd is not None and hk is not None:
                out.append(f"under pressure the reopened files kept {hd:.0%} of their "
                           f"pages with deactivation and {hk:.0%} without: pages "
                           f"deactivated at each close wait on the inactive queue ahead of "
                           f"the held files' pages, which the scan reaches only after "
                           f"they left the active queue")
        return out
