"""Kernel threads as continuations (GNU Mach kern/sched_prim.c: assert_wait, thread_block,
thread_wakeup).

The kernel is one OS thread.  Work that must wait (a fault waiting for a pager, a thread
waiting for free pages, the pageout daemon between bursts) is a ``KThread``: a generator
that yields what it waits for — an event (any hashable object: a page, an object, a
name) or a ``Sleep`` — and is resumed by ``thread_wakeup(event)`` or when the sleep ends.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import time

import structlog

log = structlog.get_logger("kernel")


class Sleep:
    """Yielded by a kernel thread: resume after ``seconds`` (or on a wakeup of ``event``,
    if given, whichever comes first)."""

    __slots__ = ("seconds", "event")

    def __init__(self, seconds: float, event=None):
        self.seconds, self.event = seconds, event


class KThread:
    __slots__ = ("gen", "name", "waiting", "done", "wakeups")

    def __init__(self, gen, name: str):
        self.gen, self.name = gen, name
        self.waiting = None
        self.done = False
        self.wakeups = 0


class Scheduler:
    def __init__(self):
        self.waitq: dict = collections.defaultdict(list)  # event -> [KThread]
        self.runq: collections.deque = collections.deque()
        self.timers: list = []
        self._seq = itertools.count()
        self.threads = 0

    def spawn(self, gen, name: str = "kthread") -> KThread:
        """Start a kernel thread; it runs to its first wait before spawn returns."""
        t = KThread(gen, name)
        self.threads += 1
        self._step(t)
        return t

    def thread_wakeup(self, event):
        waiters = self.waitq.pop(event, None)
        if waiters:
            for t in waiters:
                if t.waiting is event:
                    t.waiting = None
                    self.runq.append(t)

    def _step(self, t: KThread):
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
        if isinstance(what, Sleep):
            token = object()
            t.waiting = token if what.event is None else what.event
            if what.event is not None:
                self.waitq[what.event].append(t)
            heapq.heappush(self.timers, (time.monotonic() + what.seconds, next(self._seq),
                                         t, t.waiting))
        else:
            t.waiting = what
            self.waitq[what].append(t)

    def run(self, budget: int = 10000):
        """Resume runnable threads (those woken, and sleeps that ended)."""
        now = time.monotonic()
        timers = self.timers
        while timers and timers[0][0] <= now:
            _, _, t, token = heapq.heappop(timers)
            if t.waiting is token and not t.done:
                t.waiting = None
                self.runq.append(t)
        runq = self.runq
        while runq and budget > 0:
            budget -= 1
            t = runq.popleft()
            if not t.done:
                self._step(t)

    def next_deadline(self):
        return self.timers[0][0] if self.timers else None
