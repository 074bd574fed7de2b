"""The reopen workload's pure parts (lab.loadgen.reopen) without a cluster: its options
and what it refuses, the pages it must read, the summary built from its tasks'
reports (per-set rates, kernel CPU per cache entry)."""

from __future__ import annotations

import pytest

from lab.loadgen.cli import build_parser
from lab.loadgen.reopen import KERNEL_KEYS, Reopen, cpu_seconds, ratio
from protocol.vm_param import PAGE_SIZE

pytestmark = pytest.mark.timeout(60)


def parsed(*argv):
    p = build_parser()
    a = p.parse_args(["reopen", *argv])
    a.workload_obj.check_args(a, p)
    return a


def test_defaults_and_sizes():
    a = parsed()
    assert (a.files, a.held, a.held_every, a.file_kib, a.reopen_passes) == (16, 0, 1, 256, 10)
    assert a.file_pages == 256 * 1024 // PAGE_SIZE
    assert a.passes == 1  # the ext2fs family's own, not ours
    b = parsed("--file-kib", "5")
    assert b.file_pages == 2  # rounded up to whole pages


def test_refuses_more_threads_and_bad_counts(capsys):
    p = build_parser()
    for argv in (["--threads", "2"], ["--held", "-1"], ["--files", "5000"]):
        a = p.parse_args(["reopen", *argv])
        with pytest.raises(SystemExit):
            a.workload_obj.check_args(a, p)
    err = capsys.readouterr().err
    assert "--threads 1" in err and "at most 4096" in err


def test_pages_expected_counts_each_held_file_in_its_turns():
    a = parsed("--files", "3", "--held", "8", "--held-every", "4", "--passes", "6",
               "--file-kib", "8")
    # held files 0..7 in turns 0,1,2,3,0,1: files i with i % 4 == n % 4, two per turn
    assert Reopen.pages_expected(a) == 2 * (3 * 6 + 2 * 6)
    b = parsed("--files", "2", "--held", "3", "--passes", "5", "--file-kib", "4")
    assert Reopen.pages_expected(b) == 1 * (2 * 5 + 3 * 5)


def summary_for(a, extras):
    s = {"counters": {"passes_done": a.reopen_passes}, "tasks": 1}
    wl = Reopen()
    wl.summarize_ext2 = lambda s, args, prepared: None  # the ext2fs family's part
    wl.summarize(s, a, {"task_extra": extras})
    return s


def test_summary_rates_and_cpu_per_entry():
    a = parsed("--files", "4", "--held", "4", "--passes", "10")
    reopen = dict.fromkeys(KERNEL_KEYS, 0)
    reopen.update(pages_read=2560, data_requests=640, reactivations=2560,
                  cache_entered=38, cache_deactivated=2400, lookups=40, hits=40)
    held = dict.fromkeys(KERNEL_KEYS, 0)
    held.update(pages_read=2560, data_requests=2560, cache_entered=2)
    extra = {"kernel": {"reopen": reopen, "held": held}, "per_pass": [[64, 256]],
             "marks": {"loop_start": 100.0, "loop_end": 110.0},
             "cpu": {"kernel": 2.0, "server": 1.0}}
    s = summary_for(a, [extra])
    assert s["sets"]["reopen"]["page_hit_rate"] == 0.75
    assert s["sets"]["held"]["page_hit_rate"] == 0.0
    assert s["cache_hit_rate"] == 1.0
    assert s["cache_entered"] == 40  # both sets' windows: every entry of the loop
    assert s["kernel_cpu_s"] == 2.0 and s["kernel_cpu_per_cache_entry_ms"] == 50.0
    assert (s["loop_start_at"], s["loop_end_at"]) == (100.0, 110.0)
    assert s["bytes_expected"] == Reopen.pages_expected(a) * PAGE_SIZE


def test_summary_without_cpu_or_entries():
    a = parsed("--files", "1", "--passes", "1")
    s = summary_for(a, [{"kernel": {}, "marks": {}, "cpu": {"kernel": None}}])
    assert s["kernel_cpu_s"] is None and s["kernel_cpu_per_cache_entry_ms"] is None
    assert s["sets"]["reopen"]["page_hit_rate"] is None and s["cache_hit_rate"] is None


def test_helpers():
    import os

    assert ratio(1, 4) == 0.25 and ratio(None, 4) is None and ratio(3, 0) is None
    assert cpu_seconds(None) is None
    assert cpu_seconds(os.getpid()) > 0
    assert cpu_seconds(2 ** 22 + 12345) is None  # no such process
