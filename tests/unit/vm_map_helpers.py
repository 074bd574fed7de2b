"""Shared pieces of the kernel.vm_map tests: a stand-in object, a recorder of the
object-layer callbacks, a map maker and small views of a map."""

from __future__ import annotations

import itertools

import pytest

from kernel.vm_map import VMMap
from protocol.defs.mach import VM_PROT_READ, VM_PROT_WRITE
from protocol.vm_param import PAGE_SIZE

P = PAGE_SIZE
RW = VM_PROT_READ | VM_PROT_WRITE
LOOKUPS = ("list", "tree")
MERGES = ("classic", "coalesce")
_labels = itertools.count(1)


class FakeObject:
    """Stand-in for the lead's VMObject: just the attributes the map looks at."""

    def __init__(self, internal=True, pager=None, size=0, label=None):
        self.ref_count = 1
        self.pager = pager
        self.shadow = None
        self.paging_in_progress = 0
        self.internal = internal
        self.size = size
        self.label = label if label is not None else next(_labels)

    def __repr__(self):
        return f"<obj {self.label} refs={self.ref_count}>"


class Recorder:
    """The object-layer callbacks, recording what the map asked for."""

    def __init__(self):
        self.refs = []
        self.deallocs = []
        self.unmapped = []

    def reference(self, obj):
        assert obj is not None
        assert obj.ref_count > 0, "reference to a dead object"
        obj.ref_count += 1
        self.refs.append(obj)

    def deallocate(self, obj):
        assert obj is not None
        assert obj.ref_count > 0, "deallocate of a dead object"
        obj.ref_count -= 1
        self.deallocs.append(obj)

    def unmap(self, entry):
        self.unmapped.append((entry.vme_start, entry.vme_end, entry.object))


def make(lookup="tree", merge="coalesce", rec=None, **kw):
    rec = rec or Recorder()
    m = VMMap(lookup=lookup, merge=merge, reference=rec.reference,
              deallocate=rec.deallocate, unmap=rec.unmap, **kw)
    return m, rec


def spans(m):
    return [(e.vme_start, e.vme_end) for e in m]


def page_attrs(m, base, n):
    out = []
    for i in range(n):
        found, e = m.vm_map_lookup_entry(base + i * P)
        assert found
        out.append((e.protection, e.max_protection))
    return out


def code_of(excinfo):
    return excinfo.value.code


both = pytest.mark.parametrize("lookup", LOOKUPS)
all_modes = pytest.mark.parametrize("lookup,merge", list(itertools.product(LOOKUPS, MERGES)))
