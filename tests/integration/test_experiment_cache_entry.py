"""E4 (cache-entry deactivation) in quick mode, through ``scripts/experiment run
cache_entry --quick`` on real clusters: report and summary, both configurations, every
byte verified; then the effect.

Quiet (the reopened files alone, resident): each close is an object-cache entry and the
next open a cache hit in both; with deactivate_on_cache each entry deactivates the
file's pages and each reopen's reads reactivate them, without it neither happens
(beyond the first pass, whose pages the sync had left inactive).  Under pressure (files
held open besides): the reopened files keep their pages without deactivation and lose
them with it.  The kernel's CPU per entry is reported, not checked: on a loaded 2-core
machine its difference (a few tens of percent) is within the noise.
"""

from __future__ import annotations

import pytest

from lab.experiments.cache_entry import CacheEntry
from tests.integration.test_experiment_storm import check_common, run_experiment


@pytest.mark.timeout(2 * 150 + 180)
def test_cache_entry_quick(run_dir):
    code, obj, err = run_experiment(run_dir, "cache_entry")
    assert code == 0, err[-3000:]
    by = check_common(run_dir, obj, "cache_entry", CacheEntry)
    d, k = by["deactivate"]["row"], by["keep"]["row"]
    for row in (d, k):
        # ext2fs let go at each close and the next open found the object in the cache
        assert row["cache_entered"] >= 0.9 * row["pages_read"] / 64, row
        assert row["cache_hit_rate"] >= 0.95, row
        assert row["kernel_cpu_per_entry_ms"] > 0, row
    assert d["cache_deactivated"] >= 0.9 * d["pages_read"], d
    assert d["reactivations"] >= 0.9 * d["pages_read"], d
    assert k["cache_deactivated"] == 0, k
    assert k["reactivations"] <= 0.1 * k["pages_read"], k
    # under pressure the deactivated pages go first
    assert k["pressure_page_hit_rate"] >= d["pressure_page_hit_rate"] + 0.25, (d, k)
    assert d["pressure_reread_pages"] > k["pressure_reread_pages"], (d, k)
