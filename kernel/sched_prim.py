"""Kernel threads as continuations (GNU Mach kern/sched_prim.c: assert_wait, thread_block,
thread_wakeup, thread_wakeup_one).

The kernel is one OS thread.  Work that must wait (a fault waiting for a pager, a thread
waiting for free pages, the pageout daemon between bursts) is a ``KThread``: a generator
that yields what it waits for — an event (any hashable object: a page, an object, a
name) or a ``Sleep`` — and is resumed by ``thread_wakeup(event)`` or when the sleep ends.
As in Mach, a resumed thread finds why in ``sched.current.wait_result``
(THREAD_AWAKENED, THREAD_TIMED_OUT, or what the waker passed to thread_wakeup_prim).
Waiters of one event are woken in the order they began to wait (Mach's FIFO wait
queues).
"""

from __future__ import annotations

import collections
import heapq
import itertools
import time

import structlog

log = structlog.get_logger("kernel")

# kern/sched_prim.h wait results
THREAD_AWAKENED = 0
THREAD_TIMED_OUT = 1
THREAD_INTERRUPTED = 2
THREAD_RESTART = 3


class Sleep:
    """Yielded by a kernel thread: resume after ``seconds`` (or on a wakeup of ``event``,
    if given, whichever comes first)."""

    __slots__ = ("seconds", "event")

    def __init__(self, seconds: float, event=None):
        self.seconds, self.event = seconds, event


class KThread:
    __slots__ = ("gen", "name", "waiting", "done", "wakeups", "wait_seq", "wait_result")

    def __init__(self, gen, name: str):
        self.gen, self.name = gen, name
        self.waiting = None
        self.done = False
        self.wakeups = 0
        # Which wait this is (a timer or wait-queue entry of an earlier wait of the
        # same thread is stale), and how the last one ended.
        self.wait_seq = 0
        self.wait_result = THREAD_AWAKENED


class Scheduler:
    def __init__(self):
        # event -> deque of (KThread, wait_seq), oldest first
        self.waitq: dict = collections.defaultdict(collections.deque)
        self.runq: collections.deque = collections.deque()
        self.timers: list = []
        self._seq = itertools.count()
        self.threads = 0
        self.current: KThread | None = None  # current_thread() while one runs

    def spawn(self, gen, name: str = "kthread") -> KThread:
        """Start a kernel thread; it runs to its first wait before spawn returns."""
        t = KThread(gen, name)
        self.threads += 1
        self._step(t)
        return t

    def thread_wakeup_prim(self, event, one_thread: bool = False,
                           result: int = THREAD_AWAKENED) -> int:
        """thread_wakeup_prim: make the threads waiting for ``event`` runnable (only the
        one that has waited longest when ``one_thread``), each finding ``result`` in its
        wait_result.  Returns how many were woken."""
        waiters = self.waitq.get(event)
        if not waiters:
            return 0
        woken = 0
        while waiters:
            t, seq = waiters.popleft()
            if t.wait_seq != seq or t.waiting is not event:
                continue  # that wait ended already (timed out)
            t.waiting = None
            t.wait_result = result
            self.runq.append(t)
            woken += 1
            if one_thread:
                break
        if not waiters:
            del self.waitq[event]
        return woken

    def thread_wakeup(self, event) -> int:
        """thread_wakeup: every thread waiting for ``event``."""
        return self.thread_wakeup_prim(event)

    def thread_wakeup_one(self, event) -> int:
        """thread_wakeup_one: the thread that has waited longest for ``event``."""
        return self.thread_wakeup_prim(event, one_thread=True)

    def _step(self, t: KThread):
        prev, self.current = self.current, t
        try:
            what = t.gen.send(None)
        except StopIteration:
            t.done = True
            self.threads -= 1
            return
        except Exception:
            log.exception("kernel thread failed", thread=t.name)
            t.done = True
            self.threads -= 1
            return
        finally:
            self.current = prev
        t.wait_seq += 1
        if isinstance(what, Sleep):
            t.waiting = object() if what.event is None else what.event
            if what.event is not None:
                self.waitq[what.event].append((t, t.wait_seq))
            heapq.heappush(self.timers, (time.monotonic() + what.seconds, next(self._seq),
                                         t, t.wait_seq))
        else:
            t.waiting = what
            self.waitq[what].append((t, t.wait_seq))

    def run(self, budget: int = 10000):
        """Resume runnable threads (those woken, and sleeps that ended)."""
        now = time.monotonic()
        timers = self.timers
        while timers and timers[0][0] <= now:
            _, _, t, seq = heapq.heappop(timers)
            if t.wait_seq == seq and t.waiting is not None and not t.done:
                t.waiting = None
                t.wait_result = THREAD_TIMED_OUT
                self.runq.append(t)
        runq = self.runq
        while runq and budget > 0:
            budget -= 1
            t = runq.popleft()
            if not t.done:
                self._step(t)

    def next_deadline(self):
        return self.timers[0][0] if self.timers else None
