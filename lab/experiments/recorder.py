"""The recorder: a sampler thread at about 10 Hz during a configuration's run, writing
one JSON line per sample to DIR/samples.jsonl.

Each sample has ``t`` (seconds since the recorder started) and ``time`` (Unix time), and:

- ``vm``: the kernel's ``vm_statistics`` (every counter, the
  policy's included; its ``pageout`` dict is the daemon's own), asked by the
  recorder's own task; ``vm_ms`` what the call took.
- ``procs``: threads, RSS and CPU seconds (user + system) of every process the runner
  names (the cluster's, the workload's and its task processes), from psutil.
- On some samples (below), from ``machemu_kernel_info`` on host_priv: ``ports`` — the
  ports whose receive right the pager task (ext2fs) holds: ``depth`` (queued messages,
  all its ports), ``pager_depth`` (on its memory objects' pager ports: data_returns and
  data_requests the kernel queued), ``pager_ports``, ``busy`` (the deepest pager ports,
  name -> depth, at most BUSY_MAX); ``pagers`` — the same for every task that holds a
  pager port (ext2fs, the default pager, memfs ...), with the messages pending beside
  the queues: ``blocked_senders`` (sends waiting for room in a full queue) and
  ``waiting_receivers`` (threads waiting in mach_msg for one); ``resident`` (pages by
  kind: internal / external, dirty); ``map_entries`` and ``map_cost`` (lookups, first-fit searches and their time,
  per task); ``info_ms``.

Kernel-side numbers come only through kernel calls, never from logs.  Their cost is
kept bounded: ``vm_statistics`` walks every page frame (about 3 ms for 2,048 frames and
10 ms for 16,384, as this thread sees it on a loaded machine) and is asked every
sample; ``machemu_kernel_info`` walks the frames too and every task's every port (12 ms
with no ports to 50 ms with 3,000 receive rights and 90 ms with 10,000, on 16,384
frames), so it is asked only as often as keeps the time it took, as this thread
measured it, under INFO_SHARE of the wall time (and at least every INFO_MAX_EVERY
seconds): at 10 Hz on a small quiet cluster, every second or so on a large or busy
one; ``info_every_s`` in the samples that asked says how often that came to.  The time
measured is the round trip, which on a busy kernel includes its queue: the slower the
kernel answers, the less the recorder asks of it.  psutil is read every sample.  At
most MAX_SAMPLES lines are written.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psutil
import structlog

from lab.client import ClusterClient
from lab.rundir import RunDir
from protocol.defs import mach as V
from protocol.defs.machemu import machemu_kernel_info
from protocol.kern_return import MachError
from protocol.runtime import KernelGone

INTERVAL = 0.1           # seconds between samples
INFO_SHARE = 0.1         # kernel_info may take at most this share of the wall time,
INFO_MAX_EVERY = 2.0     # but is asked at least every 2 s
CALL_TIMEOUT = 5.0       # seconds a sampling call may take
MAX_SAMPLES = 36_000     # an hour at 10 Hz
BUSY_MAX = 32            # deepest pager ports listed per sample
CHILDREN_EVERY = 1.0     # seconds between looks for new workload task processes

log = structlog.get_logger("recorder")


def pace(cost: float, share: float, interval: float = INTERVAL) -> float:
    """Seconds between calls that take ``cost`` seconds each so that they take at most
    ``share`` of the wall time: never less than ``interval``, never more than
    INFO_MAX_EVERY."""
    return min(INFO_MAX_EVERY, max(interval, cost / share))


def port_summary(ports: list[dict], task: str) -> dict:
    """The queue depths of ``task``'s ports from machemu_kernel_info's ``ports``."""
    mine = [p for p in ports if p.get("task") == task]
    pagers = [p for p in mine if p.get("pager")]
    busy = sorted((p for p in pagers if p["depth"]), key=lambda p: -p["depth"])[:BUSY_MAX]
    return {"depth": sum(p["depth"] for p in mine),
            "pager_depth": sum(p["depth"] for p in pagers),
            "pager_ports": len(pagers), "ports": len(mine),
            "busy": {str(p["name"]): p["depth"] for p in busy}}


def pager_summary(ports: list[dict]) -> dict[str, dict]:
    """Per task holding pager ports (machemu_kernel_info's ``ports`` flagged ``pager``):
    ``ports``, ``depth`` (messages queued on them), ``blocked_senders``,
    ``waiting_receivers`` and ``busy`` (the deepest, name -> depth, at most
    BUSY_MAX)."""
    out: dict[str, dict] = {}
    for p in ports:
        if not p.get("pager"):
            continue
        t = out.setdefault(p.get("task", "?"), {"ports": 0, "depth": 0,
                                                "blocked_senders": 0,
                                                "waiting_receivers": 0, "busy": []})
        t["ports"] += 1
        t["depth"] += p["depth"]
        t["blocked_senders"] += p.get("blocked_senders", 0)
        t["waiting_receivers"] += p.get("waiting_receivers", 0)
        if p["depth"]:
            t["busy"].append(p)
    for t in out.values():
        t["busy"] = {str(p["name"]): p["depth"]
                     for p in sorted(t["busy"], key=lambda p: -p["depth"])[:BUSY_MAX]}
    return out


def proc_sample(p: psutil.Process) -> dict | None:
    """Threads, RSS and CPU seconds of one process, None if it is gone."""
    try:
        with p.oneshot():
            if p.status() == psutil.STATUS_ZOMBIE:
                return None
            t = p.cpu_times()
            return {"threads": p.num_threads(), "rss": p.memory_info().rss,
                    "cpu": round(t.user + t.system, 3)}
    except psutil.Error:
        return None


class ProcessSet:
    """The processes sampled: fixed ones (label -> pid) and the descendants of some
    (a workload's task processes, labelled ``LABEL.N``), looked for again every
    CHILDREN_EVERY seconds."""

    def __init__(self):
        self.fixed: dict[str, int] = {}
        self.roots: dict[str, int] = {}
        self.handles: dict[int, psutil.Process] = {}
        self._children: dict[str, int] = {}
        self._looked = 0.0
        self.lock = threading.Lock()

    def add(self, label: str, pid: int | None, with_children: bool = False):
        with self.lock:
            if pid:
                (self.roots if with_children else self.fixed)[label] = pid

    def remove(self, label: str):
        with self.lock:
            self.fixed.pop(label, None)
            self.roots.pop(label, None)
            self._children = {k: v for k, v in self._children.items()
                              if not k.startswith(label + ".")}

    def current(self) -> dict[str, psutil.Process]:
        """label -> psutil.Process of everything to sample now."""
        now = time.monotonic()
        with self.lock:
            if self.roots and now - self._looked >= CHILDREN_EVERY:
                self._looked = now
                kids = {}
                for label, pid in self.roots.items():
                    try:
                        for i, c in enumerate(sorted(psutil.Process(pid).children(True),
                                                     key=lambda c: c.pid)):
                            kids[f"{label}.{i}"] = c.pid
                    except psutil.Error:
                        pass
                self._children = kids
            pids = {**self.fixed, **self.roots, **self._children}
        out = {}
        for label, pid in pids.items():
            h = self.handles.get(pid)
            if h is None:
                try:
                    h = self.handles[pid] = psutil.Process(pid)
                except psutil.Error:
                    continue
            out[label] = h
        return out


class Recorder(threading.Thread):
    """Samples the cluster of ``run_dir`` into ``path`` until ``stop()``.

    ``procs``: the ProcessSet to sample; ``server``: the task whose ports are followed.
    ``last`` is the latest sample; ``errors`` counts calls that failed (a sample then
    lacks that part).
    """

    def __init__(self, run_dir: RunDir, path: Path, procs: ProcessSet, *,
                 server: str = "ext2fs", interval: float = INTERVAL,
                 max_samples: int = MAX_SAMPLES):
        super().__init__(name="recorder", daemon=True)
        self.rd, self.path, self.procs, self.server = run_dir, Path(path), procs, server
        self.interval, self.max_samples = interval, max_samples
        self.client = ClusterClient(run_dir, CALL_TIMEOUT, name="recorder", role="recorder")
        self.rt = self.client.connect()  # ClusterError if the kernel does not answer
        self.count = self.errors = 0
        self.last: dict | None = None
        self._next: dict[str, float] = {}  # kernel call -> when it is next due
        self._stop_evt = threading.Event()
        self.t0 = time.monotonic()

    def stop(self):
        """Take a last sample, stop, and leave the kernel."""
        self._stop_evt.set()
        self.join(timeout=CALL_TIMEOUT * 3)
        self.client.close()

    def run(self):
        with open(self.path, "a") as f:
            next_t = time.monotonic()
            while True:
                stopping = self._stop_evt.is_set()
                try:
                    s = self.sample()
                except KernelGone:
                    log.warning("recorder: the kernel is gone")
                    return
                if self.count < self.max_samples:
                    f.write(json.dumps(s, separators=(",", ":")) + "\n")
                    f.flush()
                    self.count += 1
                if stopping:
                    return
                next_t += self.interval
                self._stop_evt.wait(max(0.0, next_t - time.monotonic()))
                next_t = max(next_t, time.monotonic() - self.interval)  # no catching up

    def due(self, what: str, now: float) -> bool:
        return now >= self._next.get(what, 0.0)

    def paced(self, what: str, now: float, cost: float, share: float) -> float:
        """Schedule the next ``what`` call so that calls of ``cost`` seconds take at
        most ``share`` of the wall time (but at least every INFO_MAX_EVERY seconds);
        returns the period chosen."""
        every = pace(cost, share, self.interval)
        self._next[what] = now + every
        return every

    def call(self, fn):
        """A kernel call, None if it failed (counted; the thread's reply port dropped so
        that a late reply is not taken for the next call's), KernelGone passed on."""
        try:
            return fn()
        except KernelGone:
            raise
        except MachError:
            self.errors += 1
            self.rt.thread_exit()
            return None

    def sample(self) -> dict:
        """One sample (see the module's docstring)."""
        rt = self.rt
        now = time.monotonic()
        s: dict = {"t": round(now - self.t0, 3), "time": round(time.time(), 3)}
        c0 = time.perf_counter()
        vm = self.call(lambda: V.vm_statistics(rt.task_self, timeout=CALL_TIMEOUT, rt=rt))
        if vm is not None:
            s["vm"], s["vm_ms"] = vm, round((time.perf_counter() - c0) * 1000, 2)
        if self.due("info", now):
            c0 = time.perf_counter()
            ki = self.call(lambda: machemu_kernel_info(rt.host_priv or rt.host,
                                                       timeout=CALL_TIMEOUT, rt=rt))
            cost = time.perf_counter() - c0
            if ki is not None:
                s["info_ms"] = round(cost * 1000, 2)
                s["ports"] = port_summary(ki.get("ports", []), self.server)
                s["pagers"] = pager_summary(ki.get("ports", []))
                s["resident"] = ki.get("resident")
                s["map_entries"] = {t["name"]: t.get("map_entries", 0)
                                    for t in ki.get("tasks", [])}
                s["map_cost"] = {t["name"]: t["map_cost"] for t in ki.get("tasks", [])
                                 if t.get("map_cost")}
            s["info_every_s"] = round(self.paced("info", now, cost, INFO_SHARE), 3)
        procs = {}
        for label, p in self.procs.current().items():
            d = proc_sample(p)
            if d is not None:
                procs[label] = d
        s["procs"] = procs
        self.last = s
        return s
