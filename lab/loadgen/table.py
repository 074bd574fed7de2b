"""The load generator's printed summary: a heading and aligned rows."""

from __future__ import annotations

from lab.loadgen.workload import Workload


def dash(v) -> str:
    """``v`` as text, "-" for None."""
    return "-" if v is None else str(v)


def fmt_mib(n) -> str:
    """A byte count in MiB ("-" for None)."""
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


def fmt_ms(v) -> str:
    """Milliseconds with three decimals ("-" for None)."""
    return "-" if v is None else f"{v:.3f} ms"


def table(wl: Workload, s: dict) -> str:
    """The summary ``s`` of workload ``wl`` as people read it: counts, errors by name,
    rate, latencies, the workload's own rows, the kernel's RSS, and why it failed."""
    unit = wl.unit
    lat = s["latency_ms"]
    mode = (f"count {s['count']}" if s["mode"] == "count"
            else "fixed work" if s["mode"] == "work" else f"duration {s['duration']} s")
    rows = [
        (unit, str(s[unit])),
        ("ok", str(s["ok"])),
        ("errors", str(s["errors_total"])),
    ]
    rows += [(f"  {name}", str(n)) for name, n in s["errors"].items()]
    rate = s.get(f"{unit}_per_s")
    rows += [
        (f"{unit}/s", "-" if rate is None else f"{rate:.1f}"),
        ("elapsed", f"{s['elapsed_s']:.2f} s"),
        ("latency p50", fmt_ms(lat["p50"])),
        ("latency p99", fmt_ms(lat["p99"])),
        ("latency max", fmt_ms(lat["max"])),
    ]
    rows += wl.table(s)
    k = s.get("kernel") or {}
    rows.append(("kernel RSS", f"{fmt_mib(k.get('rss'))} (peak {fmt_mib(k.get('rss_peak'))})"))
    head = (f"loadgen {wl.name}: {s['tasks']} task(s) x {s['threads_per_task']} thread(s), "
            f"{mode}")
    w = max(len(r[0]) for r in rows)
    out = [head] + [f"  {a.ljust(w)}  {b}" for a, b in rows]
    if s.get("task_failures"):
        out += [f"  task {i} failed: {m}" for i, m in s["task_failures"].items()]
    if s.get("interrupted"):
        out.append("interrupted: stopped early")
    if s.get("failure"):
        out.append(f"FAILED: {s['failure']}")
    return "\n".join(out)
