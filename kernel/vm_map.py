"""Address maps (GNU Mach vm/vm_map.c, vm/vm_map.h): a task's map entries, as data.

A ``VMMap`` holds ``VMMapEntry``s [vme_start, vme_end), page aligned, sorted, never
overlapping, on a doubly linked list with a header (``vm_map_to_entry``), plus a lookup
``hint``.  The lookup structure is chosen at creation; with config map_lookup_timing its
cost is measured (lookup_cost):

  lookup="list"   Mach before 2012: vm_map_lookup_entry scans the list from the hint (or
                  the head), vm_map_find_space from ``first_free``.
  lookup="tree"   GNU Mach since 2012: the list plus a red-black tree keyed by vme_start
                  (kernel.rbtree; the hint stays the fast path), augmented with each
                  entry's gap to its successor and the largest gap of each subtree, so a
                  first-fit search is O(log n) too (GNU Mach's gap tree, 2013).

and so is the merge mode:

  merge="classic"   vm_map_enter only extends the previous entry when anonymous memory
                    (no object) is entered right at its end with identical attributes.
  merge="coalesce"  GNU Mach since 2023: vm_map_coalesce_entry after enter, protect and
                    inherit merges each touched entry with its neighbours.

Objects are opaque to the map: anything with ``ref_count``, ``pager`` (None: anonymous),
``shadow``, ``paging_in_progress``, ``internal`` and ``size``.  Each entry owns one
reference to its object (None: zero-fill memory not yet given an object; never passed
to a callback).  The map never touches pages; it calls back into the object layer
(``vm_map_create`` gives it kernel.vm_object's routines): ``reference(obj)``
(vm_object_reference: a clip gave a second entry the same object), ``deallocate(obj)``
(an entry went: delete, or a merge over one object), ``unmap(entry)`` (optional: each
entry vm_map_delete removes, before deallocate) and ``coalesce(obj_a, size_a, obj_b,
size_b[, offset_a=, offset_b=])`` (vm_object_coalesce: VMMap._object_coalesce).
"""

from __future__ import annotations

import inspect
from functools import partial

from kernel.rbtree import (
    RB_LEFT,
    RB_RIGHT,
    RBNode,
    RBTree,
    rbtree_height,
    rbtree_insert_rebalance,
    rbtree_remove,
)
from kernel.vm_map_check import vm_map_check, vm_map_instrument, vm_map_lookup_cost
from kernel.vm_object import (
    vm_object_coalesce,
    vm_object_deallocate,
    vm_object_page_remove,
    vm_object_reference,
)
from protocol.defs.mach import (
    VM_INHERIT_COPY,
    VM_INHERIT_DEFAULT,
    VM_INHERIT_NONE,
    VM_INHERIT_SHARE,
    VM_PROT_ALL,
    VM_PROT_DEFAULT,
)
from protocol.kern_return import KernReturn, MachError
from protocol.vm_param import PAGE_MASK, PAGE_SIZE, VM_MAX_ADDRESS, VM_MIN_ADDRESS

LOOKUP_LIST = "list"
LOOKUP_TREE = "tree"
MERGE_CLASSIC = "classic"
MERGE_COALESCE = "coalesce"

_INHERITANCES = (VM_INHERIT_SHARE, VM_INHERIT_COPY, VM_INHERIT_NONE)
_WORD_MASK = (1 << 64) - 1


def _fail(code: KernReturn, what: str):
    raise MachError(code, what)


class VMMapEntry(RBNode):
    """struct vm_map_entry (vm/vm_map.h).

    ``vme_prev``/``vme_next`` are the list links (the map's header ends the ring);
    ``rb_*`` (from RBNode) are the tree node, ``gap_size`` the free space up to the next
    entry (or to max_offset) and ``max_gap`` the largest gap in the subtree (tree maps
    only).
    """

    __slots__ = ("vme_prev", "vme_next", "vme_start", "vme_end", "object", "offset",
                 "protection", "max_protection", "inheritance", "wired_count", "is_shared",
                 "needs_copy", "in_transition", "needs_wakeup", "is_sub_map",
                 "gap_size", "max_gap")

    def __init__(self, start: int, end: int, obj=None, offset: int = 0,
                 protection: int = VM_PROT_DEFAULT, max_protection: int = VM_PROT_ALL,
                 inheritance: int = VM_INHERIT_DEFAULT, needs_copy: bool = False):
        self.vme_prev = self.vme_next = None
        self.vme_start, self.vme_end = start, end
        self.object, self.offset = obj, offset
        self.protection, self.max_protection = protection, max_protection
        self.inheritance = inheritance
        self.wired_count = 0
        self.needs_copy = needs_copy
        self.is_shared = self.in_transition = self.needs_wakeup = self.is_sub_map = False
        self.rb_parent = self.rb_children = None
        self.rb_red = False
        self.gap_size = self.max_gap = 0

    @property
    def size(self) -> int:
        return self.vme_end - self.vme_start

    def copy_full(self) -> VMMapEntry:
        """vm_map_entry_copy_full: same range and attributes, no links."""
        e = VMMapEntry(self.vme_start, self.vme_end, self.object, self.offset,
                       self.protection, self.max_protection, self.inheritance,
                       self.needs_copy)
        e.wired_count, e.is_shared = self.wired_count, self.is_shared
        e.in_transition, e.needs_wakeup = self.in_transition, self.needs_wakeup
        return e

    def __repr__(self) -> str:
        return (f"<VMMapEntry {self.vme_start:#x}-{self.vme_end:#x} obj={self.object!r} "
                f"off={self.offset:#x} prot={self.protection}/{self.max_protection} "
                f"inh={self.inheritance} wired={self.wired_count}>")


def _default_deallocate(obj) -> None:
    obj.ref_count -= 1


def _accepts_offsets(fn) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True
    return "offset_a" in params and "offset_b" in params


def _anonymous_mergeable(obj) -> bool:
    """The object side of vm_object_coalesce: only a private anonymous object may grow."""
    return (obj.ref_count == 1 and obj.pager is None and obj.shadow is None
            and obj.paging_in_progress == 0 and obj.internal)


class _GapTree(RBTree):
    """The entry tree, augmented with each subtree's largest gap (``max_gap``)."""

    __slots__ = ()

    def augment_rotate(self, node, up):
        up.max_gap = node.max_gap  # the same entries as node's subtree had
        left, right = node.rb_children
        node.max_gap = max(node.gap_size, left.max_gap, right.max_gap)

    def augment_insert(self, node):
        g = node.max_gap = node.gap_size
        p, nil = node.rb_parent, self.nil
        while p is not nil and p.max_gap < g:
            p.max_gap = g
            p = p.rb_parent

    def augment_remove(self, parent):
        p, nil = parent, self.nil
        while p is not nil:
            left, right = p.rb_children
            p.max_gap = max(p.gap_size, left.max_gap, right.max_gap)
            p = p.rb_parent


class VMMap:
    """struct vm_map (vm/vm_map.h) and the vm_map.c routines that work on it.

    Attributes keep Mach's names: ``min_offset``, ``max_offset``, ``nentries``, ``size``
    (bytes mapped), ``hint`` (last entry found; None for the header), ``first_free``.
    Operations raise ``MachError`` with Mach's codes.  Addresses and sizes must be page
    aligned: rounding is the caller's job, as in vm_user.c."""

    def __init__(self, min_offset: int = VM_MIN_ADDRESS, max_offset: int = VM_MAX_ADDRESS,
                 lookup: str = LOOKUP_TREE, merge: str = MERGE_COALESCE, *,
                 reference=None, deallocate=None, coalesce=None, unmap=None):
        if lookup not in (LOOKUP_LIST, LOOKUP_TREE):
            raise ValueError(f"lookup must be 'list' or 'tree', not {lookup!r}")
        if merge not in (MERGE_CLASSIC, MERGE_COALESCE):
            raise ValueError(f"merge must be 'classic' or 'coalesce', not {merge!r}")
        if min_offset & PAGE_MASK or max_offset & PAGE_MASK or not 0 <= min_offset < max_offset:
            raise ValueError("min_offset/max_offset must be page aligned, min < max")
        self.min_offset, self.max_offset = min_offset, max_offset
        self.lookup, self.merge = lookup, merge
        self._tree = lookup == LOOKUP_TREE
        self._coalescing = merge == MERGE_COALESCE
        self._reference = reference or vm_object_reference
        self._deallocate = deallocate or _default_deallocate
        self._coalesce_cb = coalesce
        self._coalesce_offsets = coalesce is not None and _accepts_offsets(coalesce)
        self._unmap = unmap
        # The header: vm_map_to_entry(map); its start/end are the map's bounds, as in Mach.
        h = self._header = VMMapEntry(min_offset, max_offset)
        h.vme_prev = h.vme_next = h
        self.nentries = 0
        self.size = 0
        self._hint = h
        self._first_free = h
        if self._tree:
            nil = self._nil = VMMapEntry(0, 0)
            nil.gap_size = nil.max_gap = -1
            self._rbtree = _GapTree(nil)
            self._lookup = self._lookup_tree
        else:
            self._nil = self._rbtree = None
            self._lookup = self._lookup_list
        self.lookup_stats = None  # [lookups, ns, searches, ns] once vm_map_instrument'ed
        # What made and unmade entries so far (vminfo's summary): entries split by
        # clipping, and entries grown over a neighbour (simple extension or coalesce).
        self.clips = 0
        self.merges = 0

    # ------------------------------------------------------------------ inspection

    def __len__(self) -> int:
        return self.nentries

    def __iter__(self):
        h = self._header
        e = h.vme_next
        while e is not h:
            nxt = e.vme_next
            yield e
            e = nxt

    def entries(self) -> list[VMMapEntry]:
        """The entries in address order (vm_map_first_entry .. vm_map_last_entry)."""
        return list(self)

    def lookup_cost(self) -> dict | None:
        """What lookups and first-fit searches cost so far (vm_map_lookup_cost), None
        unless the map is instrumented (config map_lookup_timing)."""
        return None if self.lookup_stats is None else vm_map_lookup_cost(self)

    @property
    def hint(self) -> VMMapEntry | None:
        return None if self._hint is self._header else self._hint

    @property
    def first_free(self) -> VMMapEntry | None:
        return None if self._first_free is self._header else self._first_free

    # ------------------------------------------------------------------ lookup

    def vm_map_lookup_entry(self, address: int) -> tuple[bool, VMMapEntry | None]:
        """vm_map_lookup_entry: (True, the entry containing ``address``) or (False, the
        entry immediately preceding it, None if there is none).  Saves the hint."""
        found, e = self._lookup(address)
        return found, (None if e is self._header else e)

    def _lookup_list(self, address):
        """Classic vm_map_lookup_entry (the header for 'no predecessor')."""
        header = self._header
        cur = self._hint
        if cur is header:
            cur = cur.vme_next
        if address >= cur.vme_start:
            last = header
            if cur is not header and address < cur.vme_end:
                return True, cur
        else:
            last = cur
            cur = header.vme_next
        while cur is not last:
            if cur.vme_end > address:
                if address >= cur.vme_start:
                    self._hint = cur
                    return True, cur
                break
            cur = cur.vme_next
        pred = cur.vme_prev
        self._hint = pred
        return False, pred

    def _lookup_tree(self, address):
        """vm_map_lookup_entry since 2012: the hint, then rbtree_lookup_nearest (left)."""
        header = self._header
        hint = self._hint
        if hint is not header and address >= hint.vme_start:
            if address < hint.vme_end:
                return True, hint
            nxt = hint.vme_next
            if nxt is header or address < nxt.vme_start:
                return False, hint
        nil = self._nil
        node = self._rbtree.root
        best = header
        while node is not nil:
            if address < node.vme_start:
                node = node.rb_children[0]  # RB_LEFT
            elif address < node.vme_end:
                self._hint = node
                return True, node
            else:
                best = node
                node = node.rb_children[1]  # RB_RIGHT
        self._hint = best
        return False, best

    def vm_region(self, address: int) -> VMMapEntry:
        """vm_region: the entry containing ``address``, else the next one (or KERN_NO_SPACE)."""
        found, e = self._lookup(address)
        if not found:
            e = e.vme_next
            if e is self._header:
                _fail(KernReturn.KERN_NO_SPACE, "vm_region")
        return e

    # ------------------------------------------------------------------ free space

    def vm_map_find_space(self, size: int, mask: int = 0) -> int:
        """vm_map_find_entry_anywhere: the lowest address >= min_offset where ``size``
        bytes fit in a hole, aligned so that ``address & mask == 0`` (a mask with high
        bits also bounds the address, as in GNU Mach).  KERN_NO_SPACE if none."""
        self._check_size(size, "vm_map_find_space")
        return self._find_space(size, mask)[0]

    def _find_space(self, size: int, mask: int):
        """Returns (start, entry after which the range goes, or the header)."""
        limit = self.max_offset
        if mask < 0:
            _fail(KernReturn.KERN_INVALID_ARGUMENT, "vm_map_find_space: mask")
        if ((mask + 1) & mask) != 0:
            # High bits besides the low alignment bits: they bound the address.
            lowmask = ((~mask & (mask + 1)) - 1) & _WORD_MASK
            himask = mask - lowmask
            bound = himask & -himask
            if (himask + bound) & _WORD_MASK != 0:
                _fail(KernReturn.KERN_NO_SPACE, f"vm_map_find_space: invalid mask {mask:#x}")
            limit = min(limit, bound)
            mask = lowmask
        notmask = ~mask
        header = self._header

        if self._tree:
            # The hole below the first entry, then the first entry whose gap fits.
            first = header.vme_next
            lo = self.min_offset
            hi = self.max_offset if first is header else first.vme_start
            start = (lo + mask) & notmask
            if start + size <= hi and start + size <= limit:
                return start, header
            nil = self._nil
            node = self._rbtree.root
            stack = []
            while True:
                while node is not nil and node.max_gap >= size:
                    stack.append(node)
                    node = node.rb_children[0]  # RB_LEFT
                if not stack:
                    break
                node = stack.pop()
                if node.gap_size >= size:
                    lo = node.vme_end
                    if lo + size > limit:
                        break
                    start = (lo + mask) & notmask
                    end = start + size
                    if end <= lo + node.gap_size and end <= limit:
                        return start, node
                node = node.rb_children[1]  # RB_RIGHT
            _fail(KernReturn.KERN_NO_SPACE, "vm_map_find_space")

        # Classic: scan the list from first_free, which has no hole before its end.
        entry = self._first_free
        while True:
            nxt = entry.vme_next
            if nxt is header:
                break
            if nxt.vme_start != (self.min_offset if entry is header else entry.vme_end):
                break
            entry = nxt
        self._first_free = entry
        while True:
            lo = self.min_offset if entry is header else entry.vme_end
            start = (lo + mask) & notmask
            end = start + size
            if end > limit:
                break
            nxt = entry.vme_next
            if nxt is header or end <= nxt.vme_start:
                if end <= self.max_offset:
                    return start, entry
                break
            entry = nxt
        _fail(KernReturn.KERN_NO_SPACE, "vm_map_find_space")

    # ------------------------------------------------------------------ enter

    def vm_map_enter(self, address: int | None, size: int, obj=None, offset: int = 0,
                     protection: int = VM_PROT_DEFAULT, max_protection: int = VM_PROT_ALL,
                     inheritance: int = VM_INHERIT_DEFAULT, mask: int = 0,
                     needs_copy: bool = False) -> int:
        """vm_map_enter: map ``size`` bytes of ``obj`` from ``offset`` at ``address``
        (None: anywhere, first fit); returns the address.  The map takes over the caller's
        reference to ``obj`` on success (not on failure).  KERN_INVALID_ARGUMENT (size 0
        or unaligned, bad protection or inheritance), KERN_INVALID_ADDRESS (outside
        [min_offset, max_offset)), KERN_NO_SPACE (overlap, against the mask, no room)."""
        self._check_size(size, "vm_map_enter")
        if offset < 0 or offset & PAGE_MASK:
            _fail(KernReturn.KERN_INVALID_ARGUMENT, "vm_map_enter: offset")
        if protection & ~VM_PROT_ALL or max_protection & ~VM_PROT_ALL:
            _fail(KernReturn.KERN_INVALID_ARGUMENT, "vm_map_enter: protection")
        if inheritance not in _INHERITANCES:
            _fail(KernReturn.KERN_INVALID_ARGUMENT, "vm_map_enter: inheritance")
        header = self._header
        if address is None:
            start, entry = self._find_space(size, mask)
            end = start + size
        else:
            start = address
            if start & PAGE_MASK:
                _fail(KernReturn.KERN_INVALID_ARGUMENT, "vm_map_enter: address not aligned")
            if start & mask:
                _fail(KernReturn.KERN_NO_SPACE, "vm_map_enter: address against mask")
            end = start + size
            if start < self.min_offset or end > self.max_offset:
                _fail(KernReturn.KERN_INVALID_ADDRESS, "vm_map_enter")
            found, entry = self._lookup(start)
            if found:
                _fail(KernReturn.KERN_NO_SPACE, "vm_map_enter: address in use")
            nxt = entry.vme_next
            if nxt is not header and nxt.vme_start < end:
                _fail(KernReturn.KERN_NO_SPACE, "vm_map_enter: range in use")

        if (not self._coalescing and obj is None and entry is not header
                and entry.vme_end == start and not entry.is_shared and not entry.is_sub_map
                and not entry.in_transition and entry.wired_count == 0
                and entry.inheritance == inheritance and entry.protection == protection
                and entry.max_protection == max_protection
                and entry.needs_copy == needs_copy):
            # Classic "simple extension" of the previous entry over anonymous memory.
            ok, new_obj, new_off = self._object_coalesce(entry.object, entry.offset,
                                                         entry.vme_end - entry.vme_start,
                                                         None, 0, size)
            if ok:
                entry.object, entry.offset = new_obj, new_off
                self._set_end(entry, end)
                self.size += size
                self._hint = entry
                self.merges += 1
                return start

        new = VMMapEntry(start, end, obj, offset, protection, max_protection, inheritance,
                         needs_copy)
        self._link(entry, new)
        self.size += size
        self._hint = new
        if self._coalescing:
            self.vm_map_coalesce_entry(new.vme_next)
            self.vm_map_coalesce_entry(new)
        return start

    # ------------------------------------------------------------------ clipping

    def vm_map_clip_start(self, entry: VMMapEntry, start: int) -> VMMapEntry:
        """vm_map_clip_start: make ``entry`` begin at ``start`` by splitting off its front
        into a new entry before it (which takes a new reference to the object).  Returns
        ``entry`` (now starting at ``start``)."""
        if start <= entry.vme_start:
            return entry
        if start >= entry.vme_end or start & PAGE_MASK:
            _fail(KernReturn.KERN_INVALID_ARGUMENT, "vm_map_clip_start")
        new = entry.copy_full()
        new.vme_end = start
        entry.offset += start - entry.vme_start
        # The key changes in place; the front part is then inserted as its predecessor.
        entry.vme_start = start
        self._link(entry.vme_prev, new)
        self.clips += 1
        if new.object is not None:
            self._reference(new.object)
        return entry

    def vm_map_clip_end(self, entry: VMMapEntry, end: int) -> VMMapEntry:
        """vm_map_clip_end: make ``entry`` end at ``end`` by splitting off its tail into a
        new entry after it (offset advanced, new object reference).  Returns ``entry``."""
        if end >= entry.vme_end:
            return entry
        if end <= entry.vme_start or end & PAGE_MASK:
            _fail(KernReturn.KERN_INVALID_ARGUMENT, "vm_map_clip_end")
        new = entry.copy_full()
        new.vme_start = end
        new.offset += end - entry.vme_start
        entry.vme_end = end
        self._link(entry, new)
        self.clips += 1
        if new.object is not None:
            self._reference(new.object)
        return entry

    # ------------------------------------------------------------------ delete

    def vm_map_delete(self, start: int, end: int) -> list[VMMapEntry]:
        """vm_map_delete (vm_map_remove): clip and remove the entries in [start, end),
        clamped to the map's bounds, holes and entries in transition included (no one to
        wait for here).  For each, in address order, ``unmap(entry)`` (if given) then
        ``deallocate(entry.object)``.  Returns them (object and offset intact, unlinked)."""
        start, end = self._range(start, end, "vm_map_delete")
        if start >= end:
            return []
        header = self._header
        found, entry = self._lookup(start)
        if found:
            self.vm_map_clip_start(entry, start)
            self._hint = entry.vme_prev
        else:
            entry = entry.vme_next
        removed = []
        while entry is not header and entry.vme_start < end:
            self.vm_map_clip_end(entry, end)
            nxt = entry.vme_next
            self._unlink(entry, hole=True)
            self.size -= entry.vme_end - entry.vme_start
            removed.append(entry)
            entry = nxt
        for e in removed:
            if self._unmap is not None:
                self._unmap(e)
            if e.object is not None:
                self._deallocate(e.object)
        return removed

    # ------------------------------------------------------------------ attributes

    def vm_map_protect(self, start: int, end: int, new_prot: int, set_max: bool = False):
        """vm_map_protect: set the current protection of [start, end) (clamped; holes
        skipped), or with ``set_max`` the maximum one, which also clamps the current one.
        Bits outside an entry's max_protection: KERN_PROTECTION_FAILURE, nothing changed.
        Partial entries are clipped (up to three from one), then coalesced."""
        if new_prot & ~VM_PROT_ALL or new_prot < 0:
            _fail(KernReturn.KERN_INVALID_ARGUMENT, "vm_map_protect: protection")
        start, end = self._range(start, end, "vm_map_protect")
        if start >= end:
            return
        header = self._header
        found, first = self._lookup(start)
        if not found:
            first = first.vme_next
        cur = first
        while cur is not header and cur.vme_start < end:
            if new_prot & cur.max_protection != new_prot:
                _fail(KernReturn.KERN_PROTECTION_FAILURE, "vm_map_protect")
            cur = cur.vme_next
        if found:
            self.vm_map_clip_start(first, start)
        if set_max:
            def change(e):
                e.max_protection = new_prot
                e.protection &= new_prot
        else:
            def change(e):
                e.protection = new_prot
        self._change_entries(first, end, change)

    def vm_map_inherit(self, start: int, end: int, inheritance: int):
        """vm_map_inherit: set the inheritance of [start, end), as vm_map_protect."""
        if inheritance not in _INHERITANCES:
            _fail(KernReturn.KERN_INVALID_ARGUMENT, "vm_map_inherit: inheritance")
        start, end = self._range(start, end, "vm_map_inherit")
        if start >= end:
            return
        found, cur = self._lookup(start)
        if found:
            self.vm_map_clip_start(cur, start)
        else:
            cur = cur.vme_next

        def change(e):
            e.inheritance = inheritance
        self._change_entries(cur, end, change)

    def _change_entries(self, cur, end, change):
        """``change`` each entry from ``cur`` (clipped at the start already) up to
        ``end``, clipping the last; under coalescing each touched entry is then merged
        with its neighbours."""
        header = self._header
        while cur is not header and cur.vme_start < end:
            self.vm_map_clip_end(cur, end)
            change(cur)
            nxt = cur.vme_next
            if self._coalescing:
                self.vm_map_coalesce_entry(cur)
            cur = nxt
        if self._coalescing:
            self.vm_map_coalesce_entry(cur)

    # ------------------------------------------------------------------ merging

    def vm_map_coalesce_entry(self, entry: VMMapEntry | None) -> bool:
        """vm_map_coalesce_entry (GNU Mach 2023): merge ``entry`` into the entry before
        it when they are adjacent, neither is shared, a submap or in transition, their
        inheritance, protection, max_protection, needs_copy and wired_count are equal and
        their objects coalesce.  ``entry`` is gone from the map if this returns True."""
        header = self._header
        if entry is None or entry is header:
            return False
        prev = entry.vme_prev
        if (prev is header or prev.vme_end != entry.vme_start
                or prev.is_shared or entry.is_shared or prev.is_sub_map or entry.is_sub_map
                or prev.in_transition or entry.in_transition
                or prev.inheritance != entry.inheritance
                or prev.protection != entry.protection
                or prev.max_protection != entry.max_protection
                or prev.needs_copy != entry.needs_copy
                or prev.wired_count != entry.wired_count):
            return False
        ok, obj, off = self._object_coalesce(prev.object, prev.offset,
                                             prev.vme_end - prev.vme_start,
                                             entry.object, entry.offset,
                                             entry.vme_end - entry.vme_start)
        if not ok:
            return False
        prev.object, prev.offset = obj, off
        prev.vme_end = entry.vme_end
        self._unlink(entry, hole=False)
        entry.object = None
        self.merges += 1
        return True

    def _object_coalesce(self, a, off_a, size_a, b, off_b, size_b):
        """vm_object_coalesce for the entries' objects: (ok, object, offset) for the
        merged range [a then b].  Both None merge; the same object with contiguous
        offsets merges, dropping one reference.  Distinct objects (one may be None) must
        each be anonymous with one reference, no pager, shadow or paging in progress;
        then the ``coalesce`` callback decides: None (no merge), a tuple (object,
        offset), or an object (at offset_a if it is ``a``, offset_b - size_a if ``b``,
        else 0); the map drops the inputs that are not the result.  The offsets go as
        keywords only if the callback takes them.  Without a callback, Mach's own cases
        only: None after an object extends it (its size grows), None before one extends
        it backwards when offset_b >= size_a.  (Mach also purges stale pages of the
        range taken over: kernel.vm_object's callback does.)"""
        if a is b:
            if a is None:
                return True, None, 0
            if off_a + size_a == off_b:
                self._deallocate(a)
                return True, a, off_a
            return False, None, 0
        if (a is not None and not _anonymous_mergeable(a)) or \
                (b is not None and not _anonymous_mergeable(b)):
            return False, None, 0
        cb = self._coalesce_cb
        if cb is None:
            if b is None:
                newsize = off_a + size_a + size_b
                if a.size < newsize:
                    a.size = newsize
                return True, a, off_a
            if a is None and off_b >= size_a:
                return True, b, off_b - size_a
            return False, None, 0
        if self._coalesce_offsets:
            res = cb(a, size_a, b, size_b, offset_a=off_a, offset_b=off_b)
        else:
            res = cb(a, size_a, b, size_b)
        if res is None:
            return False, None, 0
        if isinstance(res, tuple):
            obj, off = res
        else:
            obj = res
            off = off_a if obj is a else (off_b - size_a if obj is b else 0)
        for o in (a, b):
            if o is not None and o is not obj:
                self._deallocate(o)
        return True, obj, off

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _check_size(size: int, what: str):
        if size <= 0 or size & PAGE_MASK:
            _fail(KernReturn.KERN_INVALID_ARGUMENT, f"{what}: size {size:#x}")

    def _range(self, start: int, end: int, what: str):
        """VM_MAP_RANGE_CHECK, after checking page alignment."""
        if start & PAGE_MASK or end & PAGE_MASK:
            _fail(KernReturn.KERN_INVALID_ARGUMENT, f"{what}: range not page aligned")
        start = max(start, self.min_offset)
        end = min(end, self.max_offset)
        return (start, end) if start <= end else (end, end)

    def _set_end(self, entry, end):
        entry.vme_end = end
        if self._tree:
            self._gap_update(entry)

    def _link(self, after, e):
        """vm_map_entry_link: insert ``e`` after ``after`` (an entry or the header)."""
        header = self._header
        nxt = after.vme_next
        e.vme_prev, e.vme_next = after, nxt
        after.vme_next = e
        nxt.vme_prev = e
        self.nentries += 1
        if self._tree:
            e.gap_size = (self.max_offset if nxt is header else nxt.vme_start) - e.vme_end
            self._rb_insert(e)
            if after is not header:
                self._gap_update(after)

    def _unlink(self, e, hole: bool):
        """vm_map_entry_unlink; ``hole``: the range becomes free (not merged away)."""
        header = self._header
        prev, nxt = e.vme_prev, e.vme_next
        prev.vme_next = nxt
        nxt.vme_prev = prev
        self.nentries -= 1
        if self._tree:
            rbtree_remove(self._rbtree, e)
            if prev is not header:
                self._gap_update(prev)
        if self._hint is e:
            self._hint = prev
        ff = self._first_free
        if ff is e or (hole and e.vme_start < (self.min_offset if ff is header
                                               else ff.vme_end)):
            self._first_free = prev
        e.vme_prev = e.vme_next = None

    # --- the tree: kernel.rbtree keyed by vme_start, augmented with max_gap

    def _gap_update(self, e):
        """Recompute e's gap to its successor and the max_gap of its ancestors
        (vm_map_gap_update)."""
        nxt = e.vme_next
        e.gap_size = (self.max_offset if nxt is self._header else nxt.vme_start) - e.vme_end
        nil = self._nil
        node = e
        while node is not nil:
            left, right = node.rb_children
            m = max(node.gap_size, left.max_gap, right.max_gap)
            if m == node.max_gap and node is not e:
                break
            node.max_gap = m
            node = node.rb_parent

    def _rb_insert(self, e):
        """Insert ``e`` in the tree, keyed by vme_start."""
        tree = self._rbtree
        nil = tree.nil
        key = e.vme_start
        parent, index = nil, RB_LEFT
        node = tree.root
        while node is not nil:
            parent = node
            index = RB_LEFT if key < node.vme_start else RB_RIGHT
            node = node.rb_children[index]
        rbtree_insert_rebalance(tree, parent, index, e)

    # ------------------------------------------------------------------ checking

    def tree_height(self) -> int:
        """Height of the lookup tree (0 when empty or for a list map)."""
        return rbtree_height(self._rbtree) if self._tree else 0

    def check_consistency(self) -> None:
        vm_map_check(self)  # AssertionError on any broken invariant


# ---------------------------------------------------------------- the kernel's maps

def vm_map_create(vm) -> VMMap:
    """vm_map_create: a task's empty map, with the configured lookup structure and merge
    mode, its objects managed by kernel.vm_object."""
    cfg = vm.config
    vmap = VMMap(min_offset=PAGE_SIZE, lookup=cfg.map_lookup, merge=cfg.map_merge,
                 reference=vm_object_reference, deallocate=partial(vm_object_deallocate, vm),
                 unmap=partial(vm_map_entry_unmap, vm),
                 coalesce=partial(vm_object_coalesce, vm))
    if cfg.map_lookup_timing:
        vm_map_instrument(vmap)  # what lookups and first-fit searches cost
    return vmap


def vm_map_entry_unmap(vm, entry):
    """vm_map_entry_delete's page removal: pages of an anonymous object that no other
    entry maps are freed with the range (vm_object_page_remove)."""
    obj = entry.object
    if obj is None or not obj.internal or obj.ref_count > 1:
        return
    vm_object_page_remove(vm, obj, entry.offset, entry.vme_end - entry.vme_start)

