"""E2 (map fragmentation) in quick mode, through ``scripts/experiment run fragmentation
--quick`` on real clusters: the report and summary exist, every configuration ran and
verified every byte it kept, the recorder followed ext2fs's map entries.

Then the effect, with margins for a loaded machine.  Under classic merging the ext2fs
of 2011 (mmapped pagemaps, heaps grown by vm_protect) fragments its map; the kernel and
libpager of 2023 (coalescing, the pagemap on the heap) keep it small, whatever the files;
and at the same fragmentation the list's first-fit search costs more than the tree's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.experiments.fragmentation import Fragmentation
from lab.experiments.summary import load_samples, peak
from tests.integration.test_experiment_storm import check_common, run_experiment

# four configurations of at most 150 s each (about 30 s on a quiet machine)
RUN_TIMEOUT = 4 * 150 + 120


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_fragmentation_quick(run_dir):
    code, obj, err = run_experiment(run_dir, "fragmentation")
    assert code == 0, err[-3000:]
    by = check_common(run_dir, obj, "fragmentation", Fragmentation)
    rows = {c: r["row"] for c, r in by.items()}
    files = {row["files_live"] for row in rows.values()}
    assert len(files) == 1 and files.pop() >= 200, rows  # the same workload everywhere
    for c, r in by.items():
        samples = load_samples(Path(r["run_dir"]) / "samples.jsonl")
        assert peak(samples, "map_entries.ext2fs") >= rows[c]["entries_start"], c
        assert rows[c]["lookups"] > 1000 and rows[c]["find_spaces"] > 100, (c, rows[c])
    new = rows["coalesce-2023"]
    assert new["entries_end"] <= 100, new
    for c in ("classic-list", "classic-tree"):
        old = rows[c]
        assert old["entries_end"] >= old["entries_start"] + 150, old
        assert old["entries_end"] >= 4 * new["entries_end"], (old, new)
    # the kernel's coalescing alone never fragments more than classic merging (each
    # run places its pagemaps as its threads' timing has it: a margin for that)
    assert rows["coalesce-tree"]["entries_end"] <= 1.25 * rows["classic-tree"]["entries_end"]
    # at the same fragmentation, a first-fit search scans the list, not the tree's gaps
    lst, tree = rows["classic-list"], rows["classic-tree"]
    assert lst["find_space_us"] >= 1.5 * tree["find_space_us"], (lst, tree)
