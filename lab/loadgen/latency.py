"""Operation latencies and per-thread counts of the load generator.

Latencies stay bounded in every process: exact samples up to a cap, and a log-bucket
histogram (1 % wide buckets) that is always kept and is what percentiles come from once
the cap is passed.  Tasks send theirs to the parent as ``to_wire`` dicts.  A summary
carries a CDF of at most len(CDF_FRACTIONS) points, so a report can draw the whole
distribution from the JSON without the samples.
"""

from __future__ import annotations

import collections
import math
from array import array

EXACT_CAP_TASK = 100_000      # exact latency samples kept per task process
EXACT_CAP_TOTAL = 1_000_000   # ... and in the parent, over all tasks
# The CDF's fractions: every percent, then the tail (p99.5 ... p99.99), then the max.
CDF_FRACTIONS = (*(i / 100 for i in range(1, 100)), 0.995, 0.999, 0.9999, 1.0)


class Latencies:
    """Operation latencies in seconds: exact up to ``cap`` samples, a histogram always."""

    GROWTH = 1.01
    BASE = 1e-7  # 0.1 us: bucket 0
    _LOG_G = math.log(GROWTH)

    def __init__(self, cap: int = EXACT_CAP_TASK):
        self.cap = cap
        self.exact: array | None = array("d")
        self.hist: dict[int, int] = collections.defaultdict(int)
        self.n = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = 0.0

    def add(self, s: float):
        """Count one latency of ``s`` seconds."""
        self.n += 1
        self.sum += s
        if s < self.min:
            self.min = s
        if s > self.max:
            self.max = s
        self.hist[self._bucket(s)] += 1
        ex = self.exact
        if ex is not None:
            if len(ex) < self.cap:
                ex.append(s)
            else:
                self.exact = None  # past the cap: percentiles come from the histogram

    @classmethod
    def _bucket(cls, s: float) -> int:
        if s <= cls.BASE:
            return 0
        return int(math.log(s / cls.BASE) / cls._LOG_G)

    @classmethod
    def _bucket_value(cls, i: int) -> float:
        # Geometric middle of the bucket: at most half a bucket (0.5 %) off.
        return cls.BASE * cls.GROWTH ** (i + 0.5)

    def merge(self, other: "Latencies"):
        """Add ``other``'s samples; the exact ones are kept only if both sides still have
        all theirs and together they fit this one's cap."""
        self.n += other.n
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        for k, v in other.hist.items():
            self.hist[k] += v
        if self.exact is not None and other.exact is not None \
                and len(self.exact) + len(other.exact) <= self.cap:
            self.exact.extend(other.exact)
        else:
            self.exact = None

    def to_wire(self) -> dict:
        """A picklable dict of this (what a task sends to the parent)."""
        return {"n": self.n, "sum": self.sum, "min": self.min, "max": self.max,
                "exact": None if self.exact is None else self.exact.tobytes(),
                "hist": dict(self.hist)}

    @classmethod
    def from_wire(cls, d: dict, cap: int = EXACT_CAP_TOTAL) -> "Latencies":
        """The Latencies a ``to_wire`` dict describes, with cap ``cap``."""
        lat = cls(cap)
        lat.n, lat.sum, lat.min, lat.max = d["n"], d["sum"], d["min"], d["max"]
        lat.hist.update(d["hist"])
        if d["exact"] is None:
            lat.exact = None
        else:
            lat.exact.frombytes(d["exact"])
        return lat

    def quantile(self, q: float) -> float | None:
        """Nearest-rank quantile: exact while every sample is kept, else from buckets;
        None without samples."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs) -> list[float | None]:
        """``quantile`` of each of ``qs``, from one sort or one walk of the buckets."""
        if self.n == 0:
            return [None] * len(qs)
        # 1e-9: 0.9 * 5000 is 4500.000...1
        ranks = [max(1, math.ceil(q * self.n - 1e-9)) for q in qs]
        if self.exact is not None and len(self.exact) == self.n:
            srt = sorted(self.exact)
            return [self.max if r >= self.n else srt[r - 1] for r in ranks]
        found: dict[int, float] = {}
        want = sorted({r for r in ranks if r < self.n})
        j = seen = 0
        for i in sorted(self.hist):
            if j == len(want):
                break
            seen += self.hist[i]
            while j < len(want) and seen >= want[j]:
                found[want[j]] = min(max(self._bucket_value(i), self.min), self.max)
                j += 1
        return [found.get(r, self.max) for r in ranks]

    def cdf_ms(self) -> list[list[float]]:
        """[latency ms, fraction of operations at or below it] at CDF_FRACTIONS, the
        minimum first; [] without samples."""
        if self.n == 0:
            return []
        vals = self.quantiles(CDF_FRACTIONS)
        return [[round(self.min * 1000, 4), round(1 / self.n, 6)],
                *([round(v * 1000, 4), f] for v, f in zip(vals, CDF_FRACTIONS))]

    def summary_ms(self) -> dict:
        """p50, p90, p99, max, min and mean in milliseconds (None without samples), the
        sample count, whether the percentiles are exact, and with samples ``cdf``
        (``cdf_ms``)."""
        def ms(v):
            return None if v is None else round(v * 1000, 4)

        exact = self.exact is not None and len(self.exact) == self.n
        p50, p90, p99 = self.quantiles((0.50, 0.90, 0.99))
        out = {"p50": ms(p50), "p90": ms(p90), "p99": ms(p99),
               "max": ms(self.max if self.n else None),
               "min": ms(self.min if self.n else None),
               "mean": ms(self.sum / self.n if self.n else None),
               "samples": self.n, "exact": exact}
        if self.n:
            out["cdf"] = self.cdf_ms()
        return out


class Meter:
    """One thread's counts: operations done, errors by code name, verify failures, and
    the latencies of its successful operations."""

    def __init__(self, cap: int):
        self.ops = 0
        self.ok = 0
        self.errors: collections.Counter = collections.Counter()
        self.n_errors = 0
        self.mismatches = 0
        self.verified = 0
        self.lat = Latencies(cap)

    def error(self, name: str):
        """Count one error named ``name`` (a return code's name, DATA_MISMATCH, ...)."""
        self.errors[name] += 1
        self.n_errors += 1
