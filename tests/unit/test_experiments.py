"""Unit tests of the experiments' pure parts (lab/experiments, the storm and cachemix
workloads' helpers) without a cluster: the configuration lists, what a configuration
needs and what is missing, numbers from samples (series, peaks, lazy counters, the
first anonymous pageout and what came before it), the rows and the tables, the
recorder's port summary, the runner's "not available", the host's resident pages."""

from __future__ import annotations

import json

import pytest

from lab.experiments import features, report
from lab.experiments.base import Configuration, experiments, find, image_mib
from lab.experiments.cache_vs_anon import CacheVsAnon
from lab.experiments.plot import PlotUnavailable, panel_series, plot_runs
from lab.experiments.recorder import INFO_MAX_EVERY, pace, port_summary
from lab.experiments.runner import UNAVAILABLE, ConfigRun, loadgen_argv
from lab.experiments.storm import Storm, advisory_thread_floor, dirty_limits
from lab.experiments.summary import (
    between,
    counter,
    counter_sum,
    delta,
    first_anon_pageout,
    load_samples,
    peak,
    series,
    sum_peak,
    value,
)
from lab.loadgen.cli import build_parser
from lab.loadgen.storm import storm_file_pages, write_window

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------- configurations

def test_registry_and_aliases():
    exps = experiments()
    assert list(exps) == ["storm", "fragmentation", "multipage", "cache_entry", "cache_vs_anon"]
    assert find("E1") is Storm and find("e5") is CacheVsAnon and find("storm") is Storm
    assert find("E2").name == "fragmentation"
    assert find("E9") is None


def test_storm_configurations_are_the_issues():
    cfgs = {c.name: c for c in Storm.configurations}
    assert list(cfgs) == ["classic-page", "advisory", "modern", "throttle",
                          "classic-workers"]
    cp = cfgs["classic-page"]
    assert cp.policy == "classic" and cp.kernel == {"data_return_cluster": 1}
    assert cp.ext2fs_args == ("--write-mode", "page") and cp.threads == "multithread"
    assert [cfgs[n].policy for n in ("advisory", "modern", "throttle")] == [
        "advisory", "modern", "throttle"]
    assert all(cfgs[n].threads == "multithread" for n in ("advisory", "modern", "throttle"))
    w = cfgs["classic-workers"]
    assert w.policy == "classic" and w.threads == "workers"
    assert {c.name for c in CacheVsAnon.configurations} == {"classic", "advisory", "modern"}


def test_every_experiment_declares_its_parts():
    for cls in experiments().values():
        e = cls()
        d = e.describe()
        assert d["claim"]["text"] and d["claim"]["source"] and d["claim"]["figure"]
        assert e.workload and e.samples and e.columns and e.plots
        assert len({c.name for c in e.configurations}) == len(e.configurations)
        for quick in (True, False):
            assert e.timeout(quick) > 0
            for c in e.configurations:
                servers = e.servers(c, quick)
                assert {s["name"] for s in servers} >= {"ext2fs", "defpager"}
                ext2 = next(s for s in servers if s["name"] == "ext2fs")
                assert "--threads" in ext2["args"] and "--size-mib" in ext2["args"]
                assert e.steps(c, quick)
        json.dumps(d)  # what list --json prints


def test_storm_sizes_follow_physical_memory():
    e = Storm()
    assert e.kernel_base(False) == {}  # the kernel's default memory (16,384 pages)
    step = e.steps(Storm.configurations[0], False)[0]
    assert step.workload == "storm" and "--factor" in step.args
    args = dict(zip(step.args[::2], step.args[1::2]))
    assert int(args["--tasks"]) * int(args["--threads"]) >= 32
    assert float(args["--factor"]) == 4.0
    # 256 MiB of files on 16,384 pages, with room for metadata
    assert image_mib(16384, 4.0) >= 256 + 32
    assert storm_file_pages(16384, 4.0, 32) * 32 == 4 * 16384
    assert storm_file_pages(100, 1.0, 32) * 32 >= 100
    quick = e.kernel_base(True)
    assert quick["physical_pages"] < 16384 and quick["advisory_scale_limits"] is True


def test_kernel_table_and_needs():
    c = Configuration("x", "x", "advisory", {"data_return_cluster": 4},
                      ("--write-mode", "bulk"), "workers")
    t = c.kernel_table({"physical_pages": 2048, "data_return_cluster": 1})
    assert t == {"physical_pages": 2048, "pageout_policy": "advisory",
                 "data_return_cluster": 4}
    n = c.needs()
    assert n == {"policy": "advisory", "kernel_keys": ["data_return_cluster"],
                 "ext2fs_options": ["--threads", "--write-mode"]}


def test_missing_names_what_is_absent():
    needs = {"policy": "modern", "kernel_keys": ["x_key"],
             "ext2fs_options": ["--threads", "--write-mode"]}
    got = features.missing(needs, {"classic"}, {"physical_pages"}, {"--threads"})
    assert len(got) == 3
    assert "'modern'" in got[0] and "x_key" in got[1] and "--write-mode" in got[2]
    assert features.missing({"policy": "classic", "kernel_keys": [],
                             "ext2fs_options": ["--threads"]},
                            {"classic"}, set(), {"--threads"}) == []


def test_parse_options():
    text = ("usage: x [-h] [--run-dir RUN_DIR] [--disk-latency-ms D]\n"
            "  --write-mode {page,bulk}  pages per write\n  see --size-mib; a-b--c no")
    assert features.parse_options(text) == {"--run-dir", "--disk-latency-ms",
                                            "--write-mode", "--size-mib"}


def test_this_trees_ext2fs_options_are_found():
    opts = features.server_options("translators.ext2fs")
    assert {"--threads", "--size-mib", "--disk-latency-ms", "--workers"} <= opts


def test_unavailable_configuration_starts_nothing(tmp_path):
    c = Configuration("nope", "a policy no kernel has", "no-such-policy")
    r = ConfigRun(Storm(), c, tmp_path, quick=True).run()
    assert r["status"] == UNAVAILABLE
    assert "no-such-policy" in r["reason"]
    assert not (tmp_path / "storm" / "nope").exists()  # no run directory made


def test_loadgen_argv(tmp_path):
    step = Storm().steps(Storm.configurations[0], True)[0]
    argv = loadgen_argv(tmp_path, step)
    assert argv[1].endswith("scripts/loadgen") and argv[-1] == "--json"
    assert argv[2:5] == ["--run-dir", str(tmp_path), "storm"]


# ---------------------------------------------------------------- samples

def S(t, **parts):
    return {"t": t, "time": 1000.0 + t, **parts}


def test_value_series_peak_delta():
    samples = [S(0, vm={"a": 1, "pageout": {}}), S(1, vm={"a": 5, "pageout": {"r": 2}}),
               S(2, vm={"a": 3, "pageout": {"r": 4}}, ports={"pager_depth": 7})]
    assert value(samples[0], "vm.a") == 1 and value(samples[0], "vm.b") is None
    assert value({"vm": {"x": True}}, "vm.x") is None  # not a number
    assert series(samples, "vm.a") == [(0, 1), (1, 5), (2, 3)]
    assert peak(samples, "vm.a") == 5 and delta(samples, "vm.a") == 2
    assert peak(samples, "ports.pager_depth") == 7  # only where sampled
    assert peak(samples, "vm.nothing") is None and delta(samples, "vm.nothing") is None
    # the daemon's counters appear at their first count: 0 before
    assert series(samples, "vm.pageout.r") == [(0, 0), (1, 2), (2, 4)]
    assert delta(samples, "vm.pageout.r") == 4
    assert counter(S(0), "vm.pageout.r") is None  # no vm part at all
    assert counter_sum(samples[1], ("vm.pageout.r", "vm.pageout.q")) == 2


def test_sum_peak_over_a_workload_and_its_tasks():
    samples = [S(0, procs={"loadgen": {"threads": 3}, "loadgen.0": {"threads": 9},
                           "loadgenx": {"threads": 100}, "ext2fs": {"threads": 1}}),
               S(1, procs={"loadgen": {"threads": 3}})]
    assert sum_peak(samples, "loadgen", "threads") == 12
    assert sum_peak(samples, "kernel", "threads") is None


def test_load_samples_skips_bad_lines(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text('{"t": 0}\nnot json\n[1]\n{"t": 1}\n')
    assert [s["t"] for s in load_samples(p)] == [0, 1]
    assert load_samples(tmp_path / "absent.jsonl") == []


def pageout_samples(anon, freed, external=None):
    """Samples with the anonymous pageout count ``anon[i]`` and clean frees ``freed[i]``
    at t = i / 10."""
    out = []
    for i, (a, f) in enumerate(zip(anon, freed)):
        po = {"freed_clean": f}
        if a:
            po["returned_internal"] = a  # created at its first count, as the kernel does
        s = S(i / 10, vm={"pageout": po})
        if external is not None and external[i] is not None:
            s["resident"] = {"external": external[i]}
        out.append(s)
    return out


def anon_of(s):
    return counter(s, "vm.pageout.returned_internal")


def freed_of(s):
    return counter_sum(s, ("vm.pageout.freed_clean", "vm.pageout.freed_clean_external"))


def ext_of(s):
    return value(s, "resident.external")


def test_first_anon_pageout_after_clean_frees():
    samples = pageout_samples([0, 0, 0, 0, 10, 30], [5, 5, 100, 400, 450, 450],
                              [900, 900, 800, None, 500, 480])
    f = first_anon_pageout(samples, anon_of, freed_of, ext_of)
    assert f["at"] == 0.4 and f["anon_pages"] == 10
    assert f["freed_before"] == 395 and f["freed_by"] == 445  # relative to the first
    assert f["external_dropped_before"] == 100
    assert f["anon_total"] == 30 and f["freed_total"] == 445


def test_first_anon_pageout_never():
    samples = pageout_samples([0, 0, 0], [0, 10, 20])
    f = first_anon_pageout(samples, anon_of, freed_of)
    assert f["at"] is None and f["anon_pages"] == 0 and f["freed_before"] is None
    assert f["anon_total"] == 0 and f["freed_total"] == 20


def test_first_anon_pageout_at_once_means_nothing_before():
    samples = pageout_samples([0, 5, 9], [50, 60, 70])
    f = first_anon_pageout(samples, anon_of, freed_of)
    assert f["at"] == 0.1 and f["freed_before"] == 0 and f["freed_by"] == 10


def test_between_and_phases():
    samples = pageout_samples([0, 10, 10, 10, 20, 40], [0, 0, 50, 80, 90, 95])
    # times are 1000.0 .. 1000.5
    assert [s["t"] for s in between(samples, 1000.25, 1000.35)] == [0.2, 0.3, 0.4]
    assert between(samples, None, None) == samples
    f = first_anon_pageout(samples, anon_of, freed_of, since=1000.15, until=1000.45)
    # base: the sample at 0.1 (anon 10, freed 0); anon grows again at 0.4, 0.25 s after
    # the phase began
    assert f["at"] == pytest.approx(0.25) and f["anon_pages"] == 10
    assert f["freed_before"] == 80 and f["freed_total"] == 95
    assert f["anon_total"] == 30  # the first sample at or after until is included


# ---------------------------------------------------------------- rows, tables

def storm_result(config="advisory", status="ok", **row):
    return {"experiment": "storm", "config": config, "status": status, "reason": "",
            "run_dir": "/nonexistent", "wall_s": 12.3, "row": row}


def test_storm_row_from_samples():
    samples = [S(0, vm={"potentially_dirty": 0, "dirty_sleeps": 0, "laundry_count": 0,
                        "dirty_sleep_seconds": 0.0},
                 procs={"ext2fs": {"threads": 7, "rss": 1, "cpu": 0.1}},
                 ports={"pager_depth": 0}),
               S(1, vm={"potentially_dirty": 380, "dirty_sleeps": 4, "laundry_count": 9,
                        "dirty_sleep_seconds": 1.25, "returns_in_flight": 17},
                 procs={"ext2fs": {"threads": 35, "rss": 2, "cpu": 0.5}}),
               S(2, vm={"potentially_dirty": 200, "dirty_sleeps": 6, "laundry_count": 3,
                        "dirty_sleep_seconds": 2.5},
                 procs={"ext2fs": {"threads": 20, "rss": 2, "cpu": 0.9}},
                 ports={"pager_depth": 12})]
    kernel = {"physical_pages": 2048, "advisory_scale_limits": True,
              "pageout_policy": "advisory"}
    summary = {"files": 32, "file_bytes": 4096 * 10, "bytes_written": 32 * 40960,
               "bytes_verified": 32 * 40960, "mismatches": 0, "write_phase_mib_per_s": 3.5,
               "write_latency_ms": {"p50": 1.0, "p99": 99.123}, "physical_pages": 2048}
    row = Storm().row(Storm.configurations[1], samples, {"storm": summary}, kernel)
    assert row["threads_peak"] == 35 and row["returns_in_flight_peak"] == 17
    assert row["returns_queued_peak"] == 12 and row["potentially_dirty_peak"] == 380
    assert row["hard_limit"] == 375 and row["soft_limit"] == 337  # scaled to 2,048 pages
    assert row["writer_sleeps"] == 6 and row["writer_sleep_s"] == 2.5
    assert row["laundry_peak"] == 9 and row["laundry_external_peak"] is None
    assert row["mib_per_s"] == 3.5 and row["p99_write_ms"] == 99.12
    assert row["verified_all"] is True and row["bytes_expected"] == 32 * 40960
    summary["bytes_verified"] -= 4096
    assert Storm().row(Storm.configurations[1], samples, {"storm": summary},
                       kernel)["verified_all"] is False


def test_dirty_limits():
    assert dirty_limits({"pageout_policy": "classic"}) == (None, None)
    assert dirty_limits({"pageout_policy": "advisory"}) == (2700, 3000)  # unscaled
    assert dirty_limits({"pageout_policy": "advisory", "physical_pages": 4096,
                         "advisory_scale_limits": True}) == (675, 750)


def test_advisory_thread_floor():
    """Start threads + writers asleep + the sync's data_returns of DATA_WRITE_MAX pages
    for the soft limit's dirty pages: 7 + 32 + ceil(2700 / 32) = 124 at 16,384 pages,
    7 + 32 + ceil(337 / 32) = 50 with --quick's scaled limits."""
    row = {"threads_start": 7, "writers_sleeping_peak": 32, "soft_limit": 2700}
    assert advisory_thread_floor(row) == 124
    soft = dirty_limits({"pageout_policy": "advisory", "physical_pages": 2048,
                         "advisory_scale_limits": True})[0]
    assert advisory_thread_floor({**row, "soft_limit": soft}) == 7 + 32 + -(-soft // 32)
    assert advisory_thread_floor({**row, "soft_limit": None}) is None
    res = [storm_result("advisory", threads_peak=61, writers=32, threads_start=7,
                        writers_sleeping_peak=32, soft_limit=337, hard_limit=375,
                        potentially_dirty_peak=376, returns_in_flight_peak=12)]
    found = " ".join(Storm().findings(res))
    assert "= 50 threads" in found and "in flight was 12" in found


def test_tables_have_every_configuration():
    e = Storm()
    results = [storm_result("classic-page", "not available"),
               storm_result("advisory", threads_peak=31, bytes_verified=2 << 20,
                            bytes_expected=2 << 20, verified_all=True, mib_per_s=1.234),
               storm_result("throttle", "timed out")]
    headers, rows = report.table_rows(e, results)
    assert headers[0] == "config" and len(headers) == len(e.columns) + 1
    assert [r[0] for r in rows] == ["classic-page", "advisory", "throttle"]
    adv = dict(zip(headers, rows[1]))
    assert adv["ext2fs threads peak"] == "31" and adv["status"] == "ok"
    assert adv["bytes verified"] == "2.0 MiB (all)" and adv["write MiB/s"] == "1.23"
    assert adv["wall s"] == "12" and adv["potentially dirty peak"] == "-"
    assert dict(zip(headers, rows[2]))["status"] == "timed out"
    text = report.plain_table(headers, rows)
    assert len(text.splitlines()) == 5 and "not available" in text
    assert report.plain_table(headers, []).count("\n") == 1  # an experiment not reached
    md = report.markdown_table(headers, rows)
    assert md.count("\n") == 4 and md.startswith("| config |")


def test_summary_object_and_markdown(tmp_path):
    e = Storm()
    res = [storm_result("advisory", threads_peak=30, writers=32, physical_pages=2048,
                        potentially_dirty_peak=380, hard_limit=375, writer_sleeps=3)]
    res[0]["results"] = {"storm": {"bytes_written": 1, "server": {"samples": [[0, 1, 2]]}}}
    obj = report.summary_object(tmp_path, True, [e], {"storm": res}, {"storm": None},
                                100.0, 160.0)
    s = obj["experiments"]["storm"]
    assert s["results"][0]["results"]["storm"] == {"bytes_written": 1}  # samples stripped
    assert s["recorder"]["samples"] == 0 and obj["wall_s"] == 60.0
    assert any("over by 5" in f for f in s["findings"])
    report.write_summary(tmp_path, obj)
    assert json.loads((tmp_path / "summary.json").read_text())["quick"] is True
    md = report.markdown(obj, [e], {"storm": res})
    assert e.claim.text in md and "| advisory |" in md and "2048 pages" in md


def test_cache_vs_anon_row_per_phase():
    # anon phase 1000.0-1000.2, re-read 1000.2-1000.5; classic-like: anonymous pages go
    # out while the file cache is re-read
    samples = pageout_samples([0, 0, 0, 0, 20, 50], [0, 100, 200, 300, 350, 350],
                              [1500, 1400, 1300, 1200, 1150, 1150])
    summary = {"anon_start_at": 1000.05, "reread_start_at": 1000.2,
               "reread_end_at": 1000.5, "readers": 2, "writers": 2,
               "file_bytes": 4096 * 768, "anon_pages_per_writer": 512,
               "anon_pages_written": 1024, "anon_pages_verified": 1024,
               "bytes_verified": 3 * 2 * 4096 * 768, "mismatches": 0, "exit_status": 0,
               "counters": {"anon_write_s": 1.0, "anon_verify_s": 1.0}}
    row = CacheVsAnon().row(None, samples, {"cachemix": summary}, {})
    assert row["anon_to_defpager"] == 50 and row["clean_freed"] == 350
    assert row["anon_anon_to_defpager"] == 0 and row["anon_first_anon_pageout_s"] is None
    assert row["reread_first_anon_pageout_s"] == pytest.approx(0.2)
    # from the base (the last sample before the phase: 100) to the sample before the
    # first anonymous pageout (300)
    assert row["reread_clean_freed_before_anon"] == 200
    assert row["reread_anon_to_defpager"] == 50
    assert row["defpager_writes"] == 50 and row["verified_all"] is True
    assert row["defpager_writes_per_freed"] == round(50 / 350, 3)  # no pageouts counted


# ---------------------------------------------------------------- recorder, plot

def test_port_summary_counts_only_the_servers_pager_ports():
    ports = [{"task": "ext2fs", "name": 5, "depth": 3, "pager": True},
             {"task": "ext2fs", "name": 6, "depth": 0, "pager": True},
             {"task": "ext2fs", "name": 7, "depth": 2, "pager": False},
             {"task": "defpager", "name": 5, "depth": 9, "pager": True},
             {"task": "ext2fs", "name": 8, "depth": 4}]  # an older kernel: no flag
    s = port_summary(ports, "ext2fs")
    assert s == {"depth": 9, "pager_depth": 3, "pager_ports": 2, "ports": 4,
                 "busy": {"5": 3}}


def test_sampling_pace_bounds_the_kernels_share():
    assert pace(0.002, 0.1) == 0.1  # cheap: every sample (10 Hz)
    assert pace(0.020, 0.1) == pytest.approx(0.2)  # 20 ms: 5 Hz, 10 % of the time
    assert pace(0.090, 0.1) == pytest.approx(0.9)
    assert pace(5.0, 0.1) == INFO_MAX_EVERY  # but never rarer than that


def test_panel_series_takes_the_first_path_present():
    samples = [S(0, ports={"pager_depth": 1}), S(1, ports={"pager_depth": 4})]
    assert panel_series(samples, ("vm.returns_in_flight", "ports.pager_depth")) == (
        "ports.pager_depth", [(0, 1), (1, 4)])
    assert panel_series(samples, ("vm.x",)) == (None, [])


def test_plot_without_matplotlib_says_so(tmp_path):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(PlotUnavailable):
            plot_runs("t", Storm.plots, [], tmp_path / "x.png")
    else:
        assert plot_runs("t", Storm.plots, [], tmp_path / "x.png") is None  # no runs


def test_resident_pages_by_kind():
    from kernel.host import resident_pages
    from kernel.vm_object import VMObject
    from kernel.vm_page import VMResident

    mem = VMResident(64)
    anon, ext = VMObject(4096 * 8), VMObject(4096 * 8, internal=False)
    for i, (obj, dirty) in enumerate([(anon, True), (anon, False), (ext, True),
                                      (ext, False), (ext, False)]):
        mem.pages[i].object = obj
        mem.pages[i].dirty = dirty
    assert resident_pages(mem) == {"internal": 2, "external": 3, "internal_dirty": 1,
                                   "external_dirty": 1}


# ---------------------------------------------------------------- the workloads

def test_write_window():
    assert write_window([]) is None
    assert write_window([(10.0, 12.0), (9.5, 11.0), (10.5, 13.25)]) == 3.75


def test_storm_refuses_fewer_than_32_writers(capsys):
    p = build_parser()
    a = p.parse_args(["storm", "--tasks", "4", "--threads", "8"])
    assert a.factor == 4.0 and a.min_writers == 32 and a.chunk_kib == 16
    a.workload_obj.check_args(a, p)
    b = p.parse_args(["storm", "--tasks", "2", "--threads", "8"])
    with pytest.raises(SystemExit):
        b.workload_obj.check_args(b, p)
    assert "at least 32 writers" in capsys.readouterr().err
    c = p.parse_args(["storm", "--tasks", "1", "--threads", "2", "--min-writers", "2",
                      "--file-mib", "1"])
    c.workload_obj.check_args(c, p)
    assert c.file_mib == 1.0


def test_cachemix_needs_writers_beside_its_readers(capsys):
    p = build_parser()
    a = p.parse_args(["cachemix", "--threads", "4", "--file-threads", "2"])
    a.workload_obj.check_args(a, p)
    assert a.read_passes == 2 and a.cache_factor == 0.75 and a.anon_factor == 1.0
    b = p.parse_args(["cachemix", "--threads", "2", "--file-threads", "2"])
    with pytest.raises(SystemExit):
        b.workload_obj.check_args(b, p)
    assert "must exceed --file-threads" in capsys.readouterr().err


def test_workload_order_does_not_depend_on_import_order():
    # lab.experiments imports lab.loadgen.storm before anything calls workloads()
    import subprocess
    import sys

    from lab.process import ROOT, child_env

    code = ("import lab.loadgen.storm\nfrom lab.loadgen.workload import workloads\n"
            "print(' '.join(workloads()))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, env=child_env(), cwd=ROOT)
    assert r.stdout.split() == ["flood", "anon", "mmap", "seqwrite", "randwrite", "churn",
                                "dirtystorm", "storm", "cachemix", "reopen", "mixed"], r.stderr


def test_cli_list_and_unknown_names(capsys, tmp_path):
    from lab.experiments.cli import main

    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in listed] == ["storm", "fragmentation", "multipage", "cache_entry", "cache_vs_anon"]
    assert listed[0]["plots"][0] == [["procs.ext2fs.threads"], "ext2fs threads"]
    assert main(["run", "E9", "--out", str(tmp_path / "o")]) == 2
    assert "no experiment 'E9'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything was made
    assert main(["plot", str(tmp_path)]) == 1  # no summary.json there
