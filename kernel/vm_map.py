"""Address maps (GNU Mach vm/vm_map.c, vm/vm_map.h): a task's map entries, as data.

A ``VMMap`` holds ``VMMapEntry``s [vme_start, vme_end), page aligned, sorted, never
overlapping, on a doubly linked list with a header (``vm_map_to_entry``), plus a lookup
``hint``.  Two lookup structures can be chosen at creation, so their cost can be measured:

  lookup="list"   Mach before 2012: vm_map_lookup_entry starts at the hint and scans the
                  list linearly (forward from the hint, or from the head when the address
                  lies below it); vm_map_find_space scans from ``first_free``.
  lookup="tree"   GNU Mach since 2012: the list plus a red-black tree keyed by vme_start
                  (hint kept as the fast path).  The tree is augmented with each entry's
                  gap to its successor and the largest gap in each subtree, so a first-fit
                  search for free space is O(log n) too (GNU Mach keeps a separate gap tree,
                  2013, for the same purpose).

and two merge modes:

  merge="classic"   vm_map_enter only extends the previous entry when anonymous memory
                    (no object) is entered right at its end with identical attributes.
  merge="coalesce"  GNU Mach since 2023: vm_map_coalesce_entry after enter, protect and
                    inherit merges each touched entry with its neighbours.

Objects are opaque to the map: anything with ``ref_count``, ``pager`` (None: anonymous),
``shadow``, ``paging_in_progress``, ``internal`` and ``size``.  Each entry owns one
reference to its object (None: zero-fill memory not yet given an object).  The map never
touches pages; it calls back into the object layer:

  reference(obj)      vm_object_reference: a clip gave a second entry the same object
  deallocate(obj)     vm_object_deallocate: an entry went away (delete, or a merge of two
                      entries over one object)
  unmap(entry)        optional, for vm_map_delete: called for each removed entry while it
                      still holds its reference, before deallocate (where Mach does
                      pmap_remove / vm_object_page_remove)
  coalesce(obj_a, size_a, obj_b, size_b[, offset_a=, offset_b=])
                      vm_object_coalesce for two distinct objects (one may be None) that
                      are both anonymous with one reference, no pager, no shadow and no
                      paging in progress.  Returns None (no merge), the merged object, or
                      (object, offset).  The offsets are passed as keywords only if the
                      callable accepts them.  See ``VMMap._object_coalesce``.

Callbacks get None never: references to "no object" are not counted, as in Mach.
"""

from __future__ import annotations

import inspect

from protocol.defs.mach import (
    VM_INHERIT_COPY,
    VM_INHERIT_DEFAULT,
    VM_INHERIT_NONE,
    VM_INHERIT_SHARE,
    VM_PROT_ALL,
    VM_PROT_DEFAULT,
)
from protocol.kern_return import KernReturn, MachError
from protocol.vm_param import PAGE_MASK, VM_MAX_ADDRESS, VM_MIN_ADDRESS

LOOKUP_LIST = "list"
LOOKUP_TREE = "tree"
MERGE_CLASSIC = "classic"
MERGE_COALESCE = "coalesce"

_INHERITANCES = (VM_INHERIT_SHARE, VM_INHERIT_COPY, VM_INHERIT_NONE)
_WORD_MASK = (1 << 64) - 1


def _fail(code: KernReturn, what: str):
    raise MachError(code, what)


class VMMapEntry:
    """struct vm_map_entry (vm/vm_map.h).

    ``vme_prev``/``vme_next`` are the list links (the map's header ends the ring);
    ``rb_*`` are the tree node, ``gap_size`` the free space up to the next entry (or to
    max_offset) and ``max_gap`` the largest gap in the subtree (tree maps only).
    """

    __slots__ = ("vme_prev", "vme_next", "vme_start", "vme_end", "object", "offset",
                 "protection", "max_protection", "inheritance", "wired_count", "is_shared",
                 "needs_copy", "in_transition", "needs_wakeup", "is_sub_map",
                 "rb_left", "rb_right", "rb_parent", "rb_red", "gap_size", "max_gap")

    def __init__(self, start: int, end: int, obj=None, offset: int = 0,
                 protection: int = VM_PROT_DEFAULT, max_protection: int = VM_PROT_ALL,
                 inheritance: int = VM_INHERIT_DEFAULT, needs_copy: bool = False):
        self.vme_prev = self.vme_next = None
        self.vme_start, self.vme_end = start, end
        self.object, self.offset = obj, offset
        self.protection, self.max_protection = protection, max_protection
        self.inheritance = inheritance
        self.wired_count = 0
        self.is_shared = False
        self.needs_copy = needs_copy
        self.in_transition = False
        self.needs_wakeup = False
        self.is_sub_map = False
        self.rb_left = self.rb_right = self.rb_parent = None
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


def _default_reference(obj) -> None:
    obj.ref_count += 1


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


class VMMap:
    """struct vm_map (vm/vm_map.h) and the vm_map.c routines that work on it.

    Attributes keep Mach's names: ``min_offset``, ``max_offset``, ``nentries``, ``size``
    (bytes mapped), ``hint`` (last entry found; None for the header), ``first_free``.
    Operations raise ``MachError`` with Mach's codes.  Addresses and sizes given to the
    map must be page aligned: rounding (trunc_page/round_page) is the caller's job, as in
    vm_user.c.
    """

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
        self._reference = reference or _default_reference
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
            nil.rb_left = nil.rb_right = nil.rb_parent = nil
            nil.rb_red = False
            nil.gap_size = nil.max_gap = -1
            self._root = nil
            self._lookup = self._lookup_tree
        else:
            self._nil = None
            self._root = None
            self._lookup = self._lookup_list

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

    @property
    def hint(self) -> VMMapEntry | None:
        return None if self._hint is self._header else self._hint

    @property
    def first_free(self) -> VMMapEntry | None:
        return None if self._first_free is self._header else self._first_free

    def first_entry(self) -> VMMapEntry | None:
        """vm_map_first_entry, or None when the map is empty."""
        e = self._header.vme_next
        return None if e is self._header else e

    def next_entry(self, entry: VMMapEntry) -> VMMapEntry | None:
        """entry->vme_next, or None at the end of the map."""
        e = entry.vme_next
        return None if e is self._header else e

    # ------------------------------------------------------------------ lookup

    def vm_map_lookup_entry(self, address: int) -> tuple[bool, VMMapEntry | None]:
        """vm_map_lookup_entry: (True, the entry containing ``address``) or (False, the
        entry immediately preceding it, None if there is none).  Saves the hint."""
        found, e = self._lookup(address)
        return found, (None if e is self._header else e)

    def _lookup_list(self, address):
        """Classic vm_map_lookup_entry: linear scan from the hint (or from the head when
        the address is below the hint).  Returns the header for 'no predecessor'."""
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
        """GNU Mach's vm_map_lookup_entry since 2012: the hint, then the red-black tree
        (rbtree_lookup_nearest to the left)."""
        header = self._header
        hint = self._hint
        if hint is not header and address >= hint.vme_start:
            if address < hint.vme_end:
                return True, hint
            nxt = hint.vme_next
            if nxt is header or address < nxt.vme_start:
                return False, hint
        nil = self._nil
        node = self._root
        best = header
        while node is not nil:
            if address < node.vme_start:
                node = node.rb_left
            elif address < node.vme_end:
                self._hint = node
                return True, node
            else:
                best = node
                node = node.rb_right
        self._hint = best
        return False, best

    def vm_region(self, address: int) -> VMMapEntry:
        """vm_region: the entry containing ``address``, else the first one after it;
        KERN_NO_SPACE when there is none."""
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
            node = self._root
            stack = []
            while True:
                while node is not nil and node.max_gap >= size:
                    stack.append(node)
                    node = node.rb_left
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
                node = node.rb_right
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
        (None: anywhere, first fit).  Returns the address.

        The map takes over the caller's reference to ``obj`` on success (not on failure).
        Errors: KERN_INVALID_ARGUMENT (size 0 or unaligned, bad protection or
        inheritance), KERN_INVALID_ADDRESS (outside [min_offset, max_offset)),
        KERN_NO_SPACE (overlap, address against the mask, no room anywhere).
        """
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
        if new.object is not None:
            self._reference(new.object)
        return entry

    # ------------------------------------------------------------------ delete

    def vm_map_delete(self, start: int, end: int) -> list[VMMapEntry]:
        """vm_map_delete (vm_map_remove): clip and remove the entries in [start, end),
        clamped to the map's bounds.  Holes are fine.  For each removed entry, in address
        order, ``unmap(entry)`` (if given) then ``deallocate(entry.object)``.  Returns the
        removed entries (their object and offset intact, links cleared).

        Entries in transition are removed too: there is no one to wait for here.
        """
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
        are skipped), or with ``set_max`` the maximum protection, which also clamps the
        current one (protection = new max & old protection).  Asking for bits outside an
        entry's max_protection fails with KERN_PROTECTION_FAILURE and changes nothing.
        Partial entries are clipped (up to three entries from one); under coalescing the
        touched entries are then merged with their neighbours."""
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
        cur = first
        while cur is not header and cur.vme_start < end:
            self.vm_map_clip_end(cur, end)
            if set_max:
                cur.max_protection = new_prot
                cur.protection &= new_prot
            else:
                cur.protection = new_prot
            nxt = cur.vme_next
            if self._coalescing:
                self.vm_map_coalesce_entry(cur)
            cur = nxt
        if self._coalescing:
            self.vm_map_coalesce_entry(cur)

    def vm_map_inherit(self, start: int, end: int, inheritance: int):
        """vm_map_inherit: set the inheritance of [start, end) (clamped; holes skipped),
        clipping partial entries; coalesces touched entries under coalescing."""
        if inheritance not in _INHERITANCES:
            _fail(KernReturn.KERN_INVALID_ARGUMENT, "vm_map_inherit: inheritance")
        start, end = self._range(start, end, "vm_map_inherit")
        if start >= end:
            return
        header = self._header
        found, cur = self._lookup(start)
        if found:
            self.vm_map_clip_start(cur, start)
        else:
            cur = cur.vme_next
        while cur is not header and cur.vme_start < end:
            self.vm_map_clip_end(cur, end)
            cur.inheritance = inheritance
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
                or prev.is_shared or entry.is_shared
                or prev.is_sub_map or entry.is_sub_map
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
        return True

    def _object_coalesce(self, a, off_a, size_a, b, off_b, size_b):
        """vm_object_coalesce for the entries' objects: (ok, object, offset) for the
        merged range [a then b].

        - both None: merge (still no object);
        - the same object with contiguous offsets: merge and drop one of the two
          references (deallocate);
        - distinct objects (one may be None): every object involved must be anonymous
          with one reference, no pager, no shadow and no paging in progress; then the
          ``coalesce`` callback decides (a bare object result sits at offset_a if it is
          ``a``, at offset_b - size_a if it is ``b``, else at 0; a tuple gives the
          offset).  The map drops the references of the inputs that are not the result.
          Without a callback, Mach's own cases only: None after an object extends that
          object (its size grows), None before an object extends it backwards when
          offset_b >= size_a; two objects never merge.  (Mach also purges stale pages
          in the range taken over; a callback should do that.)
        """
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
            self._rb_delete(e)
            if prev is not header:
                self._gap_update(prev)
        if self._hint is e:
            self._hint = prev
        ff = self._first_free
        if ff is e or (hole and e.vme_start < (self.min_offset if ff is header
                                               else ff.vme_end)):
            self._first_free = prev
        e.vme_prev = e.vme_next = None

    # --- red-black tree (keyed by vme_start), augmented with max_gap

    def _gap_update(self, e):
        """Recompute e's gap to its successor and the max_gap of its ancestors
        (vm_map_gap_update)."""
        nxt = e.vme_next
        e.gap_size = (self.max_offset if nxt is self._header else nxt.vme_start) - e.vme_end
        nil = self._nil
        node = e
        while node is not nil:
            m = node.gap_size
            x = node.rb_left.max_gap
            if x > m:
                m = x
            x = node.rb_right.max_gap
            if x > m:
                m = x
            if m == node.max_gap and node is not e:
                break
            node.max_gap = m
            node = node.rb_parent

    def _rb_rotate_left(self, x):
        nil = self._nil
        y = x.rb_right
        x.rb_right = y.rb_left
        if y.rb_left is not nil:
            y.rb_left.rb_parent = x
        p = x.rb_parent
        y.rb_parent = p
        if p is nil:
            self._root = y
        elif x is p.rb_left:
            p.rb_left = y
        else:
            p.rb_right = y
        y.rb_left = x
        x.rb_parent = y
        y.max_gap = x.max_gap
        x.max_gap = max(x.gap_size, x.rb_left.max_gap, x.rb_right.max_gap)

    def _rb_rotate_right(self, x):
        nil = self._nil
        y = x.rb_left
        x.rb_left = y.rb_right
        if y.rb_right is not nil:
            y.rb_right.rb_parent = x
        p = x.rb_parent
        y.rb_parent = p
        if p is nil:
            self._root = y
        elif x is p.rb_right:
            p.rb_right = y
        else:
            p.rb_left = y
        y.rb_right = x
        x.rb_parent = y
        y.max_gap = x.max_gap
        x.max_gap = max(x.gap_size, x.rb_left.max_gap, x.rb_right.max_gap)

    def _rb_insert(self, z):
        nil = self._nil
        z.rb_left = z.rb_right = nil
        z.rb_red = True
        z.max_gap = z.gap_size
        key = z.vme_start
        y = nil
        x = self._root
        while x is not nil:
            y = x
            x = x.rb_left if key < x.vme_start else x.rb_right
        z.rb_parent = y
        if y is nil:
            self._root = z
        elif key < y.vme_start:
            y.rb_left = z
        else:
            y.rb_right = z
        g = z.gap_size
        p = y
        while p is not nil and p.max_gap < g:
            p.max_gap = g
            p = p.rb_parent
        while z.rb_parent.rb_red:
            p = z.rb_parent
            gp = p.rb_parent
            if p is gp.rb_left:
                u = gp.rb_right
                if u.rb_red:
                    p.rb_red = u.rb_red = False
                    gp.rb_red = True
                    z = gp
                else:
                    if z is p.rb_right:
                        z = p
                        self._rb_rotate_left(z)
                        p = z.rb_parent
                    p.rb_red = False
                    gp.rb_red = True
                    self._rb_rotate_right(gp)
            else:
                u = gp.rb_left
                if u.rb_red:
                    p.rb_red = u.rb_red = False
                    gp.rb_red = True
                    z = gp
                else:
                    if z is p.rb_left:
                        z = p
                        self._rb_rotate_right(z)
                        p = z.rb_parent
                    p.rb_red = False
                    gp.rb_red = True
                    self._rb_rotate_left(gp)
        self._root.rb_red = False

    def _rb_transplant(self, u, v):
        p = u.rb_parent
        if p is self._nil:
            self._root = v
        elif u is p.rb_left:
            p.rb_left = v
        else:
            p.rb_right = v
        v.rb_parent = p

    def _rb_delete(self, z):
        nil = self._nil
        y = z
        y_red = y.rb_red
        if z.rb_left is nil:
            x = z.rb_right
            self._rb_transplant(z, x)
        elif z.rb_right is nil:
            x = z.rb_left
            self._rb_transplant(z, x)
        else:
            y = z.rb_right
            while y.rb_left is not nil:
                y = y.rb_left
            y_red = y.rb_red
            x = y.rb_right
            if y.rb_parent is z:
                x.rb_parent = y
            else:
                self._rb_transplant(y, x)
                y.rb_right = z.rb_right
                y.rb_right.rb_parent = y
            self._rb_transplant(z, y)
            y.rb_left = z.rb_left
            y.rb_left.rb_parent = y
            y.rb_red = z.rb_red
        # Every subtree that changed lies on the path from x's parent to the root.
        p = x.rb_parent
        while p is not nil:
            p.max_gap = max(p.gap_size, p.rb_left.max_gap, p.rb_right.max_gap)
            p = p.rb_parent
        if not y_red:
            self._rb_delete_fixup(x)
        nil.rb_parent = nil
        z.rb_left = z.rb_right = z.rb_parent = None

    def _rb_delete_fixup(self, x):
        while x is not self._root and not x.rb_red:
            p = x.rb_parent
            if x is p.rb_left:
                w = p.rb_right
                if w.rb_red:
                    w.rb_red = False
                    p.rb_red = True
                    self._rb_rotate_left(p)
                    w = p.rb_right
                if not w.rb_left.rb_red and not w.rb_right.rb_red:
                    w.rb_red = True
                    x = p
                else:
                    if not w.rb_right.rb_red:
                        w.rb_left.rb_red = False
                        w.rb_red = True
                        self._rb_rotate_right(w)
                        w = p.rb_right
                    w.rb_red = p.rb_red
                    p.rb_red = False
                    w.rb_right.rb_red = False
                    self._rb_rotate_left(p)
                    x = self._root
            else:
                w = p.rb_left
                if w.rb_red:
                    w.rb_red = False
                    p.rb_red = True
                    self._rb_rotate_right(p)
                    w = p.rb_left
                if not w.rb_left.rb_red and not w.rb_right.rb_red:
                    w.rb_red = True
                    x = p
                else:
                    if not w.rb_left.rb_red:
                        w.rb_right.rb_red = False
                        w.rb_red = True
                        self._rb_rotate_left(w)
                        w = p.rb_left
                    w.rb_red = p.rb_red
                    p.rb_red = False
                    w.rb_left.rb_red = False
                    self._rb_rotate_right(p)
                    x = self._root
        x.rb_red = False

    # ------------------------------------------------------------------ checking

    def tree_height(self) -> int:
        """Height of the lookup tree (0 when empty or for a list map)."""
        if not self._tree:
            return 0
        nil = self._nil
        best = 0
        stack = [(self._root, 1)] if self._root is not nil else []
        while stack:
            node, d = stack.pop()
            if d > best:
                best = d
            if node.rb_left is not nil:
                stack.append((node.rb_left, d + 1))
            if node.rb_right is not nil:
                stack.append((node.rb_right, d + 1))
        return best

    def check_consistency(self) -> None:
        """Verify every invariant (list order, counts, size, hint, first_free; for tree
        maps the binary-search, red-black and gap properties).  Raises AssertionError.
        O(n): for tests and debugging."""
        def need(cond, what):
            if not cond:
                raise AssertionError(what)

        header = self._header
        n = 0
        total = 0
        prev = header
        e = header.vme_next
        live = set()
        while e is not header:
            need(e.vme_prev is prev, f"broken back link at {e!r}")
            need(e.vme_start < e.vme_end, f"empty entry {e!r}")
            need(not (e.vme_start | e.vme_end) & PAGE_MASK, f"unaligned {e!r}")
            need(self.min_offset <= e.vme_start and e.vme_end <= self.max_offset,
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
        need(n == self.nentries, f"nentries {self.nentries} != {n}")
        need(total == self.size, f"size {self.size} != {total}")
        need(self._hint is header or id(self._hint) in live, "stale hint")
        ff = self._first_free
        need(ff is header or id(ff) in live, "stale first_free")
        if ff is not header:
            # No hole between min_offset and first_free's end.
            expect = self.min_offset
            e = header.vme_next
            while True:
                need(e.vme_start == expect, "hole before first_free")
                expect = e.vme_end
                if e is ff:
                    break
                e = e.vme_next
        if not self._tree:
            return
        nil = self._nil
        need(not nil.rb_red and nil.max_gap == -1, "nil sentinel damaged")
        root = self._root
        need(root is nil or (root.rb_parent is nil and not root.rb_red), "root")
        inorder = []
        # Iterative post-order: black height and max_gap per node.
        info = {}
        stack = [(root, False)] if root is not nil else []
        while stack:
            node, done = stack.pop()
            if not done:
                stack.append((node, True))
                for child in (node.rb_right, node.rb_left):
                    if child is not nil:
                        need(child.rb_parent is node, f"parent link of {child!r}")
                        stack.append((child, False))
                continue
            bl = info[id(node.rb_left)][0] if node.rb_left is not nil else 1
            br = info[id(node.rb_right)][0] if node.rb_right is not nil else 1
            need(bl == br, f"black height differs under {node!r}")
            if node.rb_red:
                need(not node.rb_left.rb_red and not node.rb_right.rb_red,
                     f"red node with red child {node!r}")
            nxt = node.vme_next
            gap = (self.max_offset if nxt is header else nxt.vme_start) - node.vme_end
            need(node.gap_size == gap, f"gap_size of {node!r}")
            mg = max(node.gap_size, node.rb_left.max_gap, node.rb_right.max_gap)
            need(node.max_gap == mg, f"max_gap of {node!r}")
            info[id(node)] = (bl + (0 if node.rb_red else 1),)
        # In-order walk equals the list.
        stack = []
        node = root
        while stack or node is not nil:
            while node is not nil:
                stack.append(node)
                node = node.rb_left
            node = stack.pop()
            inorder.append(node)
            node = node.rb_right
        need(inorder == self.entries(), "tree order differs from the list")
