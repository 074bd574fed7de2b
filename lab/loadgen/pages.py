"""Pages a workload writes and verifies: a pattern distinct per run, task, page and
write, what a wrong page is instead, and the per-task counters of the checks."""

from __future__ import annotations

import hashlib
import struct
import threading

from lab.loadgen.workload import VerifyError
from protocol.vm_param import PAGE_SIZE as PAGE

MIB = 1 << 20
MAGIC = 0x474C584D  # "MXLG"
_HDR = struct.Struct("<IIQQQ")  # magic, task, run nonce, page, counter: 32 bytes
MISMATCH_KINDS = ("zero", "stale", "misplaced", "corrupt", "garbage", "short")


def pages_of(mib: float) -> int:
    """How many pages ``mib`` MiB take (rounded up, at least one)."""
    return max(1, -(-int(mib * MIB) // PAGE))


def page_pattern(nonce: int, task: int, page: int, counter: int) -> bytes:
    """The 4096 bytes that page ``page`` of task ``task`` holds after write number
    ``counter``: a 32-byte header, then its BLAKE2b digest repeated (distinct per page,
    per task, per pass and per run; a stale, misplaced or torn page cannot match)."""
    hdr = _HDR.pack(MAGIC, task, nonce, page, counter)
    d = hashlib.blake2b(hdr, digest_size=64).digest()
    return hdr + d * 63 + d[:32]


def classify(got: bytes, nonce: int, task: int, page: int, counter: int) -> str:
    """What came back instead of the expected page: "short", "zero", "garbage" (not a
    pattern of this run), "misplaced" (another page's), "stale" (an earlier write's) or
    "corrupt"."""
    if len(got) < PAGE:
        return "short"
    if not any(got):
        return "zero"
    magic, t, n, pg, c = _HDR.unpack_from(got)
    if magic != MAGIC or n != nonce:
        return "garbage"
    if (t, pg) != (task, page):
        return "misplaced"
    if c < counter and got == page_pattern(nonce, task, page, c):
        return "stale"
    return "corrupt"


class TaskState:
    """One task's counters, shared by its threads (and whatever else ``kw`` gives it)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)
        self.lock = threading.Lock()
        self.counters: dict[str, float] = {}
        self.progress = 0  # pages written + verified

    def add(self, **kw):
        """Add to counters by name."""
        with self.lock:
            for k, v in kw.items():
                self.counters[k] = self.counters.get(k, 0) + v


def check_pages(state, chunk_data: bytes, first_page: int, npages: int, counter: int,
                page_key, what: str, counter_key: str) -> int:
    """Compare ``npages`` pages read back with their patterns; count and raise
    VerifyError on any difference, else return the number of pages verified."""
    bad = []
    for i in range(npages):
        page = first_page + i
        task, pg = page_key(page)
        want = page_pattern(state.nonce, task, pg, counter)
        got = chunk_data[i * PAGE:(i + 1) * PAGE]
        if got != want:
            bad.append((page, classify(got, state.nonce, task, pg, counter)))
    good = npages - len(bad)
    kinds: dict[str, int] = {}
    for _, kind in bad:
        kinds[f"mismatch_{kind}"] = kinds.get(f"mismatch_{kind}", 0) + 1
    state.add(**{counter_key: good}, **kinds)
    state.progress += npages
    if bad:
        raise VerifyError(f"{what}: {len(bad)} of {npages} pages differ from page "
                          f"{first_page} (first: page {bad[0][0]} {bad[0][1]})",
                          count=len(bad))
    return good
