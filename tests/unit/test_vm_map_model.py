"""kernel.vm_map against a brute-force page model: random operations under both merge
modes, both lookup structures holding the same entries, lookups against a scan."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.vm_map import VMMap
from protocol.defs.mach import (
    VM_INHERIT_COPY,
    VM_INHERIT_NONE,
    VM_INHERIT_SHARE,
    VM_PROT_ALL,
    VM_PROT_NONE,
    VM_PROT_READ,
)
from protocol.kern_return import KernReturn as K
from protocol.kern_return import MachError
from tests.unit.vm_map_helpers import (
    LOOKUPS,
    MERGES,
    RW,
    FakeObject,
    P,
    make,
)

pytestmark = pytest.mark.timeout(120)

NPAGES = 48
MIN = 16 * P
MAX = MIN + NPAGES * P
page = st.integers(0, NPAGES + 2)
npages = st.integers(1, 10)
# Skewed towards the defaults, so that neighbours often end up alike and merge.
prot = st.sampled_from([RW, RW, RW, VM_PROT_NONE, VM_PROT_READ, VM_PROT_ALL])
maxprot = st.sampled_from([VM_PROT_ALL, VM_PROT_ALL, VM_PROT_ALL, RW, VM_PROT_READ])
inh = st.sampled_from([VM_INHERIT_COPY, VM_INHERIT_COPY, VM_INHERIT_SHARE, VM_INHERIT_NONE])

ops = st.one_of(
    st.tuples(st.just("enter"), st.one_of(st.none(), page), npages,
              st.sampled_from(["none", "none", "anon", "external"]), st.integers(0, 4),
              prot, maxprot, inh),
    # Map an object that is already mapped again (a new reference), at some offset.
    st.tuples(st.just("alias"), st.one_of(st.none(), page), npages, st.integers(0, 50),
              st.integers(0, 12), prot, maxprot, inh),
    st.tuples(st.just("delete"), page, npages),
    st.tuples(st.just("protect"), page, npages, prot, st.booleans()),
    st.tuples(st.just("inherit"), page, npages, inh),
)


class Model:
    """Brute force: one record per mapped page."""

    def __init__(self):
        self.pages = {}  # page -> [prot, max, inh, label or None, object offset]

    def first_fit(self, n):
        for p in range(NPAGES - n + 1):
            if all(q not in self.pages for q in range(p, p + n)):
                return p
        return None


def apply(m, objs, op, label=None):
    """Run one op on map ``m``; returns the MachError code or 0."""
    kind = op[0]
    alias = None
    try:
        if kind == "alias":
            _, p, n, _, off, cur, mx, ih = op
            alias = next(o for o in objs if o.label == label)
            alias.ref_count += 1  # the caller's new reference, donated on success
            addr = None if p is None else MIN + p * P
            m.vm_map_enter(addr, n * P, obj=alias, offset=off * P, protection=cur,
                           max_protection=mx, inheritance=ih)
        elif kind == "enter":
            _, p, n, ok, off, cur, mx, ih = op
            o = None
            if ok != "none":
                o = FakeObject(internal=ok == "anon", pager=None if ok == "anon" else "p",
                               size=(off + n) * P, label=f"L{len(objs)}")
                objs.append(o)
            addr = None if p is None else MIN + p * P
            m.vm_map_enter(addr, n * P, obj=o, offset=off * P, protection=cur,
                           max_protection=mx, inheritance=ih)
        elif kind == "delete":
            _, p, n = op
            m.vm_map_delete(MIN + p * P, MIN + (p + n) * P)
        elif kind == "protect":
            _, p, n, pr, set_max = op
            m.vm_map_protect(MIN + p * P, MIN + (p + n) * P, pr, set_max)
        else:
            _, p, n, ih = op
            m.vm_map_inherit(MIN + p * P, MIN + (p + n) * P, ih)
    except MachError as e:
        if alias is not None:
            alias.ref_count -= 1
        if kind == "enter" and op[3] != "none":
            objs[-1].ref_count -= 1  # not consumed: the caller drops it
        return e.code
    return 0


def model_apply(md, op, label=None):
    kind = op[0]
    if kind in ("enter", "alias"):
        _, p, n, ok, off, cur, mx, ih = op
        if p is None:
            p = md.first_fit(n)
            if p is None:
                return K.KERN_NO_SPACE
        elif p + n > NPAGES:
            return K.KERN_INVALID_ADDRESS
        elif any(q in md.pages for q in range(p, p + n)):
            return K.KERN_NO_SPACE
        if kind == "enter":
            label = None if ok == "none" else "new"
        for i in range(n):
            md.pages[p + i] = [cur, mx, ih, label, (off + i) * P]
        return 0
    _, p, n = op[:3]
    rng = [q for q in range(p, min(p + n, NPAGES)) if q in md.pages]
    if kind == "delete":
        for q in rng:
            del md.pages[q]
    elif kind == "protect":
        pr, set_max = op[3], op[4]
        if any(pr & md.pages[q][1] != pr for q in rng):
            return K.KERN_PROTECTION_FAILURE
        for q in rng:
            if set_max:
                md.pages[q][1] = pr
                md.pages[q][0] &= pr
            else:
                md.pages[q][0] = pr
    else:
        for q in rng:
            md.pages[q][2] = op[3]
    return 0


def check_against_model(m, md, objs, tag):
    m.check_consistency()
    assert m.size == len(md.pages) * P
    entries = m.entries()
    assert sum(e.vme_end - e.vme_start for e in entries) == m.size
    for q in range(-1, NPAGES + 1):
        addr = MIN + q * P + (q * 97) % P
        found, e = m.vm_map_lookup_entry(addr)
        rec = md.pages.get(q)
        assert found == (rec is not None), (tag, q)
        if found:
            assert e.vme_start <= addr < e.vme_end
            assert [e.protection, e.max_protection, e.inheritance] == rec[:3], (tag, q)
            label = None if e.object is None else e.object.label
            off = e.offset + (MIN + q * P - e.vme_start)
            if rec[3] is not None:
                assert label == rec[3] and off == rec[4], (tag, q, e)
            elif label is not None:
                # Zero-fill memory may be taken over by a private anonymous object.
                assert e.object.internal and e.object.pager is None
                rec[3], rec[4] = label, off
        else:
            before = [x for x in entries if x.vme_end <= addr]
            assert e is (before[-1] if before else None), (tag, q)
    # References: every live object is held exactly once per entry that maps it.
    held = {}
    for e in entries:
        if e.object is not None:
            held[id(e.object)] = held.get(id(e.object), 0) + 1
    for o in objs:
        assert o.ref_count == held.get(id(o), 0), (tag, o)


def run_against_model(merge, seq):
    """Apply ``seq`` to a list map and a tree map and to the model, checking all three
    after every step."""
    maps = {lk: VMMap(MIN, MAX, lookup=lk, merge=merge) for lk in LOOKUPS}
    objs = {lk: [] for lk in LOOKUPS}
    md = Model()
    for step, op in enumerate(seq):
        label = None
        if op[0] == "alias":
            live = [o.label for o in objs["list"] if o.ref_count > 0]
            if not live:
                continue
            label = live[op[3] % len(live)]
        want = model_apply(md, op, label)
        for lk, m in maps.items():
            got = apply(m, objs[lk], op, label)
            assert got == want, (lk, step, op)
        if want == 0 and op[0] == "enter":
            new = objs["list"][-1].label if op[3] != "none" else None
            for rec in md.pages.values():
                if rec[3] == "new":
                    rec[3] = new
        for lk, m in maps.items():
            check_against_model(m, md, objs[lk], (lk, step, op))
        # Both lookup structures hold exactly the same entries.
        a, b = ([(e.vme_start, e.vme_end, e.protection, e.max_protection, e.inheritance,
                  e.offset, None if e.object is None else e.object.label) for e in maps[lk]]
                for lk in LOOKUPS)
        assert a == b, (step, op)
    return maps


@pytest.mark.parametrize("merge", MERGES)
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seq=st.lists(ops, min_size=12, max_size=80))
def test_random_ops_match_model_and_structures_agree(merge, seq):
    run_against_model(merge, seq)


def random_op(rng):
    """One op drawn like the ``ops`` strategy, for long seeded runs."""
    pick = rng.choice
    prots = [RW, RW, RW, VM_PROT_NONE, VM_PROT_READ, VM_PROT_ALL]
    maxes = [VM_PROT_ALL, VM_PROT_ALL, VM_PROT_ALL, RW, VM_PROT_READ]
    inhs = [VM_INHERIT_COPY, VM_INHERIT_COPY, VM_INHERIT_SHARE, VM_INHERIT_NONE]
    where = None if rng.random() < 0.3 else rng.randint(0, NPAGES + 2)
    n = rng.randint(1, 10)
    kind = pick(["enter", "enter", "alias", "delete", "protect", "protect", "inherit"])
    if kind == "enter":
        return ("enter", where, n, pick(["none", "none", "anon", "external"]),
                rng.randint(0, 4), pick(prots), pick(maxes), pick(inhs))
    if kind == "alias":
        return ("alias", where, n, rng.randint(0, 50), rng.randint(0, 12), pick(prots),
                pick(maxes), pick(inhs))
    p = rng.randint(0, NPAGES + 2)
    if kind == "delete":
        return ("delete", p, n)
    if kind == "protect":
        return ("protect", p, n, pick(prots), rng.random() < 0.3)
    return ("inherit", p, n, pick(inhs))


@pytest.mark.parametrize("merge", MERGES)
def test_long_random_runs_match_model(merge):
    for seed in range(12):
        rng = random.Random(seed)
        maps = run_against_model(merge, [random_op(rng) for _ in range(250)])
        assert maps["tree"].nentries == maps["list"].nentries


@pytest.mark.parametrize("lookup", LOOKUPS)
def test_random_lookups_match_brute_force(lookup):
    rng = random.Random(11)
    m, _ = make(lookup, "classic", max_offset=1 << 32)
    starts = sorted(rng.sample(range(0, 4000, 2), 800))
    for s in starts:
        m.vm_map_enter(s * P, P, protection=rng.choice([VM_PROT_READ, RW]))
    es = m.entries()
    for _ in range(3000):
        addr = rng.randrange(0, 4100 * P)
        found, e = m.vm_map_lookup_entry(addr)
        inside = [x for x in es if x.vme_start <= addr < x.vme_end]
        before = [x for x in es if x.vme_end <= addr]
        if inside:
            assert found and e is inside[0]
        else:
            assert not found and e is (before[-1] if before else None)
