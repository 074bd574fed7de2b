"""kernel.vm_page's struct vm_page: the flags and the two protections packed in one int."""

import itertools

import pytest

from kernel.vm_page import VMPage
from protocol.defs.mach import VM_PROT_ALL, VM_PROT_READ, VM_PROT_WRITE

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
