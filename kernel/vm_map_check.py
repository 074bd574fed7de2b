"""Consistency checks of an address map (kernel.vm_map.VMMap), for tests and debugging,
and the measure of what its lookups cost.

GNU Mach has no such routine; it relies on assertions in vm_map.c.  Every invariant of
the map is checked: the entry list's order, links, counts and size, the hint and
first_free, and for tree maps the red-black properties (kernel.rbtree), the tree order
against the list and each entry's gap and largest subtree gap.

``vm_map_instrument`` counts a map's vm_map_lookup_entry calls (every lookup: faults,
enter at an address, delete, protect, inherit) and first-fit searches (enter anywhere),
and the time each took: the cost that grows with the entries under the classic list
(a linear scan from the hint or the head, from first_free) and stays logarithmic under
the tree.  Timing both structures the same way keeps the comparison fair.
"""

from __future__ import annotations

from functools import partial
from time import perf_counter_ns

from kernel.rbtree import rbtree_check
from protocol.vm_param import PAGE_MASK


def _timed(fn, acc, i, *args):
    """``fn(*args)``, counted in ``acc[i]``, its nanoseconds added to ``acc[i + 1]``."""
    t = perf_counter_ns()
    try:
        return fn(*args)
    finally:
        acc[i] += 1
        acc[i + 1] += perf_counter_ns() - t


def vm_map_instrument(vmap) -> None:
    """Make ``vmap``'s lookups and first-fit searches count themselves and their time
    (``lookup_stats``: lookups, ns, searches, ns)."""
    vmap.lookup_stats = acc = [0, 0, 0, 0]
    vmap._lookup = partial(_timed, vmap._lookup, acc, 0)
    vmap._find_space = partial(_timed, vmap._find_space, acc, 2)


def vm_map_lookup_cost(vmap) -> dict:
    """vm_map_lookup_entry calls and first-fit searches so far, and the microseconds
    spent in each."""
    n, ns, f, fns = vmap.lookup_stats
    return {"lookups": n, "lookup_us": ns // 1000, "find_spaces": f,
            "find_space_us": fns // 1000}


def vm_map_check(vmap) -> None:
    """Verify every invariant of ``vmap``.  Raises AssertionError.  O(n)."""
    def need(cond, what):
        if not cond:
            raise AssertionError(what)

    header = vmap._header
    n = 0
    total = 0
    prev = header
    e = header.vme_next
    live = set()
    while e is not header:
        need(e.vme_prev is prev, f"broken back link at {e!r}")
        need(e.vme_start < e.vme_end, f"empty entry {e!r}")
        need(not (e.vme_start | e.vme_end) & PAGE_MASK, f"unaligned {e!r}")
        need(vmap.min_offset <= e.vme_start and e.vme_end <= vmap.max_offset,
             f"out of bounds {e!r}")
        if prev is not header:
            need(prev.vme_end <= e.vme_start, f"overlap/order {prev!r} {e!r}")
        need(e.offset >= 0, f"negative offset {e!r}")
        live.add(id(e))
        n += 1
        total += e.vme_end - e.vme_start
        prev = e
        e = e.vme_next
    need(header.vme_prev is prev, "header back link")
    need(n == vmap.nentries, f"nentries {vmap.nentries} != {n}")
    need(total == vmap.size, f"size {vmap.size} != {total}")
    need(vmap._hint is header or id(vmap._hint) in live, "stale hint")
    ff = vmap._first_free
    need(ff is header or id(ff) in live, "stale first_free")
    if ff is not header:
        # No hole between min_offset and first_free's end.
        expect = vmap.min_offset
        e = header.vme_next
        while True:
            need(e.vme_start == expect, "hole before first_free")
            expect = e.vme_end
            if e is ff:
                break
            e = e.vme_next
    if not vmap._tree:
        return
    nil = vmap._nil
    need(nil.max_gap == -1, "nil sentinel damaged")
    inorder = rbtree_check(vmap._rbtree)
    for node in inorder:
        nxt = node.vme_next
        gap = (vmap.max_offset if nxt is header else nxt.vme_start) - node.vme_end
        need(node.gap_size == gap, f"gap_size of {node!r}")
        left, right = node.rb_children
        need(node.max_gap == max(node.gap_size, left.max_gap, right.max_gap),
             f"max_gap of {node!r}")
    need(inorder == vmap.entries(), "tree order differs from the list")
