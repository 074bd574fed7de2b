"""Sampling of the processes a workload watches (the server, the kernel, the pager)."""

from __future__ import annotations

import collections
import threading
import time

import psutil

SAMPLE_INTERVAL = 0.1         # psutil sampling period (s)
SAMPLES_MAX = 36_000          # samples kept per watched process (an hour at 10 Hz)


class Sampler(threading.Thread):
    """Samples watched processes (OS thread count, RSS) every ``interval`` seconds.

    ``pids`` maps a label to a pid (None: not sampled).  A process that exits is marked
    gone and no longer sampled.
    """

    def __init__(self, pids: dict[str, int | None], interval: float = SAMPLE_INTERVAL):
        super().__init__(name="sampler", daemon=True)
        self.interval = interval
        self.procs: dict[str, psutil.Process | None] = {}
        for label, pid in pids.items():
            try:
                self.procs[label] = psutil.Process(pid) if pid else None
            except psutil.Error:
                self.procs[label] = None
        self.samples = {k: collections.deque(maxlen=SAMPLES_MAX) for k in self.procs}
        self.peak_threads = {k: None for k in self.procs}
        self.peak_rss = {k: None for k in self.procs}
        self.gone = {k: False for k in self.procs}
        self.t0 = time.monotonic()
        self._stop_evt = threading.Event()
        self._lock = threading.Lock()

    def sample(self):
        """Take one sample (time, threads, RSS) of every watched process still alive."""
        now = round(time.monotonic() - self.t0, 3)
        with self._lock:
            for k, p in self.procs.items():
                if p is None or self.gone[k]:
                    continue
                try:
                    with p.oneshot():
                        if p.status() == psutil.STATUS_ZOMBIE:
                            raise psutil.NoSuchProcess(p.pid)
                        nth, rss = p.num_threads(), p.memory_info().rss
                except psutil.Error:
                    self.gone[k] = True
                    continue
                self.samples[k].append((now, nth, rss))
                if self.peak_threads[k] is None or nth > self.peak_threads[k]:
                    self.peak_threads[k] = nth
                if self.peak_rss[k] is None or rss > self.peak_rss[k]:
                    self.peak_rss[k] = rss

    def last(self, k) -> tuple | None:
        """The last sample (time, threads, RSS) of ``k``, or None."""
        s = self.samples.get(k)
        return s[-1] if s else None

    def run(self):
        while not self._stop_evt.wait(self.interval):
            self.sample()

    def stop(self):
        """Stop sampling and take the final sample."""
        self._stop_evt.set()
        self.join(timeout=5)
        self.sample()  # the final values

    def report(self, k) -> dict:
        """What the summary says of ``k``: pid, peak and final threads and RSS, whether it
        exited, and every sample."""
        p = self.procs.get(k)
        last = self.last(k)
        return {"pid": p.pid if p else None,
                "threads_peak": self.peak_threads.get(k),
                "threads_final": last[1] if last and not self.gone[k] else None,
                "rss_peak": self.peak_rss.get(k),
                "rss_final": last[2] if last and not self.gone[k] else None,
                "exited": self.gone.get(k, False),
                "samples": [list(s) for s in self.samples.get(k, ())]}
