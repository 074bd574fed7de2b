"""E5 (anonymous memory vs file cache, small form) in quick mode, through
``scripts/experiment run cache_vs_anon --quick`` on real clusters: report and summary,
every configuration, every byte verified; then the effect where its configurations ran.

The effect: under ``advisory`` the scan frees clean external pages first and flushes
internal pages only if still short, so while the hot file cache is re-read beside idle
anonymous memory no anonymous page goes to the default pager before the file cache has
given up at least half its pages; and fewer anonymous pages go there than under
``classic``, whose LRU scan takes the idle anonymous pages (``modern``, which evicts
external pages first, too).  Every configuration must run in this tree.
"""

from __future__ import annotations

import pytest

from lab.experiments.cache_vs_anon import CacheVsAnon
from tests.integration.test_experiment_storm import RUN_TIMEOUT, check_common, run_experiment


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_cache_vs_anon_quick(run_dir):
    code, obj, err = run_experiment(run_dir, "cache_vs_anon")
    assert code == 0, err[-3000:]
    by = check_common(run_dir, obj, "cache_vs_anon", CacheVsAnon)
    ran = {c: r for c, r in by.items() if r["status"] == "ok"}
    for c, r in ran.items():
        row = r["row"]
        assert row["clean_freed"] > 0, (c, row)  # there was pressure on the file cache
        assert row["reread_clean_freed"] is not None, (c, row)  # the phases were found
    a = ran["advisory"]["row"]
    if a["reread_first_anon_pageout_s"] is not None:
        assert a["reread_clean_freed_before_anon"] >= a["file_cache_pages"] // 2, a
    c = ran["classic"]["row"]
    for name in ("advisory", "modern"):
        o = ran[name]["row"]
        assert o["anon_to_defpager"] < c["anon_to_defpager"], (name, c, o)
        assert o["defpager_writes_per_freed"] < c["defpager_writes_per_freed"], (name, c, o)
