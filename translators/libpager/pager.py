"""struct pager and its life (Hurd libpager: priv.h, pager.h, pager-create.c,
pager-port.c, clean.c, dropweak.c, get-upi.c, get-error.c) and the callback interface a
file system implements (``PagerOps``).

A pager is a libports port: its receive right is in the file system's bucket, its
PortInfo's ``data`` is the Pager, so the kernel's memory_object_* messages to it are
served by the bucket's thread model through ``PagerDemuxer``.

Locking: ``Pager.lock`` (the Hurd's ``interlock``) guards the pagemap and the state;
``Pager.wakeup`` is its condition variable.  The lock is never held while calling the
file system's callbacks or the kernel (see lock_object.py for why).
"""

from __future__ import annotations

import threading

import structlog

from protocol import message as M
from protocol.defs import mach as V
from protocol.defs.fs import EIO, from_os_error
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE
from translators import libports as LP
from translators.libpager.pagemap import PM_ERROR, PageMap, page_error_code
from translators.libpager.stubs import KernelCalls

log = structlog.get_logger("libpager")


# enum pager_state
NOTINIT = "NOTINIT"    # no memory_object_init yet (or terminated since)
NORMAL = "NORMAL"      # serving the kernel
SHUTDOWN = "SHUTDOWN"  # pager_shutdown ran: nothing more is served

SEQNO_PATIENCE = 30.0  # seconds a handler waits for its turn before logging a gap
# Seconds a synchronous request (lock_request, change_attributes) waits for the kernel's
# answer when its caller gives no timeout: the requests are simpleroutines, so a kernel
# that refused or lost one never says so, and an unbounded wait would wedge the caller.
KERNEL_REPLY_DEADLINE = 60.0

STAT_KEYS = ("data_requests", "data_returns", "pages_returned", "clean_returns",
             "pages_written", "write_calls", "write_errors", "write_waits",
             "data_supplies", "pages_unavailable", "read_errors", "data_errors",
             "pagein_waits", "unlocks", "unlock_errors", "evictions", "lock_requests",
             "lock_completed", "supply_completed", "change_completed", "inits",
             "terminates", "dropped", "handler_errors", "reply_timeouts", "seqno_gaps",
             "writeback_hints", "writeback_hints_merged", "writebacks", "writeback_windows",
             "writeback_timeouts", "ool_deallocated", "ool_dealloc_errors")


class PagerOps:
    """The callbacks a file system implements (the Hurd's pager_read_page & co.).

    Subclass and override, or pass any object with these methods.  ``pager`` is the
    Pager; ``pager.upi`` is whatever the file system passed to pager_create (its node).
    Offsets and lengths are page aligned.  A callback reports an error by raising:
    MachError(code) (code is an error_t, e.g. protocol.defs.fs.ENOSPC), OSError(errno)
    (mapped to the Hurd's errno), anything else counts as EIO.

    read_page(pager, offset, length) -> (data, write_lock) | None   [required]
        The page's contents (bytes-like, ``length`` bytes; shorter is zero-padded) and
        whether the kernel must write-lock it (a hole: the first write then comes back
        as unlock_page).  None: no data at all — the kernel zero-fills
        (memory_object_data_unavailable).
    write_page(pager, offset, data)                                  [required unless
        Store one page (``data`` is bytes of one page).           write_pages exists]
    write_pages(pager, offset, data)                                 [optional]
        Store a contiguous run of whole pages in one call (a multi-page write).  When
        the ops have it, every dirty data_return is one write_pages call.  An exception
        marks every page of the run in error.
    unlock_page(pager, offset, length)                               [optional]
        The kernel wants to write a write-locked page: allocate its backing store.  An
        exception keeps it locked and fails the next write-access data_request.
    report_extent(pager) -> size in bytes                            [required]
        How much of the object pager_sync & co. cover.
    clear_user_data(pager)                                           [optional]
        The pager is gone (last reference): forget the file system's side.
    notify_evict(pager, offset, length)                              [optional]
        With notify_on_evict: the kernel let these pages go (it has no copy now).
    dropweak(pager)                                                  [optional]
        Drop weak references (ports_dropweak on the pager's port).
    """

    def read_page(self, pager: "Pager", offset: int, length: int):
        raise NotImplementedError

    def write_page(self, pager: "Pager", offset: int, data: bytes):
        raise NotImplementedError

    def unlock_page(self, pager: "Pager", offset: int, length: int):
        return None

    def report_extent(self, pager: "Pager") -> int:
        raise NotImplementedError

    def clear_user_data(self, pager: "Pager"):
        return None

    def notify_evict(self, pager: "Pager", offset: int, length: int):
        return None

    def dropweak(self, pager: "Pager"):
        return None


class LockRequest:
    """struct lock_request: a synchronous lock_request in progress over [start, end)."""

    __slots__ = ("start", "end", "locks_pending", "pending_writes", "threads_waiting",
                 "aborted")

    def __init__(self, start: int, end: int):
        self.start, self.end = start, end
        self.locks_pending = 0
        self.pending_writes = 0
        self.threads_waiting = 0
        self.aborted = False

    def done(self) -> bool:
        return self.aborted or (not self.locks_pending and not self.pending_writes)


class AttributeRequest:
    """struct attribute_request: a synchronous change_attributes in progress."""

    __slots__ = ("may_cache", "copy_strategy", "attrs_pending", "threads_waiting",
                 "aborted")

    def __init__(self, may_cache: bool, copy_strategy: int):
        self.may_cache, self.copy_strategy = may_cache, copy_strategy
        self.attrs_pending = 0
        self.threads_waiting = 0
        self.aborted = False

    def done(self) -> bool:
        return self.aborted or not self.attrs_pending


def _request_release(requests: list, r) -> None:
    """A thread stops waiting for synchronous request ``r`` (a LockRequest or an
    AttributeRequest, p.lock held): the last one takes it off the pager's list."""
    r.threads_waiting -= 1
    if r.threads_waiting <= 0 and r in requests:
        requests.remove(r)


def _request_wait(p: "Pager", requests: list, r, timeout: float | None) -> bool:
    """Wait until request ``r`` is done (False if ``timeout`` seconds passed first;
    None: the pager's ``reply_deadline``), then stop waiting for it; None (an
    asynchronous call) is done at once.  A wait that ran out is logged and counted
    (``reply_timeouts``)."""
    if r is None:
        return True
    limit = p.reply_deadline if timeout is None else timeout
    with p.lock:
        completed = p.wakeup.wait_for(r.done, limit)
        _request_release(requests, r)
    if not completed:
        p.count("reply_timeouts")
        log.error("no answer from the kernel", port=p.port_right, request=type(r).__name__,
                  seconds=limit)
    return completed


class Pager:
    """struct pager.

    Fields keep the Hurd's names: ``memobjcntl`` / ``memobjname`` (the kernel's control
    and name ports, send rights kept from init), ``pager_state``, ``may_cache``,
    ``copy_strategy``, ``notify_on_evict``, ``pagemap``, ``lock_requests``,
    ``attribute_requests``, ``noterm`` / ``termwaiting`` (termination blocked while
    handlers use the pagemap), ``seqno`` (the last message sequence number served: the
    multithread model's handlers take their turns in arrival order, as the Hurd's
    seqnos libpager did).  ``stats`` counts what the pager did.

    ``reply_deadline``: seconds a synchronous request waits for the kernel when its
    caller gives no timeout (KERNEL_REPLY_DEADLINE).

    ``precious``: supply pages precious (the kernel must hand them back rather than
    drop them); defaults to notify_on_evict.  ``write_clean``: write clean precious
    pages handed back too (for pagers that keep no copy of what they supplied).
    """

    def __init__(self, ops, pi, may_cache: bool, copy_strategy: int,
                 notify_on_evict: bool = False, *, precious: bool | None = None,
                 write_clean: bool = False, kernel: KernelCalls | None = None,
                 upi=None, seqno: int = 0):
        self.ops = ops
        self.pi = pi
        self.upi = upi
        self.may_cache = bool(may_cache)
        self.copy_strategy = int(copy_strategy)
        self.notify_on_evict = bool(notify_on_evict)
        self.precious = self.notify_on_evict if precious is None else bool(precious)
        self.write_clean = bool(write_clean)
        rt = pi.bucket.rt if pi is not None else None
        self.kernel = kernel if kernel is not None else KernelCalls(rt)
        self.lock = threading.RLock()  # interlock
        self.wakeup = threading.Condition(self.lock)
        self.pager_state = NOTINIT
        self.memobjcntl = M.MACH_PORT_NULL
        self.control_refs_owed = 0  # extra references to memobjcntl not yet given back
        self.memobjname = M.MACH_PORT_NULL
        self.pagemap = PageMap()
        self.lock_requests: list[LockRequest] = []
        self.attribute_requests: list[AttributeRequest] = []
        self.noterm = 0
        self.termwaiting = False
        self.seqno = seqno
        self.reply_deadline = KERNEL_REPLY_DEADLINE  # see _request_wait
        self.stats = dict.fromkeys(STAT_KEYS, 0)
        self._stats_lock = threading.Lock()
        wp = getattr(ops, "write_pages", None)
        self.multi_page_write = callable(wp)

    def __repr__(self):
        return (f"<pager {self.port_right} {self.pager_state} control {self.memobjcntl} "
                f"{len(self.pagemap)} pages>")

    @property
    def port_right(self) -> int:
        return self.pi.port_right if self.pi is not None else M.MACH_PORT_NULL

    def count(self, key: str, n: int = 1):
        with self._stats_lock:
            self.stats[key] += n

    def interlock_held(self) -> bool:
        """Does the calling thread hold this pager's lock?"""
        return self.lock._is_owned()


# ---------------------------------------------------------------- helpers (priv.h)

_serving = threading.local()  # the message this thread serves (set by PagerDemuxer)


def current_seqno() -> int:
    """The sequence number of the message this thread is serving (0: unknown)."""
    return getattr(_serving, "seqno", 0)


def current_message():
    """The message this thread is serving (None outside PagerDemuxer.serve): a handler
    takes its out-of-line regions over from it (protocol.runtime.take_ool)."""
    return getattr(_serving, "msg", None)


def error_code(exc: BaseException) -> int:
    """The error_t a callback's exception stands for."""
    if isinstance(exc, MachError):
        return int(exc.code) or EIO
    if isinstance(exc, OSError) and exc.errno:
        return from_os_error(exc.errno)
    return EIO


def _pager_wait_for_seqno(p: Pager, seqno: int):
    """Wait (lock held) until every message before ``seqno`` took its turn.  Seqno 0
    (not from the kernel's queue) waits for nobody."""
    if not seqno:
        return
    waited = 0.0
    while p.seqno + 1 < seqno:
        if not p.wakeup.wait(1.0):
            waited += 1.0
            if waited >= SEQNO_PATIENCE:
                # A message that never came through the demuxer (a lost message: a bug,
                # counted and logged as one): do not wedge the object forever.
                p.count("seqno_gaps")
                log.error("seqno gap: going on", port=p.port_right, seqno=seqno,
                          last=p.seqno)
                p.seqno = seqno - 1
                break


def _pager_release_seqno(p: Pager, seqno: int):
    """Our turn is over (lock held): the next message may go."""
    if seqno > p.seqno:
        p.seqno = seqno
        p.wakeup.notify_all()


def _pager_block_termination(p: Pager):
    p.noterm += 1


def _pager_allow_termination(p: Pager):
    p.noterm -= 1
    if not p.noterm and p.termwaiting:
        p.termwaiting = False
        p.wakeup.notify_all()


def _pager_free_structure(p: Pager):
    """The kernel forgot the object (terminate, or the pager's last reference): back to
    NOTINIT, pagemap cleared, synchronous waiters released.  Lock held."""
    p.pager_state = NOTINIT if p.pager_state != SHUTDOWN else SHUTDOWN
    p.memobjcntl = p.memobjname = M.MACH_PORT_NULL
    p.control_refs_owed = 0
    p.pagemap.reset()
    for lr in p.lock_requests:
        lr.aborted = True
    for ar in p.attribute_requests:
        ar.aborted = True
    p.wakeup.notify_all()


# ---------------------------------------------------------------- creation

def release_rights(p: Pager, control: int, name: int, owed: int):
    """Give back the references to the control and name ports the pager holds."""
    for right, n in ((control, 1 + owed), (name, 1)):
        if right:
            try:
                if n == 1:
                    p.kernel.deallocate(right)
                else:
                    p.kernel.mod_refs(right, -n)
            except MachError as e:
                log.debug("control right already gone", name=right, code=e.code)


def _pager_clean(pi):
    """_pager_clean (the port class's clean routine): the last reference is gone."""
    p = pi.data
    if not isinstance(p, Pager):
        return
    with p.lock:
        control, name, owed = p.memobjcntl, p.memobjname, p.control_refs_owed
        p.pager_state = SHUTDOWN
        _pager_free_structure(p)
    release_rights(p, control, name, owed)
    clear = getattr(p.ops, "clear_user_data", None)
    if clear is not None:
        clear(p)


def _pager_dropweak(pi):
    p = pi.data
    if isinstance(p, Pager):
        fn = getattr(p.ops, "dropweak", None)
        if fn is not None:
            fn(p)


pager_class = LP.ports_create_class(clean_routine=_pager_clean,
                                    dropweak_routine=_pager_dropweak, name="pager")


def pager_create(ops, bucket, may_cache: bool,
                 copy_strategy: int = V.MEMORY_OBJECT_COPY_DELAY,
                 notify_on_evict: bool = False, *, precious: bool | None = None,
                 write_clean: bool = False, kernel: KernelCalls | None = None,
                 upi=None, qlimit: int | None = None) -> Pager:
    """pager_create: a new pager on a new port in ``bucket``.  The caller holds one
    reference (drop it with pager_deref); hand the object to the kernel with
    pager_get_port.  The object becomes NORMAL when the kernel's memory_object_init
    arrives."""
    pi = LP.ports_create_port(pager_class, bucket, qlimit=qlimit)
    p = Pager(ops, pi, may_cache, copy_strategy, notify_on_evict, precious=precious,
              write_clean=write_clean, kernel=kernel, upi=upi)
    pi.data = p
    return p


def pager_import(ops, bucket, port: int, may_cache: bool,
                 copy_strategy: int = V.MEMORY_OBJECT_COPY_DELAY,
                 notify_on_evict: bool = False, *, control: int = M.MACH_PORT_NULL,
                 name: int = M.MACH_PORT_NULL, precious: bool | None = None,
                 write_clean: bool = False, kernel: KernelCalls | None = None,
                 upi=None) -> Pager:
    """A pager on a receive right we were given (ports_import_port): the default
    pager's memory_object_create hands over ``port`` with its ``control`` and ``name``
    (kept as memobjcntl / memobjname; no init follows, the object is NORMAL at once).

    The object enters the bucket's table before its port joins the port set, so a
    message the kernel queued already finds it.  A bucket without a task runtime (unit
    tests) only records the object."""
    rt = bucket.rt
    seqno = 0
    if rt is not None:
        from protocol.defs import mach_port as P

        status = P.mach_port_get_receive_status(rt.task_self, port, rt=rt)
        seqno = status[1]  # messages already delivered on it (none, for a new object)
    pi = LP.PortInfo(pager_class, bucket, port)
    p = Pager(ops, pi, may_cache, copy_strategy, notify_on_evict, precious=precious,
              write_clean=write_clean, kernel=kernel, upi=upi, seqno=seqno)
    pi.data = p
    if control:
        p.memobjcntl, p.memobjname = control, name
        p.pager_state = NORMAL
    bucket._enter(pi)
    if rt is not None:
        from protocol.defs import mach_port as P

        try:
            P.mach_port_move_member(rt.task_self, port, bucket.portset, rt=rt)
        except MachError:
            bucket._remove(pi)
            raise
    return p


def pager_get_port(p: Pager) -> int:
    """pager_get_port: a send right to the pager's port in this task's space (one user
    reference for the caller), to hand to vm_map or in an io_map reply (COPY_SEND; the
    caller deallocates its reference when done, or sends it MOVE_SEND)."""
    return LP.ports_get_send_right(p.pi)


def pager_get_right(p: Pager) -> int:
    """The pager's receive right name, for a message field sent MAKE_SEND (the Hurd's
    pager_get_port returns this)."""
    return LP.ports_get_right(p.pi)


def pager_deref(p: Pager):
    """ports_port_deref on the pager: drop the caller's reference."""
    LP.ports_port_deref(p.pi)


def pager_get_upi(p: Pager):
    """pager_get_upi."""
    return p.upi


def pager_get_error(p: Pager, offset: int) -> int:
    """pager_get_error: the error of the page's last write (0 if none)."""
    with p.lock:
        return page_error_code(PM_ERROR(p.pagemap[offset // PAGE_SIZE]))


def pager_dropweak(p: Pager):
    """pager_dropweak."""
    _pager_dropweak(p.pi)


def pager_stats(p: Pager) -> dict:
    """A snapshot of the pager's counters and pagemap."""
    from translators.libpager.pagemap import PM_INCORE, PM_PAGINGOUT

    with p._stats_lock:
        d = dict(p.stats)
    with p.lock:
        d.update(state=p.pager_state, pagemap_entries=len(p.pagemap),
                 pages_incore=p.pagemap.count(PM_INCORE),
                 pages_pagingout=p.pagemap.count(PM_PAGINGOUT))
    return d


def pager_bucket_stats(bucket) -> dict:
    """The counters of every pager in ``bucket``, summed."""
    total = dict.fromkeys(STAT_KEYS, 0)
    n = 0
    for pi in bucket.iterate(pager_class):
        p = pi.data
        if isinstance(p, Pager):
            n += 1
            with p._stats_lock:
                for k, v in p.stats.items():
                    total[k] += v
    total["pagers"] = n
    return total
