"""The pagemap: one word of flags per page of a pager (Hurd libpager/priv.h, pagemap.c).

Flags are the Hurd's.  Two 2-bit error fields share the low bits: PM_ERROR, the error
of the page's last write (reported by pager_get_error and by data_request on an invalid
page), and PM_NEXTERROR, an error to give the next write-access data_request (set when
data_unlock could not allocate the page's backing store).

The map is sparse (a dict of non-zero entries), so an object's size never allocates
memory: only pages the kernel has touched cost an entry.
"""

from __future__ import annotations

from protocol.defs.fs import EDQUOT, EIO, ENOSPC

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


class PageMap:
    """Flags per page index (offset // page size); absent pages read as 0.  Callers hold
    the pager's lock."""

    __slots__ = ("entries",)

    def __init__(self):
        self.entries: dict[int, int] = {}

    def __getitem__(self, page: int) -> int:
        return self.entries.get(page, 0)

    def __setitem__(self, page: int, value: int):
        if value:
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

    def __len__(self):
        return len(self.entries)

    def __repr__(self):
        return f"<pagemap {len(self.entries)} entries>"
