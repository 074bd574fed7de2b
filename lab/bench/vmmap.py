"""Cost of kernel.vm_map's two lookup structures, in this process: for scripts/bench (its
maplookup role) and by hand.

The map under test has ``n_entries`` one-page entries with one-page holes between them
(so no merging happens and half of all addresses fall in holes).

  bench_lookup(structure, n_entries, lookups)   ns per vm_map_lookup_entry, random
                                                addresses (the list's hint rarely helps)
  bench_build(structure, n_entries)             seconds to vm_map_enter all the entries
  bench_enter_anywhere(structure, n_entries, ops)
                                                us per vm_map_enter(anywhere) +
                                                vm_map_delete of a 2-page region, which
                                                fits in no hole: first fit searches past
                                                every entry (linear for the list, a
                                                max-gap descent for the tree)

  python -m lab.bench.vmmap [--sizes 100,10000,100000] [--json]   prints a table
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from kernel.vm_map import VMMap
from protocol.vm_param import PAGE_SIZE

STRUCTURES = ("list", "tree")
DEFAULT_SIZES = (100, 10_000, 100_000)


def build_map(structure: str, n_entries: int, merge: str = "classic") -> VMMap:
    """A map of ``n_entries`` one-page entries at even page numbers."""
    m = VMMap(0, max(1 << 32, (2 * n_entries + 1024) * PAGE_SIZE), lookup=structure,
              merge=merge)
    enter = m.vm_map_enter
    for i in range(n_entries):
        enter(2 * i * PAGE_SIZE, PAGE_SIZE)
    return m


def bench_build(structure: str, n_entries: int) -> float:
    """Seconds to build the map of ``build_map``."""
    t0 = time.perf_counter()
    build_map(structure, n_entries)
    return time.perf_counter() - t0


def bench_lookup(structure: str, n_entries: int, lookups: int, seed: int = 0,
                 pattern: str = "random") -> float:
    """Nanoseconds per vm_map_lookup_entry on a map of ``n_entries`` entries.

    pattern "random": uniform addresses over the mapped span (half in holes);
    "sequential": ascending addresses, the case the hint was made for.
    """
    m = build_map(structure, n_entries)
    span = 2 * n_entries * PAGE_SIZE
    rng = random.Random(seed)
    if pattern == "random":
        addrs = [rng.randrange(span) for _ in range(lookups)]
    elif pattern == "sequential":
        step = max(1, span // lookups)
        addrs = [(i * step) % span for i in range(lookups)]
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    lookup = m.vm_map_lookup_entry
    t0 = time.perf_counter_ns()
    for a in addrs:
        lookup(a)
    t1 = time.perf_counter_ns()
    return (t1 - t0) / lookups


def bench_enter_anywhere(structure: str, n_entries: int, ops: int) -> float:
    """Microseconds per vm_map_enter(anywhere, 2 pages) + vm_map_delete of it."""
    m = build_map(structure, n_entries)
    enter, delete = m.vm_map_enter, m.vm_map_delete
    size = 2 * PAGE_SIZE
    t0 = time.perf_counter_ns()
    for _ in range(ops):
        a = enter(None, size)
        delete(a, a + size)
    t1 = time.perf_counter_ns()
    return (t1 - t0) / ops / 1000.0


def default_lookups(structure: str, n_entries: int) -> int:
    """Enough lookups for a stable number without spending seconds on the list's scans."""
    if structure == "tree":
        return 100_000
    return max(300, min(100_000, 30_000_000 // max(1, n_entries)))


def run(sizes=DEFAULT_SIZES, structures=STRUCTURES, lookups: int | None = None) -> list:
    """One row per size and structure: build seconds, ns per random and sequential
    lookup, us per enter(anywhere) + delete."""
    rows = []
    for n in sizes:
        for s in structures:
            k = lookups or default_lookups(s, n)
            rows.append({
                "structure": s,
                "entries": n,
                "build_s": bench_build(s, n),
                "lookup_ns": bench_lookup(s, n, k),
                "lookups": k,
                "seq_lookup_ns": bench_lookup(s, n, k, pattern="sequential"),
                "enter_anywhere_us": bench_enter_anywhere(s, n, max(20, k // 100)),
            })
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(str(n) for n in DEFAULT_SIZES),
                    help="comma-separated entry counts")
    ap.add_argument("--structures", default=",".join(STRUCTURES))
    ap.add_argument("--lookups", type=int, help="lookups per measurement (default: scaled)")
    ap.add_argument("--json", action="store_true", help="print one JSON list")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x]
    structures = [x for x in args.structures.split(",") if x]
    rows = run(sizes, structures, args.lookups)
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'structure':9} {'entries':>8} {'build s':>8} {'lookup ns':>11} "
          f"{'(lookups)':>9} {'seq ns':>9} {'enter+del us':>13}")
    for r in rows:
        print(f"{r['structure']:9} {r['entries']:>8} {r['build_s']:>8.3f} "
              f"{r['lookup_ns']:>11.0f} {r['lookups']:>9} {r['seq_lookup_ns']:>9.0f} "
              f"{r['enter_anywhere_us']:>13.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
