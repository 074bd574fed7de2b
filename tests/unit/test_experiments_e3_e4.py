"""E3 (lab.experiments.multipage) and E4 (lab.experiments.cache_entry) without a
cluster: their configurations and sizes, the steps they run, and their rows and
findings from workload summaries shaped like the real ones."""

from __future__ import annotations

import pytest

from lab.experiments.base import QUICK_KERNEL, find
from lab.experiments.cache_entry import (
    FILE_PAGES,
    CacheEntry,
    held_files,
    hot_files,
)
from lab.experiments.multipage import (
    FILE_MIB,
    HURD_STORE_WRITES,
    QUICK_FILE_MIB,
    SMALL_PAGES,
    MultiPage,
)
from lab.loadgen.cli import build_parser

pytestmark = pytest.mark.timeout(60)
MiB = 1 << 20


def args_of(step) -> dict:
    return dict(zip(step.args[::2], step.args[1::2]))


def test_aliases():
    assert find("E3") is MultiPage and find("e4") is CacheEntry


def test_multipage_configurations_and_memory():
    e = MultiPage()
    cfgs = {c.name: c for c in e.configurations}
    assert list(cfgs) == ["page", "bulk", "bulk-small", "bulk-small-cluster"]
    assert all(c.policy == "classic" and c.threads == "workers" for c in cfgs.values())
    for quick, mib in ((True, QUICK_FILE_MIB), (False, FILE_MIB)):
        base = e.kernel_base(quick)
        for name in ("page", "bulk"):  # memory holds the file, with room
            t = cfgs[name].kernel_table(base)
            assert t["physical_pages"] * 4096 >= 1.4 * mib * MiB
            assert t["data_return_cluster"] == 1
        for name, cluster in (("bulk-small", 1), ("bulk-small-cluster", 32)):
            t = cfgs[name].kernel_table(base)
            assert t["physical_pages"] == SMALL_PAGES < mib * 256
            assert t["data_return_cluster"] == cluster
        step = e.steps(cfgs["page"], quick)[0]
        a = args_of(step)
        assert step.workload == "dirtystorm" and float(a["--file-mib"]) == mib
        assert (a["--tasks"], a["--threads"]) == ("1", "1")
        ext2 = next(s for s in e.servers(cfgs["page"], quick) if s["name"] == "ext2fs")
        ea = ext2["args"]
        assert int(ea[ea.index("--size-mib") + 1]) > mib
        assert ea[ea.index("--write-mode") + 1] == "page"
        assert ea[ea.index("--sync-interval") + 1] == "0"
    p = build_parser()  # the step's arguments are the workload's
    p.parse_args([step.workload, *step.args])


def dirtystorm_summary(file_mib, returns, rpages, writes, blocks, pageouts=0):
    n = file_mib * MiB
    return {"files": 1, "file_bytes": n, "bytes_written": n, "bytes_verified": n,
            "mismatches": 0, "write_mib_per_s": 4.0,
            "counters": {"write_s": 4.0, "syncfs_s": 1.0, "dirty_before_sync": 10},
            "kernel_vm": {"data_returns": returns, "data_return_pages": rpages},
            "vm": {"delta": {"pageouts": pageouts}},
            "ext2fs": {"after": {"fresh": True},
                       "delta": {"disk_writes": writes, "blocks_written": blocks,
                                 "data_returns": returns}}}


def test_multipage_row_and_findings():
    e = MultiPage()
    cfgs = {c.name: c for c in e.configurations}
    page = e.row(cfgs["page"], [], {"write": dirtystorm_summary(16, 128, 4096, 4096, 4096)},
                 {"physical_pages": 6144})
    bulk = e.row(cfgs["bulk"], [], {"write": dirtystorm_summary(16, 128, 4096, 132, 4096)},
                 {"physical_pages": 6144})
    assert page["pages_per_return"] == 32.0 and page["avg_store_write_kib"] == 4.0
    assert bulk["avg_store_write_kib"] == round(4096 * 4096 / 132 / 1024, 1)
    assert page["hurd_store_writes"] == round(HURD_STORE_WRITES["page"] / 8)
    assert bulk["disk_mib_per_s"] == 3.2 and bulk["verified_all"] is True
    assert page["physical_pages"] == 6144
    res = [{"config": "page", "status": "ok", "row": page},
           {"config": "bulk", "status": "ok", "row": bulk}]
    f = e.findings(res)
    assert len(f) == 1 and "31.0x fewer" in f[0] and "32,874 vs 1,300" in f[0]
    empty = e.row(cfgs["page"], [], {}, {})
    assert empty["store_writes"] is None and empty["verified_all"] is False


def test_cache_entry_sizes_follow_physical_memory():
    e = CacheEntry()
    for quick in (True, False):
        pages = QUICK_KERNEL["physical_pages"] if quick else 16384
        hot, held = hot_files(pages), held_files(pages)
        assert hot * FILE_PAGES == pages // 2 and held * FILE_PAGES == pages * 3 // 2
        quiet, pressure = e.steps(e.configurations[0], quick)
        assert (quiet.name, pressure.name) == ("quiet", "pressure")
        q, p = args_of(quiet), args_of(pressure)
        assert int(q["--files"]) == hot and "--held" not in q
        assert int(p["--files"]) == hot and int(p["--held"]) == held
        assert p["--held-every"] == "4"
        parser = build_parser()
        for step in (quiet, pressure):
            a = parser.parse_args([step.workload, *step.args])
            a.workload_obj.check_args(a, parser)
        ext2 = next(s for s in e.servers(e.configurations[0], quick) if s["name"] == "ext2fs")
        size = int(ext2["args"][ext2["args"].index("--size-mib") + 1])
        assert size * 256 > (hot + held) * FILE_PAGES  # room for both sets
    kt = {c.name: c.kernel_table({}) for c in e.configurations}
    assert kt["deactivate"]["deactivate_on_cache"] is True
    assert kt["keep"]["deactivate_on_cache"] is False
    assert {t["pageout_policy"] for t in kt.values()} == {"classic"}


def reopen_summary(entries, deactivated, react, rereads, pages, held_rereads=0, held=0,
                   cpu=1.0):
    sets = {"reopen": {"cache_entered": entries, "cache_deactivated": deactivated,
                       "reactivations": react, "data_requests": rereads,
                       "pages_read": pages, "page_hit_rate": round(1 - rereads / pages, 4)},
            "held": {"data_requests": held_rereads, "pages_read": held,
                     "page_hit_rate": (round(1 - held_rereads / held, 4) if held else None)}}
    return {"sets": sets, "cache_entered": entries, "cache_hit_rate": 1.0,
            "kernel_cpu_s": cpu, "kernel_cpu_per_cache_entry_ms": round(cpu * 1000 / entries, 4),
            "deactivate_us_per_cache_entry": 100.0 if deactivated else 0.0,
            "bytes_verified": pages * 4096, "bytes_expected": pages * 4096,
            "mismatches": 0, "exit_status": 0, "files": 16, "held": 48 if held else 0,
            "read_mib_per_s": 50.0, "per_pass_data_requests": [[[0, 0]]]}


def test_cache_entry_row_and_findings():
    e = CacheEntry()
    d = e.row(e.configurations[0], [], {
        "quiet": reopen_summary(640, 40000, 40960, 0, 40960, cpu=1.5),
        "pressure": reopen_summary(256, 15000, 1000, 15000, 16384, 12000, 12288)}, {})
    k = e.row(e.configurations[1], [], {
        "quiet": reopen_summary(640, 0, 1024, 0, 40960, cpu=1.2),
        "pressure": reopen_summary(256, 0, 15000, 1024, 16384, 12000, 12288)}, {})
    assert d["cache_deactivated"] == 40000 and k["cache_deactivated"] == 0
    assert d["kernel_cpu_per_entry_ms"] > k["kernel_cpu_per_entry_ms"]
    assert d["pressure_page_hit_rate"] < k["pressure_page_hit_rate"]
    assert d["verified_all"] and d["bytes_verified"] == (40960 + 16384) * 4096
    f = e.findings([{"config": "deactivate", "status": "ok", "row": d},
                    {"config": "keep", "status": "ok", "row": k}])
    assert len(f) == 4 and "2.3438 ms with deactivation, 1.875 ms without (+25 %)" in f[2]
    assert "took 100.0 us per entry (timed in the kernel), 4.3 % of it" in f[2]
    assert "8% of their pages with deactivation and 94% without" in f[3]
    half = e.row(e.configurations[0], [], {"quiet": reopen_summary(1, 1, 1, 0, 64)}, {})
    assert half["verified_all"] is False  # a step missing
