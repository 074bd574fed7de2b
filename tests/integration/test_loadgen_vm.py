"""scripts/loadgen's VM workloads against a real kernel with a small physical memory, a
real default pager (translators.defpager, swap file) and a real memfs.

anon: two tasks use 4x the kernel's memory, so the pageout daemon must send their pages
to the default pager and fault them back in; every page must come back byte-exact.
mmap: two tasks write memfs files through io_map + vm_map and read them back through
io_read and a fresh mapping.  Speed is never asserted.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.conftest import ROOT, run_loadgen, wait_for

LOADGEN = ROOT / "scripts" / "loadgen"
PHYSICAL_PAGES = 1024  # 4 MiB: 2 tasks x 8 MiB is 4x physical memory
HAVE = {m: (ROOT / "translators" / f"{m}.py").exists() for m in ("defpager", "memfs")}


def start(procs, run_dir, name, argv, timeout=60):
    """A real process of the cluster; waits for DIR/NAME.ready."""
    p = procs.python(argv, name=name)
    ready = run_dir / f"{name}.ready"
    wait_for(lambda: ready.exists() or p.p.poll() is not None, timeout,
             what=f"{name} ready")
    assert p.p.poll() is None, f"{name} exited:\n{p.output()}"
    return p


@pytest.fixture
def vm_cluster(run_dir, procs):
    """kernel (physical_pages = 1024), defpager, then memfs; and cluster.json."""
    if not (HAVE["defpager"] and HAVE["memfs"]):
        pytest.skip("translators.defpager / translators.memfs not written yet")
    cfg = run_dir / "kernel.toml"
    cfg.write_text(f"[kernel]\nphysical_pages = {PHYSICAL_PAGES}\n")
    rd = str(run_dir)
    k = start(procs, run_dir, "kernel",
              ["-m", "kernel", "--run-dir", rd, "--config", str(cfg)], 30)
    servers = {}
    # The default pager first: memfs's own pages may need paging out.
    servers["defpager"] = start(procs, run_dir, "defpager",
                                ["-m", "translators.defpager", "--run-dir", rd,
                                 "--name", "defpager", "--swap-size", "64",
                                 "--stats-interval", "0.5"])
    servers["memfs"] = start(procs, run_dir, "memfs",
                             ["-m", "translators.memfs", "--run-dir", rd, "--name", "memfs"])
    endpoint = (run_dir / "kernel.ready").read_text().strip()
    procs_json = [{"name": "kernel", "role": "kernel", "pid": k.pid,
                   "log": str(run_dir / "kernel.log")}]
    procs_json += [{"name": n, "role": "server", "pid": p.pid,
                    "log": str(run_dir / f"{n}.log")} for n, p in servers.items()]
    (run_dir / "cluster.json").write_text(json.dumps({
        "run_dir": rd, "kernel": {"endpoint": endpoint, "pid": k.pid},
        "processes": procs_json, "launcher_pid": os.getpid(), "started": time.time()}))
    yield {"kernel": k, **servers}
    for name, p in servers.items():
        assert p.p.poll() is None, f"{name} died during the test:\n{p.output()}"


def loadgen(run_dir, *args, timeout=240):
    return run_loadgen(run_dir, *args, timeout=timeout)


@pytest.mark.timeout(300)
def test_anon_pages_out_and_back_byte_exact(run_dir, vm_cluster):
    code, s, err = loadgen(run_dir, "anon", "--tasks", "2", "--mib", "8", "--call-timeout", "60")
    assert code == 0, (s.get("failure"), s.get("errors"), s.get("task_failures"), err)
    assert s["workload"] == "anon" and s["mode"] == "work" and s["tasks"] == 2
    pages = 2 * 8 * 256
    assert s["pages_per_task"] == 8 * 256 and s["memory_factor"] == 4.0
    assert s["mismatches"] == 0 and s["mismatch_kinds"] == {}
    assert s["errors_total"] == 0 and s["task_failures"] == {}
    assert s["pages_written"] == s["pages_verified"] == pages
    assert s["verified"] == pages  # counted by the ops themselves, too
    vm = s["vm"]
    assert vm["physical_pages"] == PHYSICAL_PAGES
    d = vm["delta"]
    # 16 MiB through 4 MiB of memory: most pages went to the default pager and came back.
    assert d["pageouts"] > 0 and d["pageins"] > 0, d
    assert d["pageouts"] >= pages - PHYSICAL_PAGES, d
    assert d["pageins"] >= pages - PHYSICAL_PAGES, d
    assert d["zero_fill_count"] > 0 and d["data_returns"] > 0, d
    assert s["default_pager"] is True
    # The default pager really wrote pages to its swap file (a sparse file: blocks used).
    after = s["swap"]["after"]
    assert after is not None and after["swap_file_bytes"] >= (pages - PHYSICAL_PAGES) * 4096
    assert s["defpager"]["pid"] == vm_cluster["defpager"].pid
    assert s["exit_status"] == 0


@pytest.mark.timeout(300)
def test_mmap_memfs_files_verified_both_ways(run_dir, vm_cluster):
    code, s, err = loadgen(run_dir, "mmap", "--tasks", "2", "--files", "2",
                           "--file-mib", "1", "--call-timeout", "60")
    assert code == 0, (s.get("failure"), s.get("errors"), s.get("task_failures"), err)
    assert s["workload"] == "mmap" and s["server_name"] == "memfs"
    pages = 2 * 2 * 256
    assert s["files_created"] == 4
    assert s["mismatches"] == 0 and s["errors_total"] == 0
    assert s["pages_written"] == s["pages_verified_io"] == s["pages_verified_map"] == pages
    assert s["counters"]["files_closed"] == 4
    d = s["vm"]["delta"]
    assert d["data_requests"] > 0, d  # the kernel asked memfs for the files' pages
    assert s["server"]["pid"] == vm_cluster["memfs"].pid
    assert s["exit_status"] == 0


@pytest.mark.timeout(120)
def test_anon_without_default_pager_is_refused(run_dir, kernel):
    # A kernel of 16384 pages and no default pager: 4x physical memory cannot be paged
    # out, loadgen says so instead of hanging.
    code, s, err = loadgen(run_dir, "anon", "--tasks", "1", timeout=60)
    assert code == 2, (s, err)
    assert "no default pager" in s["error"]
