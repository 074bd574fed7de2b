"""kernel.vm_page's struct vm_page (the flags and the two protections packed in one int)
and the machine's dirty counts, which the pages keep as their dirty bits change."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.vm_object import VMObject
from kernel.vm_page import VMPage, VMResident, vm_page_insert
from protocol.defs.mach import VM_PROT_ALL, VM_PROT_READ, VM_PROT_WRITE
from protocol.vm_param import PAGE_SIZE

pytestmark = pytest.mark.timeout(30)

FLAGS = ("busy", "absent", "dirty", "precious", "error", "wanted", "laundry", "referenced",
         "potentially_dirty", "external", "extcounted")


def test_a_new_page_has_no_flag_and_no_lock():
    p = VMPage(300_000)
    assert p.frame == 300_000 and p.flags == 0
    assert p.page_lock == 0 and p.unlock_request == 0
    assert not any(getattr(p, f) for f in FLAGS)


@pytest.mark.parametrize("lock,unlock", itertools.product(range(8), repeat=2))
def test_protections_and_flags_do_not_overlap(lock, unlock):
    p = VMPage(1)
    for f in FLAGS:
        setattr(p, f, True)
    p.page_lock, p.unlock_request = lock, unlock
    assert (p.page_lock, p.unlock_request) == (lock, unlock)
    assert all(getattr(p, f) for f in FLAGS)
    for f in FLAGS:
        setattr(p, f, False)
    assert (p.page_lock, p.unlock_request) == (lock, unlock)
    p.page_lock = 0
    assert p.unlock_request == unlock and not any(getattr(p, f) for f in FLAGS)


def test_a_protection_keeps_three_bits_as_the_bitfield_does():
    p = VMPage(1)
    p.page_lock = VM_PROT_ALL | 0x40
    assert p.page_lock == VM_PROT_ALL and p.unlock_request == 0 and not p.dirty


def test_reset_clears_flags_locks_and_wiring():
    p = VMPage(7)
    p.dirty = p.busy = True
    p.page_lock, p.unlock_request, p.wire_count = VM_PROT_WRITE, VM_PROT_READ, 2
    p.reset()
    assert p.flags == 0 and p.page_lock == 0 and p.unlock_request == 0
    assert p.wire_count == 0 and p.object is None and p.frame == 7


# ---------------------------------------------------------------- the dirty counts

def walk(mem):
    """The counts as a walk of every frame finds them (what vm_statistics did)."""
    dirty = [p for p in mem.pages if p.dirty and p.object is not None]
    return len(dirty), sum(1 for p in dirty if not p.object.internal)


OPS = st.lists(st.tuples(st.sampled_from(("grab_internal", "grab_external", "grab_dirty",
                                          "dirty", "clean", "free")),
                         st.integers(0, 63)), max_size=200)


@settings(max_examples=60, deadline=None)
@given(OPS)
def test_dirty_counts_follow_every_change_of_a_page(ops):
    mem = VMResident(64)
    objs = {True: VMObject(64 * PAGE_SIZE, internal=True),
            False: VMObject(64 * PAGE_SIZE, internal=False)}
    held = []
    for op, i in ops:
        if op.startswith("grab"):
            p = mem.vm_page_alloc_pa()
            if p is None:
                continue
            if op == "grab_dirty":  # dirtied before it is in an object
                p.dirty = True
            obj = objs[op == "grab_internal" or (op == "grab_dirty" and i % 2 == 0)]
            vm_page_insert(p, obj, len(held) * PAGE_SIZE + i * 64 * PAGE_SIZE)
            held.append(p)
        elif held:
            p = held[i % len(held)]
            if op == "dirty":
                p.dirty = True
            elif op == "clean":
                p.dirty = False
            else:
                held.remove(p)
                if p.object.resident.get(p.offset) is p:
                    del p.object.resident[p.offset]
                mem.vm_page_free_pa(p)
        assert (mem.dirty_count, mem.dirty_external) == walk(mem)


def test_two_machines_count_apart():
    a, b = VMResident(64), VMResident(64)
    obj = VMObject(PAGE_SIZE, internal=False)
    p = a.vm_page_alloc_pa()
    vm_page_insert(p, obj, 0)
    p.dirty = True
    assert (a.dirty_count, a.dirty_external) == (1, 1)
    assert (b.dirty_count, b.dirty_external) == (0, 0)
