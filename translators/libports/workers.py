"""The Hurd's fixed worker pool since 2014 (libpager/queue.c with
ports_manage_port_operations_one_thread): one thread receives every request and queues
it; a fixed number of worker threads serve the queue.  Requests for an object (a port)
that a worker is already serving go to that worker, so each object's requests are
served one at a time, in the order they arrived.  The thread count never grows; a burst
waits in the queue, then (the queue being bounded) in the kernel's port queue, and then
its senders block.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Hashable

import structlog

from protocol import message as M
from protocol.kern_return import MachError, MachMsgReturn
from translators.libports.bucket import PortBucket, ports_destroy_bucket
from translators.libports.demuxer import PortsDemuxer, is_send_error, reply_send_timeout
from translators.libports.manage_multithread import STACK_SIZE, start_thread
from translators.libports.stacks import ThreadStacks

log = structlog.get_logger("libports")

DEFAULT_WORKERS = 10  # the Hurd's libpager since 2016 (1 before)


class WorkQueue:
    """The request queue of libpager/queue.c, bounded, with per-object ordering.

    A request for an object no worker holds goes to the shared queue; a worker that takes
    it becomes the object's owner until it has served every request it holds for it.
    Requests for an owned object go to the owner's own queue — unless earlier requests
    for the object still wait in the shared queue, in which case they queue behind those
    (and are handed to the owner when a worker takes them).  At most ``capacity``
    requests wait in all queues together; ``put`` blocks while they are full.

    ``ordered=False`` drops the per-object rule (any free worker takes any request): not
    the Hurd's design, a knob to see what the ordering costs when one object is hot.
    """

    def __init__(self, nworkers: int, capacity: int, ordered: bool = True):
        if nworkers < 1 or capacity < 1:
            raise ValueError("need at least one worker and a capacity of one")
        self.nworkers, self.capacity, self.ordered = nworkers, capacity, ordered
        self.cond = threading.Condition()
        self.shared: deque = deque()
        self.local = [deque() for _ in range(nworkers)]
        self.owner: dict[Hashable, int] = {}
        self.held: dict[Hashable, int] = {}  # requests of an owned object at its owner
        self.in_shared: dict[Hashable, int] = {}
        self.waiting = 0  # requests in all queues
        self.closed = False
        self.stats = {"queued": 0, "handed_over": 0, "max_waiting": 0, "put_blocked": 0}

    def put(self, key: Hashable, item: Any, timeout: float | None = None) -> bool:
        """Queue ``item`` for object ``key``; False if the queue closed (or ``timeout``
        passed) before there was room."""
        with self.cond:
            if self.waiting >= self.capacity and not self.closed:
                self.stats["put_blocked"] += 1
                if not self.cond.wait_for(
                        lambda: self.waiting < self.capacity or self.closed, timeout):
                    return False
            if self.closed:
                return False
            w = self.owner.get(key) if self.ordered else None
            if w is not None and not self.in_shared.get(key):
                self.local[w].append((key, item))
                self.held[key] += 1
            else:
                self.shared.append((key, item))
                self.in_shared[key] = self.in_shared.get(key, 0) + 1
            self.waiting += 1
            self.stats["queued"] += 1
            if self.waiting > self.stats["max_waiting"]:
                self.stats["max_waiting"] = self.waiting
            self.cond.notify_all()
            return True

    def get(self, worker: int, timeout: float | None = None):
        """The next (key, item) for ``worker``: its own queue first, then the shared one.
        None when the queue is closed (or ``timeout`` passed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while True:
                if self.closed:
                    return None
                mine = self.local[worker]
                if mine:
                    self.waiting -= 1
                    self.cond.notify_all()
                    return mine.popleft()
                while self.shared:
                    key, item = self.shared.popleft()
                    n = self.in_shared[key] - 1
                    if n:
                        self.in_shared[key] = n
                    else:
                        del self.in_shared[key]
                    if not self.ordered:
                        self.waiting -= 1
                        self.cond.notify_all()
                        return key, item
                    w = self.owner.get(key)
                    if w is None:
                        self.owner[key] = worker
                        self.held[key] = 1
                        self.waiting -= 1
                        self.cond.notify_all()
                        return key, item
                    # Another worker serves this object: keep its order, hand it over.
                    self.local[w].append((key, item))
                    self.held[key] += 1
                    self.stats["handed_over"] += 1
                    self.cond.notify_all()
                    if w == worker:
                        break
                if mine:
                    continue
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self.cond.wait(left)

    def done(self, worker: int, key: Hashable):
        """``worker`` finished one request for ``key``."""
        if not self.ordered:
            return
        with self.cond:
            n = self.held[key] - 1
            if n:
                self.held[key] = n
            else:
                del self.held[key]
                del self.owner[key]
            self.cond.notify_all()

    def close(self) -> list:
        """Stop: wake everyone; returns the requests that were never served."""
        with self.cond:
            self.closed = True
            dropped = [item for _, item in self.shared]
            for q in self.local:
                dropped += [item for _, item in q]
                q.clear()
            self.shared.clear()
            self.waiting = 0
            self.cond.notify_all()
            return dropped


class WorkersServer:
    """One receiving thread and ``nworkers`` worker threads over ``bucket``.

    ``vm_stacks`` (default on): each of these threads vm_allocates its stack in the
    task's own map with a guard page, touches its top ``stack_touch_pages`` pages, and
    gives it back when it exits (see stacks.py).
    """

    def __init__(self, bucket: PortBucket, demuxer: PortsDemuxer,
                 nworkers: int = DEFAULT_WORKERS, capacity: int | None = None,
                 ordered: bool = True, hook=None, stack_size: int | None = STACK_SIZE,
                 name: str = "ports", vm_stacks: bool = True,
                 stack_touch_pages: int = 0):
        self.bucket, self.demuxer = bucket, demuxer
        self.rt = bucket.rt
        self.nworkers = nworkers
        self.queue = WorkQueue(nworkers, capacity or max(16, 4 * nworkers), ordered)
        self.hook = hook
        self.stack_size = stack_size
        self.name = name
        self.stacks = ThreadStacks(self.rt, stack_size or STACK_SIZE, vm_stacks, name=name,
                                   touch_pages=stack_touch_pages)
        self.stopping = False
        self.done = threading.Event()
        self.error: str | None = None
        self.messages = 0
        self.busy = 0
        self.peak_busy = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._alive = 0
        self.started = 0.0

    def start(self):
        self.started = time.monotonic()
        for i in range(self.nworkers):
            self._start(self._worker, f"{self.name}-worker-{i}", (i,))
        self._start(self._receiver, f"{self.name}-receiver", ())
        return self

    def _start(self, fn, name, args):
        with self._lock:
            self._alive += 1
        self._threads.append(start_thread(self._wrap, name, self.stack_size, (fn, args)))

    def _wrap(self, fn, args):
        stack = self.stacks.allocate()
        try:
            if self.hook is not None:
                self.hook()
            fn(*args)
        finally:
            self.stacks.deallocate(stack)
            with self._lock:
                self._alive -= 1
            try:
                self.rt.thread_exit()
            except MachError:
                pass

    def stop(self, timeout: float = 10.0):
        self.stopping = True
        ports_destroy_bucket(self.bucket)
        self.queue.close()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not self.alive_threads()

    def alive_threads(self) -> int:
        return sum(1 for t in self._threads if t.is_alive())

    def stats(self) -> dict:
        with self._lock:
            d = {"model": "workers", "threads": self._alive, "peak_threads": len(self._threads),
                 "workers": self.nworkers, "ordered": self.queue.ordered, "busy": self.busy, "peak_busy": self.peak_busy,
                 "messages": self.messages}
        d.update(self.stacks.stats())
        with self.queue.cond:
            d.update({"queue_waiting": self.queue.waiting, **{
                f"queue_{k}": v for k, v in self.queue.stats.items()}})
        d.update({f"demux_{k}": v for k, v in self.demuxer.stats.items()})
        return d

    # ------------------------------------------------------------ threads

    def _receiver(self):
        """ports_manage_port_operations_one_thread with a demuxer that only queues."""
        rt, pset = self.rt, self.bucket.portset
        try:
            while not self.stopping:
                try:
                    code, msg = rt.mach_msg(M.MACH_RCV_MSG, None, pset, keep_ool=True)
                except MachError as e:
                    code = e.code or MachMsgReturn.MACH_RCV_PORT_DIED
                if code:
                    if not self.stopping:
                        self.error = f"receive failed: {code:#x}"
                        log.error("receiver ends", code=code)
                    return
                if not self.queue.put(msg.local_port, msg):
                    rt.release_ool(msg)
                    return
        finally:
            dropped = self.queue.close()
            for msg in dropped:
                rt.release_ool(msg)
            if dropped:
                log.info("requests dropped at shutdown", count=len(dropped))
            self.done.set()

    def _worker(self, i: int):
        rt = self.rt
        while True:
            got = self.queue.get(i)
            if got is None:
                return
            key, msg = got
            with self._lock:
                self.busy += 1
                if self.busy > self.peak_busy:
                    self.peak_busy = self.busy
            try:
                try:
                    reply = self.demuxer.serve(msg)
                finally:
                    # The request's out-of-line regions are the worker's until the handler
                    # is done (or took them over: rt.take_ool).
                    rt.release_ool(msg)
                    with self._lock:  # counted before the reply goes: a client that has
                        self.messages += 1  # its answer sees its message counted
                if reply is not None:
                    try:
                        code, _ = rt.mach_msg(M.MACH_SEND_MSG, reply,
                                              send_timeout=reply_send_timeout(reply))
                    except MachError:
                        return  # the kernel is gone
                    if code and is_send_error(code):
                        self.demuxer.discard_reply(reply)
            finally:
                with self._lock:
                    self.busy -= 1
                self.queue.done(i, key)
