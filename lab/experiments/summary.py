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


def series(samples: list[dict], path: str) -> list[tuple[float, float]]:
    """(t, value) of every sample that has ``path``."""
    return [(s["t"], v) for s in samples if (v := value(s, path)) is not None]


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


def first_anon_pageout(samples: list[dict], anon_paths, freed_paths,
                       resident_path: str = "resident.external") -> dict:
    """Where anonymous memory first went to the default pager, and what came before.

    ``anon_paths``: the counter of anonymous pages sent to the default pager (first one
    present wins); ``freed_paths``: the counter of clean external pages freed.  Both are
    taken relative to the first sample.  Returns ``at`` (t of the first sample where the
    anonymous count grew; None if it never did), ``anon_pages`` (how many then),
    ``freed_before`` (clean external pages freed up to the sample before: none of them
    can have come after the first anonymous pageout), ``freed_by`` (up to that sample:
    the upper bound), ``external_dropped_before`` (how far the resident external pages
    fell from their peak up to the sample before, from the sparser kernel_info samples)
    and ``freed_total``, ``anon_total`` over the run."""
    base_anon = base_freed = None
    prev_freed = 0
    out = {"at": None, "anon_pages": 0, "freed_before": None, "freed_by": None,
           "external_dropped_before": None, "freed_total": None, "anon_total": None}
    ext_peak = ext_low = None
    anon = freed = None
    for s in samples:
        a = first_value(s, anon_paths)
        f = first_value(s, freed_paths)
        if a is not None and base_anon is None:
            base_anon = a
        if f is not None and base_freed is None:
            base_freed = f
        anon = None if a is None else a - base_anon
        freed = None if f is None else f - base_freed
        ext = value(s, resident_path)
        if out["at"] is None:
            if anon is not None and anon > 0:
                out.update(at=s["t"], anon_pages=anon, freed_before=prev_freed,
                           freed_by=freed)
                if ext_peak is not None:
                    out["external_dropped_before"] = ext_peak - ext_low
            else:
                if freed is not None:
                    prev_freed = freed
                if ext is not None:
                    ext_peak = ext if ext_peak is None else max(ext_peak, ext)
                    ext_low = ext if ext_peak == ext else min(ext_low, ext)
    if samples:
        last = samples[-1]
        a, f = first_value(last, anon_paths), first_value(last, freed_paths)
        out["anon_total"] = None if a is None or base_anon is None else a - base_anon
        out["freed_total"] = None if f is None or base_freed is None else f - base_freed
    return out


def cpu_seconds(samples: list[dict], label: str) -> float | None:
    """CPU seconds ``label`` used over the samples (last minus first)."""
    return delta(samples, f"procs.{label}.cpu")


def rounded(v, digits: int = 2):
    """``v`` rounded if it is a float."""
    return round(v, digits) if isinstance(v, float) else v
