"""Latency statistics of the bench: percentiles of exact samples and timed loops.

Nothing of machemu is imported here: the floor uses it too.
"""

from __future__ import annotations

import time
from typing import Callable


def percentile(sorted_vals, q: float):
    """Nearest-rank percentile ``q`` (0..100) of an already sorted list; 0.0 if empty.

    The rank is rounded half to even (Python's ``round``), as the bench always did: with
    100 samples p99 is the largest.
    """
    if not sorted_vals:
        return 0.0
    k = max(0, min(len(sorted_vals) - 1, int(round(q / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def latency(samples_ns) -> dict:
    """``{"p50_us", "p99_us", "n"}`` of samples in nanoseconds."""
    s = sorted(samples_ns)
    return {"p50_us": percentile(s, 50) / 1000.0, "p99_us": percentile(s, 99) / 1000.0,
            "n": len(s)}


def warmup(rounds: int) -> int:
    """Untimed calls before ``rounds`` timed ones: a tenth, at least 50."""
    return max(50, rounds // 10)


def time_calls(call: Callable[[], object], rounds: int, warm: int | None = None) -> list[int]:
    """Nanoseconds of each of ``rounds`` calls of ``call``, after ``warm`` untimed ones
    (default ``warmup(rounds)``)."""
    for _ in range(warmup(rounds) if warm is None else warm):
        call()
    clock = time.perf_counter_ns
    samples = []
    for _ in range(rounds):
        t = clock()
        call()
        samples.append(clock() - t)
    return samples
