"""kernel.vm_map: the address map as a data structure, both lookup structures and both
merge modes, against Mach's rules (the brute-force page model: test_vm_map_model)."""

from __future__ import annotations

import pytest

from kernel.vm_map import VMMap
from protocol.defs.mach import (
    VM_INHERIT_COPY,
    VM_INHERIT_NONE,
    VM_INHERIT_SHARE,
    VM_PROT_ALL,
    VM_PROT_DEFAULT,
    VM_PROT_EXECUTE,
    VM_PROT_NONE,
    VM_PROT_READ,
)
from protocol.kern_return import KernReturn as K
from protocol.kern_return import MachError
from tests.unit.vm_map_helpers import (
    MERGES,
    RW,
    FakeObject,
    P,
    Recorder,
    all_modes,
    both,
    code_of,
    make,
    page_attrs,
    spans,
)

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------- enter / find_space

@all_modes
def test_enter_fixed_and_anywhere_first_fit(lookup, merge):
    m, _ = make(lookup, merge, min_offset=0x10000, max_offset=0x10000 + 64 * P)
    a = m.vm_map_enter(None, 2 * P, protection=VM_PROT_READ)
    assert a == 0x10000
    b = m.vm_map_enter(0x10000 + 10 * P, 3 * P)
    assert b == 0x10000 + 10 * P
    # First fit: the hole between a and b (8 pages) takes a 4-page request.
    c = m.vm_map_enter(None, 4 * P, obj=FakeObject())
    assert c == 0x10000 + 2 * P
    # 5 pages do not fit in the rest of that hole (4 pages): they go after b.
    d = m.vm_map_enter(None, 5 * P, obj=FakeObject())
    assert d == 0x10000 + 13 * P
    assert m.nentries == 4 and m.size == 14 * P
    m.check_consistency()


@all_modes
def test_enter_errors(lookup, merge):
    m, _ = make(lookup, merge, min_offset=0x10000, max_offset=0x10000 + 16 * P)
    m.vm_map_enter(0x10000 + 4 * P, 4 * P)
    with pytest.raises(MachError) as ei:
        m.vm_map_enter(0x10000 + 6 * P, P)
    assert code_of(ei) == K.KERN_NO_SPACE
    with pytest.raises(MachError) as ei:
        m.vm_map_enter(0x10000 + 2 * P, 3 * P)  # overlaps the next entry
    assert code_of(ei) == K.KERN_NO_SPACE
    with pytest.raises(MachError) as ei:
        m.vm_map_enter(0x10000 - P, P)
    assert code_of(ei) == K.KERN_INVALID_ADDRESS
    with pytest.raises(MachError) as ei:
        m.vm_map_enter(0x10000 + 15 * P, 2 * P)
    assert code_of(ei) == K.KERN_INVALID_ADDRESS
    for bad in (dict(size=0), dict(size=100), dict(size=P, protection=0x40),
                dict(size=P, max_protection=0x20), dict(size=P, inheritance=7),
                dict(size=P, offset=5)):
        size = bad.pop("size")
        with pytest.raises(MachError) as ei:
            m.vm_map_enter(0x10000, size, **bad)
        assert code_of(ei) == K.KERN_INVALID_ARGUMENT
    with pytest.raises(MachError) as ei:
        m.vm_map_enter(0x10000 + 8 * P, 16 * P)
    assert code_of(ei) == K.KERN_INVALID_ADDRESS
    with pytest.raises(MachError) as ei:
        m.vm_map_enter(None, 13 * P)  # 12 pages free in total, 8 at most in one hole
    assert code_of(ei) == K.KERN_NO_SPACE
    with pytest.raises(MachError) as ei:
        m.vm_map_enter(0x10000 + P, P, mask=0x1FFF)  # address against the mask
    assert code_of(ei) == K.KERN_NO_SPACE
    assert m.nentries == 1 and m.size == 4 * P
    m.check_consistency()


@both
def test_find_space_mask_alignment(lookup):
    m, _ = make(lookup, "classic", min_offset=P, max_offset=1 << 30)
    m.vm_map_enter(P, P)
    a = m.vm_map_enter(None, P, mask=0xFFFF, protection=VM_PROT_READ)
    assert a == 0x10000
    # The hole [2P, 0x10000) is found again for an unaligned request.
    assert m.vm_map_find_space(P) == 2 * P
    assert m.vm_map_find_space(14 * P) == 2 * P
    assert m.vm_map_find_space(15 * P) == 0x11000
    # A mask with high bits bounds the address: below 2**20 here.
    himask = ((1 << 64) - (1 << 20)) | 0xFFF
    assert m.vm_map_find_space(P, mask=himask) == 2 * P
    with pytest.raises(MachError) as ei:
        m.vm_map_find_space(1 << 20, mask=himask)
    assert code_of(ei) == K.KERN_NO_SPACE
    with pytest.raises(MachError):
        m.vm_map_find_space(P, mask=(1 << 40) | 0xFFF)  # high bits that do not run to the top


@both
def test_find_space_fills_holes_left_by_delete(lookup):
    m, _ = make(lookup, "classic", max_offset=1 << 32)
    addrs = [m.vm_map_enter(None, P, protection=VM_PROT_READ if i % 2 else RW)
             for i in range(200)]
    assert addrs == [i * P for i in range(200)]
    for a in addrs[10:150:3]:
        m.vm_map_delete(a, a + P)
    assert m.vm_map_enter(None, P) == addrs[10]
    assert m.vm_map_enter(None, P, protection=VM_PROT_EXECUTE) == addrs[13]
    assert m.vm_map_enter(None, 2 * P) == 200 * P  # no 2-page hole below the end
    m.check_consistency()


# ---------------------------------------------------------------- lookup / region

@both
def test_lookup_found_and_predecessor(lookup):
    m, _ = make(lookup, "classic", min_offset=0, max_offset=1 << 30)
    m.vm_map_enter(4 * P, 2 * P)
    m.vm_map_enter(10 * P, P, protection=VM_PROT_READ)
    found, e = m.vm_map_lookup_entry(0)
    assert not found and e is None
    found, e = m.vm_map_lookup_entry(5 * P + 123)
    assert found and (e.vme_start, e.vme_end) == (4 * P, 6 * P)
    found, e = m.vm_map_lookup_entry(7 * P)
    assert not found and e.vme_start == 4 * P
    found, e = m.vm_map_lookup_entry(2 * P)  # below the hint now
    assert not found and e is None
    found, e = m.vm_map_lookup_entry(10 * P)
    assert found and e.protection == VM_PROT_READ
    found, e = m.vm_map_lookup_entry(1 << 29)
    assert not found and e.vme_start == 10 * P
    assert m.hint is e


@both
def test_vm_region(lookup):
    m, _ = make(lookup, "classic")
    o = FakeObject()
    m.vm_map_enter(8 * P, 4 * P, obj=o, offset=3 * P, protection=VM_PROT_READ,
                   max_protection=RW, inheritance=VM_INHERIT_SHARE)
    m.vm_map_enter(20 * P, P)
    r = m.vm_region(0)
    assert (r.vme_start, r.vme_end, r.object, r.offset) == (8 * P, 12 * P, o, 3 * P)
    assert (r.protection, r.max_protection, r.inheritance) == (VM_PROT_READ, RW,
                                                               VM_INHERIT_SHARE)
    assert m.vm_region(10 * P) is r
    assert m.vm_region(12 * P).vme_start == 20 * P
    with pytest.raises(MachError) as ei:
        m.vm_region(21 * P)
    assert code_of(ei) == K.KERN_NO_SPACE
    assert len(m) == 2 and [e.vme_start for e in m] == [8 * P, 20 * P]


# ---------------------------------------------------------------- clip / delete

@both
def test_clip_adjusts_offsets_and_references(lookup):
    m, rec = make(lookup, "classic")
    o = FakeObject()
    m.vm_map_enter(0, 8 * P, obj=o, offset=16 * P)
    _, e = m.vm_map_lookup_entry(0)
    m.vm_map_clip_start(e, 2 * P)
    m.vm_map_clip_end(e, 5 * P)
    got = [(x.vme_start, x.vme_end, x.offset) for x in m]
    assert got == [(0, 2 * P, 16 * P), (2 * P, 5 * P, 18 * P), (5 * P, 8 * P, 21 * P)]
    assert all(x.object is o for x in m)
    assert o.ref_count == 3 and rec.refs == [o, o]
    assert m.size == 8 * P
    m.check_consistency()


@both
def test_delete_returns_entries_and_deallocates(lookup):
    m, rec = make(lookup, "classic")
    o1, o2 = FakeObject(), FakeObject(internal=False, pager="p")
    m.vm_map_enter(0, 4 * P, obj=o1)
    m.vm_map_enter(6 * P, 4 * P, obj=o2, offset=P)
    removed = m.vm_map_delete(2 * P, 8 * P)
    assert [(e.vme_start, e.vme_end, e.object, e.offset) for e in removed] == [
        (2 * P, 4 * P, o1, 2 * P), (6 * P, 8 * P, o2, P)]
    assert rec.unmapped == [(2 * P, 4 * P, o1), (6 * P, 8 * P, o2)]
    # Each clip took a reference, each removed entry dropped one.
    assert o1.ref_count == 1 and o2.ref_count == 1
    assert spans(m) == [(0, 2 * P), (8 * P, 10 * P)]
    assert m.size == 4 * P
    assert m.vm_map_delete(0, 1 << 40) and m.nentries == 0 and m.size == 0
    assert o1.ref_count == 0 and o2.ref_count == 0
    assert m.vm_map_delete(0, P) == []
    m.check_consistency()


# ---------------------------------------------------------------- protect / inherit

@all_modes
def test_protect_middle_gives_three_entries(lookup, merge):
    m, _ = make(lookup, merge)
    o = FakeObject()
    a = m.vm_map_enter(None, 16 * P, obj=o, protection=RW)
    m.vm_map_protect(a + 4 * P, a + 8 * P, VM_PROT_READ)
    es = m.entries()
    assert [(e.vme_start - a, e.vme_end - a, e.protection) for e in es] == [
        (0, 4 * P, RW), (4 * P, 8 * P, VM_PROT_READ), (8 * P, 16 * P, RW)]
    assert [e.offset for e in es] == [0, 4 * P, 8 * P]
    assert o.ref_count == 3
    m.vm_map_protect(a + 4 * P, a + 8 * P, RW)
    if merge == "coalesce":
        assert spans(m) == [(a, a + 16 * P)] and o.ref_count == 1
        assert m.entries()[0].offset == 0 and m.entries()[0].object is o
    else:
        assert m.nentries == 3 and o.ref_count == 3
    m.check_consistency()


@all_modes
def test_protect_rules(lookup, merge):
    m, _ = make(lookup, merge)
    a = m.vm_map_enter(None, 8 * P, protection=VM_PROT_READ, max_protection=RW)
    with pytest.raises(MachError) as ei:
        m.vm_map_protect(a + P, a + 2 * P, VM_PROT_ALL)
    assert code_of(ei) == K.KERN_PROTECTION_FAILURE
    assert m.nentries == 1  # nothing clipped on failure
    with pytest.raises(MachError) as ei:
        m.vm_map_protect(a, a + P, 0x40)
    assert code_of(ei) == K.KERN_INVALID_ARGUMENT
    m.vm_map_protect(a, a + 2 * P, RW)  # raising current up to max is fine
    # set_max lowers the max and clamps the current protection.
    m.vm_map_protect(a + P, a + 4 * P, VM_PROT_READ, set_max=True)
    R = VM_PROT_READ
    assert page_attrs(m, a, 8) == [(RW, RW)] + [(R, R)] * 3 + [(R, RW)] * 4
    assert m.nentries == (3 if merge == "coalesce" else 4)
    with pytest.raises(MachError) as ei:
        m.vm_map_protect(a, a + 8 * P, RW)  # the middle now has max READ
    assert code_of(ei) == K.KERN_PROTECTION_FAILURE
    with pytest.raises(MachError) as ei:
        m.vm_map_protect(a + P, a + 2 * P, RW, set_max=True)  # max cannot be raised
    assert code_of(ei) == K.KERN_PROTECTION_FAILURE
    m.vm_map_protect(a, a + 8 * P, VM_PROT_NONE, set_max=True)
    assert all(e.protection == VM_PROT_NONE == e.max_protection for e in m)
    if merge == "coalesce":
        assert m.nentries == 1
    m.check_consistency()


@all_modes
def test_protect_and_inherit_skip_holes_and_clamp(lookup, merge):
    m, _ = make(lookup, merge, min_offset=4 * P, max_offset=64 * P)
    m.vm_map_enter(4 * P, 2 * P)
    m.vm_map_enter(10 * P, 2 * P)
    m.vm_map_protect(0, 1 << 30, VM_PROT_READ)
    assert [e.protection for e in m] == [VM_PROT_READ, VM_PROT_READ]
    m.vm_map_inherit(5 * P, 11 * P, VM_INHERIT_NONE)
    assert [(e.vme_start, e.inheritance) for e in m] == [
        (4 * P, VM_INHERIT_COPY), (5 * P, VM_INHERIT_NONE), (10 * P, VM_INHERIT_NONE),
        (11 * P, VM_INHERIT_COPY)]
    with pytest.raises(MachError) as ei:
        m.vm_map_inherit(4 * P, 5 * P, 9)
    assert code_of(ei) == K.KERN_INVALID_ARGUMENT
    m.vm_map_inherit(4 * P, 12 * P, VM_INHERIT_COPY)
    assert m.nentries == (2 if merge == "coalesce" else 4)
    m.check_consistency()


# ---------------------------------------------------------------- merging

@both
def test_classic_simple_extension(lookup):
    m, _ = make(lookup, "classic")
    a = m.vm_map_enter(None, 2 * P)
    assert m.vm_map_enter(None, 3 * P) == a + 2 * P
    assert spans(m) == [(a, a + 5 * P)]
    # Different attributes: a new entry.  An object given: a new entry.
    m.vm_map_enter(None, P, protection=VM_PROT_READ)
    m.vm_map_enter(None, P, obj=FakeObject())
    assert m.nentries == 3
    # Extension of an anonymous object with one reference grows it.
    o = FakeObject(size=2 * P)
    b = m.vm_map_enter(64 * P, 2 * P, obj=o)
    m.vm_map_enter(b + 2 * P, 2 * P)
    assert m.vm_region(b).vme_end == b + 4 * P and o.size == 4 * P
    # Not for an object with a pager, nor one with two references.
    ext = FakeObject(internal=False, pager="p")
    c = m.vm_map_enter(128 * P, P, obj=ext)
    m.vm_map_enter(c + P, P)
    assert m.vm_region(c).vme_end == c + P
    # Classic never merges entries that merely become alike (enter next to, protect).
    d = m.vm_map_enter(256 * P, P)
    m.vm_map_enter(d - P, P)
    assert m.vm_region(d - P).vme_end == d
    m.check_consistency()


def test_coalesce_enter_merges_both_sides():
    m, _ = make("tree", "coalesce")
    m.vm_map_enter(0, 2 * P)
    m.vm_map_enter(4 * P, 2 * P)
    m.vm_map_enter(2 * P, 2 * P)  # fills the hole: one entry
    assert spans(m) == [(0, 6 * P)]
    o = FakeObject(internal=False, pager="p")
    m.vm_map_enter(10 * P, 2 * P, obj=o, offset=4 * P)
    o.ref_count += 1  # the caller's second reference, donated to the next enter
    m.vm_map_enter(8 * P, 2 * P, obj=o, offset=2 * P)  # same object, contiguous offsets
    assert spans(m) == [(0, 6 * P), (8 * P, 12 * P)]
    e = m.vm_region(8 * P)
    assert e.object is o and e.offset == 2 * P and o.ref_count == 1
    o.ref_count += 1
    m.vm_map_enter(12 * P, P, obj=o, offset=9 * P)  # not contiguous: separate
    assert m.nentries == 3 and o.ref_count == 2
    m.check_consistency()


def test_coalesce_conditions():
    m, _ = make("list", "coalesce")
    a = m.vm_map_enter(None, 8 * P)
    m.vm_map_protect(a + 2 * P, a + 4 * P, VM_PROT_READ)
    _, e = m.vm_map_lookup_entry(a + 2 * P)
    e.wired_count = 1
    m.vm_map_protect(a + 2 * P, a + 4 * P, RW)
    assert m.nentries == 3  # wired count differs
    e.wired_count = 0
    e.in_transition = True
    m.vm_map_inherit(a, a + 8 * P, VM_INHERIT_COPY)
    assert m.nentries == 3  # in transition
    e.in_transition = False
    e.is_shared = True
    m.vm_map_inherit(a, a + 8 * P, VM_INHERIT_COPY)
    assert m.nentries == 3  # shared
    e.is_shared = False
    m.vm_map_inherit(a, a + 8 * P, VM_INHERIT_COPY)
    assert m.nentries == 1
    m.check_consistency()


@both
def test_coalesce_anonymous_objects(lookup):
    calls = []

    def coalesce(obj_a, size_a, obj_b, size_b, offset_a, offset_b):
        calls.append((obj_a, size_a, obj_b, size_b, offset_a, offset_b))
        if obj_a is None:
            return obj_b if offset_b >= size_a else None
        obj_a.size = max(obj_a.size, offset_a + size_a + size_b)
        return obj_a

    rec = Recorder()
    m = VMMap(lookup=lookup, merge="coalesce", reference=rec.reference,
              deallocate=rec.deallocate, coalesce=coalesce)
    x = FakeObject(size=2 * P)
    y = FakeObject(size=2 * P)
    m.vm_map_enter(0, 2 * P, obj=x)
    m.vm_map_enter(2 * P, 2 * P, obj=y)
    assert calls == [(x, 2 * P, y, 2 * P, 0, 0)]
    assert spans(m) == [(0, 4 * P)] and m.vm_region(0).object is x
    assert y.ref_count == 0 and x.ref_count == 1  # the map dropped y's reference
    # An external neighbour never reaches the callback.
    f = FakeObject(internal=False, pager="p")
    m.vm_map_enter(4 * P, P, obj=f)
    assert len(calls) == 1 and m.nentries == 2
    # Nor an anonymous object already paged out (it has a default-pager port).
    paged = FakeObject(internal=True, pager="default pager")
    m.vm_map_enter(16 * P, P, obj=paged)
    m.vm_map_enter(17 * P, P)
    m.vm_map_enter(15 * P, P)
    assert len(calls) == 1 and m.vm_region(16 * P).vme_end == 17 * P
    # Nor an anonymous object with a second reference (zero-fill memory after it).
    z = FakeObject()
    z.ref_count = 2
    m.vm_map_enter(6 * P, P, obj=z)
    m.vm_map_enter(7 * P, P)
    assert len(calls) == 1 and m.nentries == 7
    # With one reference, the callback takes the zero-fill memory into the object.
    w = FakeObject()
    m.vm_map_enter(33 * P, P, obj=w, offset=3 * P)
    m.vm_map_enter(32 * P, P)
    assert calls[-1] == (None, P, w, P, 0, 3 * P)
    e = m.vm_region(32 * P)
    assert (e.vme_start, e.vme_end, e.object, e.offset) == (32 * P, 34 * P, w, 2 * P)
    assert w.ref_count == 1 and m.nentries == 8
    m.check_consistency()


def test_coalesce_callback_without_offsets_and_tuple_result():
    seen = []

    def coalesce(obj_a, size_a, obj_b, size_b):
        seen.append((obj_a, obj_b))
        return (FakeObject(label="merged"), 0) if obj_b is not None else None

    m = VMMap(lookup="tree", merge="coalesce", coalesce=coalesce)
    x, y = FakeObject(), FakeObject()
    m.vm_map_enter(0, P, obj=x, offset=5 * P)
    m.vm_map_enter(P, P, obj=y)
    e = m.vm_region(0)
    assert e.object.label == "merged" and e.offset == 0 and e.vme_end == 2 * P
    assert x.ref_count == 0 and y.ref_count == 0
    m.vm_map_enter(2 * P, P)  # None after an object: callback says no
    assert m.nentries == 2 and seen[-1] == (e.object, None)


# ---------------------------------------------------------------- fragmentation patterns

MALLOC_STEPS = 600


@both
@pytest.mark.parametrize("with_object", [False, True])
def test_malloc_pattern_classic_one_entry_per_step(lookup, with_object):
    m, rec = make(lookup, "classic")
    obj = FakeObject() if with_object else None
    base = m.vm_map_enter(None, 64 << 20, obj=obj, protection=VM_PROT_NONE)
    for n in range(1, MALLOC_STEPS + 1):
        m.vm_map_protect(base + (n - 1) * P, base + n * P, RW)
        assert m.nentries == n + 1
    if with_object:
        assert obj.ref_count == MALLOC_STEPS + 1
    assert m.size == 64 << 20
    m.check_consistency()


@both
@pytest.mark.parametrize("with_object", [False, True])
def test_malloc_pattern_coalesce_stays_small(lookup, with_object):
    m, rec = make(lookup, "coalesce")
    obj = FakeObject() if with_object else None
    base = m.vm_map_enter(None, 64 << 20, obj=obj, protection=VM_PROT_NONE)
    for n in range(1, MALLOC_STEPS + 1):
        m.vm_map_protect(base + (n - 1) * P, base + n * P, RW)
        assert 1 <= m.nentries <= 2
    first, rest = m.entries()
    assert (first.vme_end - first.vme_start, first.protection) == (MALLOC_STEPS * P, RW)
    assert rest.offset == MALLOC_STEPS * P and rest.object is obj
    if with_object:
        assert obj.ref_count == 2
    m.check_consistency()


def test_malloc_pattern_all_the_way():
    m, _ = make("tree", "coalesce")
    pages = (64 << 20) // P
    base = m.vm_map_enter(None, pages * P, protection=VM_PROT_NONE)
    for n in range(pages):
        m.vm_map_protect(base + n * P, base + (n + 1) * P, RW)
        assert m.nentries <= 2
    assert spans(m) == [(base, base + pages * P)] and m.entries()[0].protection == RW


def test_callbacks_default_to_ref_count():
    m = VMMap(lookup="list", merge="classic")
    o = FakeObject()
    m.vm_map_enter(0, 4 * P, obj=o)
    m.vm_map_protect(P, 2 * P, VM_PROT_READ)
    assert o.ref_count == 3
    m.vm_map_delete(0, 4 * P)
    assert o.ref_count == 0


def test_bad_construction():
    with pytest.raises(ValueError):
        VMMap(lookup="splay")
    with pytest.raises(ValueError):
        VMMap(merge="always")
    with pytest.raises(ValueError):
        VMMap(min_offset=5)
    assert VMMap().vm_map_find_space(P) == 0
    assert VM_PROT_DEFAULT == RW


@pytest.mark.parametrize("lookup", ["list", "tree"])
def test_lookup_cost_counted_only_when_instrumented(lookup):
    from kernel.vm_map_check import vm_map_instrument

    m, _ = make(lookup, "classic", min_offset=0, max_offset=1 << 30)
    m.vm_map_enter(4 * P, 2 * P)
    assert m.lookup_cost() is None  # not timed by default (map_lookup_timing)
    vm_map_instrument(m)
    m.vm_map_enter(None, P)                      # anywhere: a first-fit search
    for a in (0, 5 * P, 7 * P, 1 << 29):
        m.vm_map_lookup_entry(a)
    c = m.lookup_cost()
    assert c["lookups"] >= 4 and c["find_spaces"] >= 1, c
    assert c["lookup_us"] >= 0 and c["find_space_us"] >= 0
    found, e = m.vm_map_lookup_entry(5 * P)  # the wrapped lookup still answers
    assert found and e.vme_start == 4 * P


@pytest.mark.parametrize("merge", MERGES)
def test_clips_and_merges_counted(merge):
    m, _ = make("tree", merge, min_offset=0, max_offset=1 << 30)
    m.vm_map_enter(0, 4 * P)
    m.vm_map_enter(4 * P, 4 * P)             # anonymous, right after: merged in both modes
    assert (m.clips, m.merges) == (0, 1) and m.nentries == 1
    m.vm_map_protect(2 * P, 3 * P, VM_PROT_READ)   # splits the entry twice
    assert m.clips == 2
    m.vm_map_protect(2 * P, 3 * P, RW)       # coalescing puts the three back together
    if merge == "coalesce":
        assert m.nentries == 1 and m.merges == 3
    else:
        assert m.nentries == 3 and m.merges == 1
