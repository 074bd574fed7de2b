"""Numbers from a run's recorder samples (pure: no processes, no files but the loader).

A sample is a dict (lab.experiments.recorder); a *path* names a value in it with dots:
``vm.potentially_dirty``, ``vm.pageout.returned_internal``, ``procs.ext2fs.threads``,
``ports.pager_depth``.  A path that names nothing in a sample is absent there (a counter
this kernel does not have, or a part sampled less often), and is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path


def load_samples(path: Path) -> list[dict]:
    """The samples of a samples.jsonl (lines that are not JSON objects skipped)."""
    out = []
    try:
        text = Path(path).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            s = json.loads(line)
        except ValueError:
            continue
        if isinstance(s, dict):
            out.append(s)
    return out


def value(sample: dict, path: str):
    """The number at ``path`` in ``sample``, None if absent (or not a number)."""
    v = sample
    for part in path.split("."):
        if not isinstance(v, dict) or part not in v:
            return None
        v = v[part]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return v


def first_value(sample: dict, paths) -> float | None:
    """The value of the first of ``paths`` present in ``sample``."""
    for p in paths:
        v = value(sample, p)
        if v is not None:
            return v
    return None


# Counters the kernel creates at their first count (the pageout daemon's own): 0 in a
# sample that has their part but not them.
LAZY_PREFIXES = ("vm.pageout.",)


def series(samples: list[dict], path: str) -> list[tuple[float, float]]:
    """(t, value) of every sample that has ``path`` (lazy counters: that has its
    part)."""
    get = counter if path.startswith(LAZY_PREFIXES) else value
    return [(s["t"], v) for s in samples if (v := get(s, path)) is not None]


def peak(samples: list[dict], path: str):
    """The largest value at ``path``, None if no sample has it."""
    vs = [v for _, v in series(samples, path)]
    return max(vs) if vs else None


def delta(samples: list[dict], path: str):
    """Last minus first value at ``path`` (a counter's growth over the run), None if
    no sample has it."""
    vs = [v for _, v in series(samples, path)]
    return vs[-1] - vs[0] if vs else None


def sum_peak(samples: list[dict], prefix: str, field: str) -> int | None:
    """The largest per-sample sum of ``field`` over ``procs`` labels starting with
    ``prefix`` (a workload and its task processes), None without any."""
    best = None
    for s in samples:
        procs = s.get("procs") or {}
        vals = [d[field] for k, d in procs.items()
                if (k == prefix or k.startswith(prefix + ".")) and field in d]
        if vals:
            best = max(best or 0, sum(vals))
    return best


def counter(sample: dict, path: str):
    """A counter that a kernel creates at its first count: 0 where the sample has the
    part of ``path``'s first component but not the counter, None where it lacks the
    part itself (a kernel_info part on a vm_statistics-only sample)."""
    top = path.split(".", 1)[0]
    if top not in sample:
        return None
    v = value(sample, path)
    return 0 if v is None else v


def counter_sum(sample: dict, paths) -> float | None:
    """The sum of ``paths`` as counters (None where the sample lacks their part)."""
    vs = [counter(sample, p) for p in paths]
    vs = [v for v in vs if v is not None]
    return sum(vs) if vs else None


def between(samples: list[dict], since: float | None, until: float | None) -> list[dict]:
    """The samples from the last one before ``since`` (the base of what follows) to
    the first one at or after ``until`` (Unix times; None: no bound)."""
    lo, hi = 0, len(samples)
    if since is not None:
        before = [i for i, s in enumerate(samples) if s.get("time", 0) < since]
        lo = before[-1] if before else 0
    if until is not None:
        after = [i for i, s in enumerate(samples) if s.get("time", 0) >= until]
        hi = after[0] + 1 if after else hi
    return samples[lo:hi]


def first_anon_pageout(samples: list[dict], anon, freed, external=None,
                       since: float | None = None, until: float | None = None) -> dict:
    """Where anonymous memory first went to the default pager, and what came before.

    ``anon(sample)``: the count of anonymous pages sent to the default pager so far;
    ``freed(sample)``: of clean pages freed; ``external(sample)``: resident external
    pages (each None where a sample lacks it).  Only samples between ``since`` and
    ``until`` count (Unix times; ``between``), and counts are relative to the first
    of them.  Returns ``at`` (seconds from ``since``, else from the first
    sample, to the first sample where the anonymous count grew; None if it never did), ``anon_pages`` (how many by then),
    ``freed_before`` (clean pages freed up to the sample before it: all of them came
    before the first anonymous pageout), ``freed_by`` (up to that sample: an upper
    bound), ``external_dropped_before`` (how far the resident external pages had
    fallen from their peak, up to the sample before), and over the whole span
    ``anon_total`` and ``freed_total``."""
    samples = between(samples, since, until)
    out = {"at": None, "anon_pages": 0, "freed_before": None, "freed_by": None,
           "external_dropped_before": None, "freed_total": None, "anon_total": None}
    base_anon = base_freed = t0 = None
    prev_freed = 0
    ext_peak = ext_low = None
    for s in samples:
        a, f = anon(s), freed(s)
        if t0 is None:
            t0 = s["t"] if since is None else s["t"] + (since - s.get("time", since))
        if a is not None and base_anon is None:
            base_anon = a
        if f is not None and base_freed is None:
            base_freed = f
        if a is not None:
            out["anon_total"] = a - base_anon
        if f is not None:
            out["freed_total"] = f - base_freed
        if out["at"] is not None:
            continue
        if a is not None and a > base_anon:
            out.update(at=round(s["t"] - t0, 3), anon_pages=a - base_anon,
                       freed_before=prev_freed,
                       freed_by=None if f is None else f - base_freed)
            if ext_peak is not None:
                out["external_dropped_before"] = ext_peak - ext_low
            continue
        if f is not None:
            prev_freed = f - base_freed
        ext = external(s) if external is not None else None
        if ext is not None:
            if ext_peak is None or ext >= ext_peak:
                ext_peak = ext_low = ext
            else:
                ext_low = min(ext_low, ext)
    return out


def cpu_seconds(samples: list[dict], label: str) -> float | None:
    """CPU seconds ``label`` used over the samples (last minus first)."""
    return delta(samples, f"procs.{label}.cpu")


def rounded(v, digits: int = 2):
    """``v`` rounded if it is a float."""
    return round(v, digits) if isinstance(v, float) else v
