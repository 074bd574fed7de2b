"""The disk under ext2fs as one device (what the Hurd's libstore store_write reaches:
one disk, one request at a time).

``--disk-latency-ms`` emulates a slow disk: every data write the pager makes costs that
long.  A disk serializes its requests, so the cost is paid at the device, not in the
calling thread: a write waits its turn (first come, first served) until one of the
device's ``queue_depth`` slots is free (depth 1: one write at a time, as a disk without
command queueing), then holds the slot for the write and the latency.  N threads
writing at once thus take about N x latency, not one latency.  The time writes spent
waiting for a slot is counted, and so is the most writes in service at once (never
more than the depth).

Only file data written back by the pager goes through the device (the writes the
latency was always charged to); metadata written at a sync goes to the image directly.
The waiters are the pager's server threads, so the queue is bounded by their number.
"""

from __future__ import annotations

import threading
import time
from collections import deque


class DiskDevice:
    """One emulated disk: ``latency`` seconds per write, ``queue_depth`` writes in
    service at once."""

    def __init__(self, latency: float = 0.0, queue_depth: int = 1):
        if latency < 0:
            raise ValueError("latency must not be negative")
        if queue_depth < 1:
            raise ValueError("queue_depth must be at least 1")
        self.latency = latency
        self.queue_depth = queue_depth
        self._lock = threading.Lock()
        # Writes waiting for a slot, first come first served, each with its own event:
        # a freed slot wakes exactly the next write in line (waking every waiter to let
        # one through would cost each write O(waiters) under a storm).
        self._line: deque[threading.Event] = deque()
        self.inflight = 0
        self.queued = 0
        self.writes = 0
        self.bytes = 0
        self.waits = 0         # writes that found the device busy
        self.wait_seconds = 0.0
        self.busy_seconds = 0.0
        self.max_inflight = 0
        self.max_queued = 0

    def write(self, nbytes: int, fn):
        """store_write: ``fn()`` (the write to the image, ``nbytes`` long) done as one
        device write — after the writes that came first, in one of the device's
        slots, followed by the latency.  Returns what ``fn`` returns; its exception
        frees the slot and propagates."""
        arrived = time.monotonic()
        with self._lock:
            if self.inflight < self.queue_depth and not self._line:
                turn = None
                self.inflight += 1
            else:
                turn = threading.Event()
                self._line.append(turn)
                self.queued += 1
                self.max_queued = max(self.max_queued, self.queued)
        if turn is not None:
            turn.wait()  # the slot was handed to us by the write that freed it
        started = time.monotonic()
        with self._lock:
            self.max_inflight = max(self.max_inflight, self.inflight)
            if turn is not None:
                self.waits += 1
                self.wait_seconds += started - arrived
        try:
            result = fn()
            if self.latency > 0:
                time.sleep(self.latency)  # the device is busy, not just this thread
            return result
        finally:
            with self._lock:
                self.writes += 1
                self.bytes += nbytes
                self.busy_seconds += time.monotonic() - started
                if self._line:
                    # the slot passes to the next in line (inflight unchanged)
                    self.queued -= 1
                    self._line.popleft().set()
                else:
                    self.inflight -= 1

    def stats(self) -> dict:
        """disk_* statistics: writes and their average size, the time spent waiting
        for the device and in it, the most writes queued and in service at once."""
        with self._lock:
            return {"disk_writes": self.writes, "disk_write_bytes": self.bytes,
                    "disk_write_avg_bytes": round(self.bytes / self.writes) if self.writes
                    else 0,
                    "disk_latency_ms": self.latency * 1000.0,
                    "disk_queue_depth": self.queue_depth, "disk_waits": self.waits,
                    "disk_wait_s": round(self.wait_seconds, 6),
                    "disk_busy_s": round(self.busy_seconds, 6),
                    "disk_max_inflight": self.max_inflight,
                    "disk_max_queued": self.max_queued, "disk_queued": self.queued}
