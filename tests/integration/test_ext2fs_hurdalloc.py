"""ext2fs allocating its own memory as the Hurd's did (--hurd-heap, --hurdmalloc,
--pagemap, --io-window: translators.ext2fs.hurdalloc), on a real kernel, under the
``mixed`` workload (every byte verified): the allocations are real kernel calls in
ext2fs's own task, so its map fragments under classic merging with the 2011 pagemaps
and stays small under coalescing with the pagemap on the heap; pager_memcpy's windows
leave nothing mapped between calls; unlinked files give their pagemaps and memory
back."""

from __future__ import annotations

import pytest

from lab.client import ClusterClient
from lab.loadgen.logstats import server_stats
from protocol.defs import machemu as X
from tests.conftest import log_records, run_loadgen, start_kernel, start_server, wait_for

HURD_2011 = ("--hurd-heap", "--hurdmalloc", "--pagemap", "mmap", "--io-window", "per-call")
HURD_2021 = ("--hurd-heap", "--hurdmalloc", "--pagemap", "heap", "--io-window", "per-call")
MIXED = ("mixed", "--tasks", "1", "--threads", "2", "--max-kib", "12", "--probe", "5")


def cluster(run_dir, procs, merge: str, *ext2fs_args: str):
    start_kernel(run_dir, procs, map_merge=merge, map_lookup="tree", physical_pages=8192)
    return start_server(procs, run_dir, "translators.ext2fs", "ext2fs", "--size-mib", "48",
                        "--sync-interval", "0", "--stats-interval", "0.2", *ext2fs_args)


def ok(code, s, err):
    assert code == 0, (s.get("failure"), s.get("errors"), s.get("task_failures"), err)
    assert s["mismatches"] == 0 and s["errors_total"] == 0, s["errors"]
    assert s["files_final_verified"] == s["files_live_at_end"] > 0
    assert s["probe_after"]["bytes_verified"] == 5 * 12 * 1024


def ext2fs_entries(run_dir) -> int:
    """ext2fs's map entries, from machemu_kernel_info on host_priv."""
    with ClusterClient(run_dir, 10, name="probe") as c:
        c.connect()
        info = X.machemu_kernel_info(c.rt.host_priv, timeout=10, rt=c.rt)
    [t] = [t for t in info["tasks"] if t["name"] == "ext2fs"]
    return t["map_entries"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("merge,args,grows", [("classic", HURD_2011, True),
                                              ("coalesce", HURD_2021, False)])
def test_the_map_fragments_with_the_2011_allocations_not_with_coalescing(
        run_dir, procs, merge, args, grows):
    e = cluster(run_dir, procs, merge, *args)
    code, s, err = run_loadgen(run_dir, *MIXED, "--ops", "80", "--keep-files", timeout=100)
    ok(code, s, err)
    files = s["files_live_at_end"]
    growth = s["map_entries_end"] - s["map_entries_start"]
    if grows:
        # a pagemap region per file's pager, most of them apart from their neighbours
        assert growth >= files // 4, s["map_series"]
    else:
        # stacks of the server threads, arenas: not the files
        assert growth <= 40, s["map_series"]
        assert s["map_entries_end"] <= 60, s["map_series"]
    st = server_stats(str(run_dir), "ext2fs", ("malloc_arenas", "malloc_chunks",
                                               "sigstates"), wait=5)
    assert st["malloc_arenas"] >= 2  # the server threads' own arenas
    assert st["malloc_chunks"] >= files  # a node (and a pager) per file kept
    assert st["sigstates"] >= 1
    last = [r for r in log_records(run_dir / "ext2fs.log") if r.get("event") == "stats"][-1]
    if "pagemap_vm_allocate" in last:
        assert last["pagemap_vm_allocate"] >= files  # a region per pager
    assert e.p.poll() is None


@pytest.mark.timeout(120)
def test_unlinked_files_give_their_pagemaps_and_memory_back(run_dir, procs):
    e = cluster(run_dir, procs, "classic", *HURD_2011)
    before = ext2fs_entries(run_dir)
    code, s, err = run_loadgen(run_dir, *MIXED, "--ops", "60", timeout=100)
    ok(code, s, err)
    assert s["map_entries_peak"] > before

    def released():
        st = server_stats(str(run_dir), "ext2fs", ("pagemap_vm_allocate",
                                                   "pagemap_vm_deallocate",
                                                   "malloc_chunks"), wait=1)
        return (st.get("pagemap_vm_allocate") == st.get("pagemap_vm_deallocate")
                and st.get("malloc_chunks") is not None and st["malloc_chunks"] <= 2)

    # every file unlinked: its pager terminated, its pagemap unmapped, node freed
    wait_for(released, 60, interval=0.5, what="pagemaps and nodes given back")
    assert e.p.poll() is None


@pytest.mark.timeout(120)
def test_a_window_per_call_leaves_nothing_mapped(run_dir, procs):
    # the workers model: a fixed set of threads, so their stacks do not move the count
    cluster(run_dir, procs, "classic", "--io-window", "per-call", "--threads", "workers",
            "--workers", "2")
    code, s, err = run_loadgen(run_dir, *MIXED, "--ops", "40", "--keep-files", timeout=100)
    ok(code, s, err)
    # files kept, none of them mapped: the map is back to what it was before them
    wait_for(lambda: ext2fs_entries(run_dir) == s["map_entries_start"], 30,
             what="ext2fs's map back to its size before the files")
