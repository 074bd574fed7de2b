"""--repeat N: the order the runs of an invocation take, and one configuration's N runs
made into one result (pure: no processes, no files).

The order alternates, ABC CBA ABC ..., so that a drift of the host's load over the
invocation (another job starting, the page cache warming) weighs on every
configuration alike instead of on whichever runs last.  Each run keeps its own
directory and row; the configuration's row is the median of each numeric field over
its runs that succeeded (all of its runs if none did), with the spread (min, max).
"""

from __future__ import annotations

import statistics

OK = "ok"


def schedule(configs: list, repeat: int) -> list[tuple[int, object]]:
    """(run index from 1, configuration) in the order they run: ``configs`` forwards
    on odd runs, backwards on even ones."""
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    out = []
    for k in range(repeat):
        out += [(k + 1, c) for c in (configs if k % 2 == 0 else configs[::-1])]
    return out


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def median(vs: list):
    """The median of numbers, an int when the numbers are ints and it is whole."""
    m = statistics.median(vs)
    if all(isinstance(v, int) for v in vs) and float(m).is_integer():
        return int(m)
    return round(m, 4) if isinstance(m, float) else m


def aggregate_rows(rows: list[dict]) -> tuple[dict, dict]:
    """(row, spread) of several runs' rows: each numeric field's median (over the rows
    that have it) and its [min, max] where they differ; a boolean is true only if it is
    in every row that has it; any other field is the first row's."""
    row, spread = {}, {}
    keys = list(dict.fromkeys(k for r in rows for k in r))
    for k in keys:
        vs = [r[k] for r in rows if r.get(k) is not None]
        if not vs:
            row[k] = None
        elif all(is_number(v) for v in vs):
            row[k] = median(vs)
            if min(vs) != max(vs):
                spread[k] = [min(vs), max(vs)]
        elif all(isinstance(v, bool) for v in vs):
            row[k] = all(vs)
        else:
            row[k] = vs[0]
    return row, spread


def aggregate(runs: list[dict]) -> dict:
    """One configuration's result from its runs (each a ConfigRun result, in the
    order they ran): a run's own result when there is one; else ``row`` and ``spread``
    (``aggregate_rows`` of the runs that succeeded, or of all if none did), ``status``
    ok only if every run was ok (else the first failure's, its reason naming the run),
    ``wall_s`` the median, ``samples`` the total, ``disk`` the medians of the runs'
    disk statistics, ``runs`` every run's result, ``repeat`` their number and
    ``runs_ok`` how many succeeded.  The first run's other fields (config, kernel ...)."""
    if len(runs) == 1:
        return runs[0]
    good = [r for r in runs if r["status"] == OK]
    row, spread = aggregate_rows([r.get("row") or {} for r in (good or runs)])
    bad = [(i, r) for i, r in enumerate(runs, 1) if r["status"] != OK]
    first = runs[0]
    out = {k: v for k, v in first.items() if k not in ("results", "steps", "row")}
    walls = [r["wall_s"] for r in runs if is_number(r.get("wall_s"))]
    out.update(status=bad[0][1]["status"] if bad else OK,
               reason="; ".join(f"run {i}: {r['status']}: {r.get('reason', '')}"
                                for i, r in bad),
               run_dir=str(first.get("config_dir") or first.get("run_dir")),
               wall_s=median(walls) if walls else None,
               samples=sum(r.get("samples") or 0 for r in runs),
               row=row, spread=spread, runs=runs, repeat=len(runs),
               runs_ok=len(good),
               disk=aggregate_rows([r["disk"] for r in runs if r.get("disk")])[0] or None)
    return out


def runs_of(result: dict) -> list[dict]:
    """The runs behind a result: its ``runs``, else itself."""
    return result.get("runs") or [result]
