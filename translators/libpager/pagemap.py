"""The pagemap: one word of flags per page of a pager (Hurd libpager/priv.h, pagemap.c).

Flags are the Hurd's.  Two 2-bit error fields share the low bits: PM_ERROR, the error
of the page's last write (reported by pager_get_error and by data_request on an invalid
page), and PM_NEXTERROR, an error to give the next write-access data_request (set when
data_unlock could not allocate the page's backing store).

The map is sparse (a dict of non-zero entries), so an object's size never allocates
memory: only pages the kernel has touched cost an entry.

A translator may also give its pagemaps storage in its own task, as the Hurd's libpager
had (``set_pagemap_storage``; ext2fs --pagemap): the flags stay in the dict, and the
storage makes the kernel calls the Hurd's pagemap made, with a short (2 bytes) per page:

- ``MappedPagemap`` (pagemap.c until 2021): _pager_pagemap_resize mmaps a new region
  of round_page(entries) entries — 4,096 at least, 8 KiB — copies the old one over and
  munmaps it; the region is unmapped when the kernel terminates the object
  (_pager_free_structure).  The first store in each of its pages writes it.
- ``HeapPagemap`` (since ec5632b9, Sergey Bugaev, 2021: "libpager: Use libc heap for
  pagemap"): reallocarray on the malloc heap, exactly the entries needed.
"""

from __future__ import annotations

from protocol.defs.fs import EDQUOT, EIO, ENOSPC
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE, round_page

PM_UNLOCKED = 0x0400   # machemu: write-unlocked since last written (writeback.py)
PM_WRITEWAIT = 0x0200  # wake the waiters once the write is done
PM_INIT = 0x0100       # data has been written (the backing store holds it)
PM_INCORE = 0x0080     # the kernel might have a copy
PM_PAGINGOUT = 0x0040  # being written to the backing store
PM_PAGEINWAIT = 0x0020  # supply the data back when the write is done
PM_INVALID = 0x0010    # the backing store's contents are irrevocably wrong

# Page error codes (2 bits) and the error_t each stands for (_pager_page_errors).
PAGE_NOERR = 0
PAGE_ENOSPC = 1
PAGE_EIO = 2
PAGE_EDQUOT = 3
_pager_page_errors = (0, ENOSPC, EIO, EDQUOT)

FLAG_NAMES = ((PM_UNLOCKED, "unlocked"), (PM_WRITEWAIT, "writewait"), (PM_INIT, "init"), (PM_INCORE, "incore"),
              (PM_PAGINGOUT, "pagingout"), (PM_PAGEINWAIT, "pageinwait"),
              (PM_INVALID, "invalid"))


def PM_ERROR(entry: int) -> int:
    return (entry & 0xC) >> 2


def SET_PM_ERROR(entry: int, err: int) -> int:
    return (entry & ~0xC) | (err << 2)


def PM_NEXTERROR(entry: int) -> int:
    return entry & 0x3


def SET_PM_NEXTERROR(entry: int, err: int) -> int:
    return (entry & ~0x3) | err


def page_error(code: int) -> int:
    """The 2-bit page error for an error_t (anything unknown is EIO, as in the Hurd)."""
    if not code:
        return PAGE_NOERR
    if code == ENOSPC:
        return PAGE_ENOSPC
    if code == EDQUOT:
        return PAGE_EDQUOT
    return PAGE_EIO


def page_error_code(perr: int) -> int:
    """The error_t a 2-bit page error stands for."""
    return _pager_page_errors[perr]


def flag_names(entry: int) -> list[str]:
    names = [n for bit, n in FLAG_NAMES if entry & bit]
    if PM_ERROR(entry):
        names.append(f"error={PM_ERROR(entry)}")
    if PM_NEXTERROR(entry):
        names.append(f"nexterror={PM_NEXTERROR(entry)}")
    return names


PM_ENTRY_SIZE = 2  # sizeof (short): the Hurd's pagemap entry


class MappedPagemap:
    """A pagemap's region in the task, mmapped and remapped as it grows (pagemap.c
    before 2021).  ``vm`` makes the task's kernel calls (translators.hurdmem.TaskVM:
    allocate, copy, write, deallocate; MachError on failure)."""

    def __init__(self, vm):
        self.vm = vm
        self.address = self.capacity = 0
        self.touched: set[int] = set()  # pages of the region written
        self.remaps = self.failures = 0

    def store(self, page: int, value: int):
        """A store of ``value`` in entry ``page``: resize first if the map is too
        small for it; the first store in each page of the region is written there."""
        if page >= self.capacity and not self._resize(page + 1):
            return
        at = self.address + page * PM_ENTRY_SIZE
        p = at // PAGE_SIZE
        if p not in self.touched:
            try:
                self.vm.write(at, (value & 0xFFFF).to_bytes(PM_ENTRY_SIZE, "little"))
            except MachError:  # the flags are kept; the page is not written
                self.failures += 1
                return
            self.touched.add(p)

    def _resize(self, entries: int) -> bool:
        """_pager_pagemap_resize: newsize = round_page (off) entries, mmap, memcpy,
        munmap the old region."""
        newsize = round_page(entries)
        try:
            addr = self.vm.allocate(newsize * PM_ENTRY_SIZE)
        except MachError:  # no room: the pager works on without it
            self.failures += 1
            return False
        if self.capacity:
            try:
                self.vm.copy(self.address, self.capacity * PM_ENTRY_SIZE, addr)
                self.vm.deallocate(self.address, self.capacity * PM_ENTRY_SIZE)
            except MachError:
                self.failures += 1
            self.remaps += 1
        old = self.capacity * PM_ENTRY_SIZE // PAGE_SIZE
        self.touched = {addr // PAGE_SIZE + i for i in range(old)}  # memcpy wrote them
        self.address, self.capacity = addr, newsize
        return True

    def release(self):
        """_pager_free_structure: munmap the region."""
        if self.capacity:
            try:
                self.vm.deallocate(self.address, self.capacity * PM_ENTRY_SIZE)
            except MachError:  # the task may be going away
                self.failures += 1
        self.address = self.capacity = 0
        self.touched = set()


class HeapPagemap:
    """A pagemap on the malloc heap (since ec5632b9): reallocarray of exactly the
    entries needed.  ``malloc`` has malloc / free (translators.hurdmem.Malloc), which
    touch the pages they hand out."""

    def __init__(self, malloc):
        self.malloc = malloc
        self.address = self.capacity = 0
        self.remaps = self.failures = 0

    def store(self, page: int, value: int):
        """A store in entry ``page``: reallocarray first if the map is too small."""
        if page < self.capacity:
            return
        # realloc moves the block: a new chunk, the old one freed (memcpy in between).
        addr = self.malloc.malloc((page + 1) * PM_ENTRY_SIZE)
        if not addr:
            self.failures += 1
            return
        if self.capacity:
            self.malloc.free(self.address)
            self.remaps += 1
        self.address, self.capacity = addr, page + 1

    def release(self):
        if self.capacity:
            self.malloc.free(self.address)
        self.address = self.capacity = 0


_storage_factory = None


def set_pagemap_storage(factory):
    """Every PageMap made from now on gets ``factory()`` as its storage (None: none,
    the default).  A translator process sets it once, at startup."""
    global _storage_factory
    _storage_factory = factory


class PageMap:
    """Flags per page index (offset // page size); absent pages read as 0.  Callers hold
    the pager's lock.  ``storage`` (set_pagemap_storage), if any, is told of every
    store and of the reset."""

    __slots__ = ("entries", "storage")

    def __init__(self):
        self.entries: dict[int, int] = {}
        self.storage = _storage_factory() if _storage_factory is not None else None

    def __getitem__(self, page: int) -> int:
        return self.entries.get(page, 0)

    def __setitem__(self, page: int, value: int):
        if value:
            if self.storage is not None:
                self.storage.store(page, value)
            self.entries[page] = value
        else:
            self.entries.pop(page, None)

    def set(self, page: int, bits: int):
        self[page] = self[page] | bits

    def clear(self, page: int, bits: int):
        self[page] = self[page] & ~bits

    def indices(self, first: int, npages: int, bits: int) -> list[int]:
        """The pages of [first, first + npages) with any of ``bits``: the range or the
        entries are walked, whichever is smaller (a range may span terabytes)."""
        entries = self.entries
        if npages <= len(entries):
            return [i for i in range(first, first + npages) if entries.get(i, 0) & bits]
        return sorted(i for i, v in entries.items() if first <= i < first + npages and v & bits)

    def any(self, first: int, npages: int, bits: int) -> bool:
        return bool(self.indices(first, npages, bits))

    def count(self, bits: int) -> int:
        return sum(1 for v in self.entries.values() if v & bits)

    def reset(self):
        """_pager_free_structure: the kernel forgot the object; so do we."""
        self.entries.clear()
        if self.storage is not None:
            self.storage.release()

    def __len__(self):
        return len(self.entries)

    def __repr__(self):
        return f"<pagemap {len(self.entries)} entries>"
