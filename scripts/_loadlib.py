"""The machinery of scripts/loadgen: named workloads driven by a pool of client tasks.

A workload is a class registered with ``@workload``.  It declares its options, looks up
what it needs once in the parent (``prepare``), sets each task up (``task_setup``) and
makes the operation a thread repeats (``make_op``).  The driver runs every task as an OS
process of its own (multiprocessing 'spawn': a fresh interpreter, its own TaskRuntime and
kernel connection), with ``--threads`` threads each, for a duration or a total count; it
times each operation, counts MachErrors by code name, samples the watched processes with
psutil, shows progress and prints a summary.

Latencies stay bounded in every process: exact samples up to a cap, and a log-bucket
histogram (1 % wide buckets) that is always kept and is what percentiles come from once a
cap is passed.  Tasks send their latencies to the parent through a multiprocessing Queue.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from array import array
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import structlog  # noqa: E402

from protocol import logs, runtime  # noqa: E402
from protocol.defs.machemu import machemu_kernel_info  # noqa: E402
from protocol.defs.netname import netname_look_up  # noqa: E402
from protocol.kern_return import MachError, MachMsgReturn, MigReturn, code_name  # noqa: E402

# Exit statuses.
EXIT_OK, EXIT_FAILED, EXIT_UNREACHABLE = 0, 1, 2

# netname's own return codes (CMU Mach 3 netname_defs.h), which code_name does not know.
NETNAME_CODES = {2801: "NETNAME_NOT_YOUR_ENTRY", 2802: "NETNAME_NOT_CHECKED_IN",
                 2803: "NETNAME_INVALID_PORT"}

EXACT_CAP_TASK = 100_000      # exact latency samples kept per task process
EXACT_CAP_TOTAL = 1_000_000   # ... and in the parent, over all tasks
SAMPLE_INTERVAL = 0.1         # psutil sampling period (s)
SAMPLES_MAX = 36_000          # samples kept per watched process (an hour at 10 Hz)
PROGRESS_INTERVAL = 0.25      # how often a task reports its counts (s)


def err_name(code: int) -> str:
    return NETNAME_CODES.get(code) or code_name(code)


class ClusterError(Exception):
    """The cluster (kernel, or the server a workload needs) could not be reached."""


class VerifyError(Exception):
    """An operation returned data other than what was sent or written; ``count`` is how
    many units (pages) were wrong."""

    def __init__(self, msg: str = "", count: int = 1):
        super().__init__(msg)
        self.count = count


class Done(Exception):
    """Raised by the op of a fixed-work workload when its thread's share is done."""


# ---------------------------------------------------------------- latencies

class Latencies:
    """Operation latencies in seconds: exact up to ``cap`` samples, a histogram always."""

    GROWTH = 1.01
    BASE = 1e-7  # 0.1 us: bucket 0
    _LOG_G = math.log(GROWTH)

    def __init__(self, cap: int = EXACT_CAP_TASK):
        self.cap = cap
        self.exact: array | None = array("d")
        self.hist: dict[int, int] = collections.defaultdict(int)
        self.n = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = 0.0

    def add(self, s: float):
        self.n += 1
        self.sum += s
        if s < self.min:
            self.min = s
        if s > self.max:
            self.max = s
        self.hist[self._bucket(s)] += 1
        ex = self.exact
        if ex is not None:
            if len(ex) < self.cap:
                ex.append(s)
            else:
                self.exact = None  # past the cap: percentiles come from the histogram

    @classmethod
    def _bucket(cls, s: float) -> int:
        if s <= cls.BASE:
            return 0
        return int(math.log(s / cls.BASE) / cls._LOG_G)

    @classmethod
    def _bucket_value(cls, i: int) -> float:
        # Geometric middle of the bucket: at most half a bucket (0.5 %) off.
        return cls.BASE * cls.GROWTH ** (i + 0.5)

    def merge(self, other: "Latencies"):
        self.n += other.n
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        for k, v in other.hist.items():
            self.hist[k] += v
        if self.exact is not None and other.exact is not None \
                and len(self.exact) + len(other.exact) <= self.cap:
            self.exact.extend(other.exact)
        else:
            self.exact = None

    def to_wire(self) -> dict:
        return {"n": self.n, "sum": self.sum, "min": self.min, "max": self.max,
                "exact": None if self.exact is None else self.exact.tobytes(),
                "hist": dict(self.hist)}

    @classmethod
    def from_wire(cls, d: dict, cap: int = EXACT_CAP_TOTAL) -> "Latencies":
        lat = cls(cap)
        lat.n, lat.sum, lat.min, lat.max = d["n"], d["sum"], d["min"], d["max"]
        lat.hist.update(d["hist"])
        if d["exact"] is None:
            lat.exact = None
        else:
            lat.exact.frombytes(d["exact"])
        return lat

    def quantile(self, q: float) -> float | None:
        """Nearest-rank quantile: exact while every sample is kept, else from buckets."""
        if self.n == 0:
            return None
        rank = max(1, math.ceil(q * self.n - 1e-9))  # 1e-9: 0.9 * 5000 is 4500.000...1
        if rank >= self.n:
            return self.max
        if self.exact is not None and len(self.exact) == self.n:
            return sorted(self.exact)[rank - 1]
        seen = 0
        for i in sorted(self.hist):
            seen += self.hist[i]
            if seen >= rank:
                return min(max(self._bucket_value(i), self.min), self.max)
        return self.max

    def summary_ms(self) -> dict:
        def ms(v):
            return None if v is None else round(v * 1000, 4)

        exact = self.exact is not None and len(self.exact) == self.n
        return {"p50": ms(self.quantile(0.50)), "p90": ms(self.quantile(0.90)),
                "p99": ms(self.quantile(0.99)), "max": ms(self.max if self.n else None),
                "min": ms(self.min if self.n else None),
                "mean": ms(self.sum / self.n if self.n else None),
                "samples": self.n, "exact": exact}


class Meter:
    """One thread's counts: operations done, errors by code name, verify failures."""

    def __init__(self, cap: int):
        self.ops = 0
        self.ok = 0
        self.errors: collections.Counter = collections.Counter()
        self.n_errors = 0
        self.mismatches = 0
        self.verified = 0
        self.lat = Latencies(cap)

    def error(self, name: str):
        self.errors[name] += 1
        self.n_errors += 1


# ---------------------------------------------------------------- the cluster

class Cluster:
    """A run directory's cluster, reached through DIR/cluster.json (written by
    scripts/launch) or, without one, through DIR/kernel.sock."""

    def __init__(self, run_dir: str | os.PathLike, connect_timeout: float = 10.0):
        self.run_dir = Path(run_dir)
        self.connect_timeout = connect_timeout
        cj = self.run_dir / "cluster.json"
        try:
            self.info = json.loads(cj.read_text()) if cj.exists() else {}
        except (OSError, ValueError) as e:
            raise ClusterError(f"{cj}: unreadable ({e})") from None
        try:
            self.endpoint = runtime.kernel_endpoint(self.run_dir)
        except (KeyError, TypeError, ValueError) as e:
            raise ClusterError(f"{cj}: no kernel endpoint ({e})") from None
        self.rt: runtime.TaskRuntime | None = None

    def connect(self, name: str = "loadgen") -> runtime.TaskRuntime:
        self.rt = connect_task(self.endpoint, name, self.connect_timeout)
        return self.rt

    def close(self):
        if self.rt is not None:
            self.rt.close()
            self.rt = None

    def kernel_info(self, timeout: float = 10.0) -> dict | None:
        """machemu_kernel_info, or None when the kernel does not answer."""
        try:
            return machemu_kernel_info(self.rt.host, timeout=timeout, rt=self.rt)
        except MachError:
            return None

    def look_up(self, name: str, timeout: float = 10.0) -> int:
        """netname_look_up of a server's port (a send right name in this task)."""
        try:
            return netname_look_up(self.rt.name_server, "", name, timeout=timeout, rt=self.rt)
        except MachError as e:
            raise ClusterError(f"server {name!r} not found in the name server: "
                               f"{err_name(e.code)}") from None

    def kernel_pid(self) -> int | None:
        pid = (self.info.get("kernel") or {}).get("pid")
        if pid:
            return int(pid)
        ki = self.kernel_info()
        return ki["kernel"]["pid"] if ki else None

    def process_pid(self, name: str) -> int | None:
        """A cluster process's pid: cluster.json "processes", else the kernel's task
        list, else DIR/NAME.ready (which holds the pid)."""
        for p in self.info.get("processes") or []:
            if p.get("name") == name and p.get("pid") and psutil.pid_exists(int(p["pid"])):
                return int(p["pid"])
        ki = self.kernel_info()
        if ki:
            cands = [t for t in ki.get("tasks", []) if t.get("name") == name
                     and t.get("pid") and t["pid"] != os.getpid()
                     and psutil.pid_exists(t["pid"])]
            if cands:
                return max(cands, key=lambda t: t["id"])["pid"]
        try:
            pid = int((self.run_dir / f"{name}.ready").read_text().strip())
            if psutil.pid_exists(pid):
                return pid
        except (OSError, ValueError):
            pass
        return None


def connect_task(endpoint: str, name: str, timeout: float) -> runtime.TaskRuntime:
    """A TaskRuntime of this process, or ClusterError."""
    if endpoint.startswith("ipc://") and not os.path.exists(endpoint[len("ipc://"):]):
        raise ClusterError(f"no kernel at {endpoint} (socket missing)")
    try:
        return runtime.TaskRuntime(endpoint, name, role="client", connect_timeout=timeout)
    except MachError as e:
        raise ClusterError(f"kernel at {endpoint} not answering: {err_name(e.code)}") from None


def reset_reply_port(rt: runtime.TaskRuntime):
    """After an RPC gave up waiting, drop this thread's reply port (MIG's
    mig_dealloc_reply_port) so a late reply cannot be taken for the next call's."""
    rt.thread_exit()


# ---------------------------------------------------------------- sampling

class Sampler(threading.Thread):
    """Samples watched processes (OS thread count, RSS) every ``interval`` seconds."""

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

    def last(self, k):
        s = self.samples.get(k)
        return s[-1] if s else None

    def run(self):
        while not self._stop_evt.wait(self.interval):
            self.sample()

    def stop(self):
        self._stop_evt.set()
        self.join(timeout=5)
        self.sample()  # the final values

    def report(self, k) -> dict:
        p = self.procs.get(k)
        last = self.last(k)
        return {"pid": p.pid if p else None,
                "threads_peak": self.peak_threads.get(k),
                "threads_final": last[1] if last and not self.gone[k] else None,
                "rss_peak": self.peak_rss.get(k),
                "rss_final": last[2] if last and not self.gone[k] else None,
                "exited": self.gone.get(k, False),
                "samples": [list(s) for s in self.samples.get(k, ())]}


# ---------------------------------------------------------------- workloads

WORKLOADS: dict[str, type["Workload"]] = {}


def workload(cls):
    """Register a workload class under ``cls.name``."""
    WORKLOADS[cls.name] = cls
    return cls


class Workload:
    """A named load.  Subclasses set ``name``, ``help``, ``unit`` and override hooks.

    Parent side: ``add_arguments``, ``check_args``, ``prepare`` (look-ups; returns a
    picklable dict handed to every task), ``watch`` (processes to sample), ``summarize``.
    Task side (in each task process): ``task_setup`` (returns per-task state) and
    ``make_op`` (per thread: returns ``op(seq)``, which raises MachError on a Mach error
    and VerifyError on wrong data, and returns True when it verified data).
    """

    name = ""
    help = ""
    unit = "ops"
    default_duration = 10.0
    # A fixed amount of work (each thread's op raises Done when its share is done) rather
    # than a duration or a count; --duration is then only a time limit.
    fixed_work = False
    progress_unit: str | None = None  # what task_progress counts, if not ops
    # Errors after which a thread stops: its destination is a dead name for good.
    fatal_codes = frozenset({MachMsgReturn.MACH_SEND_INVALID_DEST})

    def add_arguments(self, p: argparse.ArgumentParser):
        pass

    def check_args(self, args, parser):
        pass

    def prepare(self, cluster: Cluster, args) -> dict:
        return {}

    def watch(self, cluster: Cluster, args, prepared) -> dict[str, int | None]:
        return {}

    def task_setup(self, rt, args, index: int, prepared: dict):
        return None

    def make_op(self, rt, args, state, task: int, thread: int):
        raise NotImplementedError

    def task_counters(self, rt, args, state) -> dict:
        """Task side, after its threads ended: numbers summed over tasks into
        summary["counters"]."""
        return {}

    def task_progress(self, state) -> int | None:
        """Task side: the progress count shown (None: operations)."""
        return None

    def progress_extra(self, cluster: Cluster, args, prepared) -> str:
        """Parent side: more text for the progress line (kernel counters, ...)."""
        return ""

    def finish(self, cluster: Cluster, args, prepared: dict):
        """Parent side, once the tasks are done and while still connected."""

    def summarize(self, summary: dict, args, prepared: dict):
        pass

    def check(self, summary: dict) -> str | None:
        """A failure of the workload's own (work not done, ...), or None."""
        return None

    def table(self, summary: dict) -> list[tuple[str, str]]:
        return []


# ---------------------------------------------------------------- task processes

def _task_main(wname: str, args, index: int, quotas, prepared, endpoint: str, q, go, stop):
    """One client task (an OS process): connect, set up, wait for the start, run the
    threads, send the counts and latencies back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us through ``stop``
    try:
        logs.setup(f"loadgen.{wname}.{index}", Path(args.run_dir) / f"loadgen.{index}.log")
    except OSError:
        logs.setup(f"loadgen.{wname}.{index}", os.devnull)
    wl = WORKLOADS[wname]()
    try:
        rt = connect_task(endpoint, f"loadgen.{wname}.{index}", args.connect_timeout)
    except ClusterError as e:
        q.put(("fatal", index, str(e)))
        return
    try:
        try:
            state = wl.task_setup(rt, args, index, prepared)
        except (MachError, ClusterError) as e:
            msg = f"{err_name(e.code)}" if isinstance(e, MachError) else str(e)
            q.put(("fatal", index, f"task setup: {msg}"))
            return
        q.put(("ready", index))
        if not go.wait(args.start_timeout):
            q.put(("fatal", index, "never told to start"))
            return
        _run_task(wl, rt, args, index, quotas, state, q, stop)
    finally:
        rt.close()


def _run_task(wl, rt, args, index, quotas, state, q, stop):
    local_stop = threading.Event()
    meters = [Meter(max(1, EXACT_CAP_TASK // len(quotas))) for _ in quotas]
    t_start = time.time()
    deadline = (None if args.count is not None or args.duration is None
                else time.perf_counter() + args.duration)
    threads = [threading.Thread(target=_thread_main, name=f"load-{index}.{i}",
                                args=(wl, rt, args, state, index, i, meters[i], quota,
                                      deadline, local_stop), daemon=True)
               for i, quota in enumerate(quotas)]
    for t in threads:
        t.start()
    while True:
        alive = [t for t in threads if t.is_alive()]
        if not alive:
            break
        alive[0].join(PROGRESS_INTERVAL)
        if stop.is_set():
            local_stop.set()
        done = wl.task_progress(state)
        try:
            q.put_nowait(("progress", index,
                          sum(m.ops for m in meters) if done is None else done,
                          sum(m.n_errors for m in meters)))
        except queue.Full:
            pass  # progress is best effort; the result is not
    t_end = time.time()
    try:
        counters = wl.task_counters(rt, args, state)
    except MachError as e:
        counters = {"task_counters_error": 1}
        structlog.get_logger("loadgen").warning("task counters failed", code=err_name(e.code))
    lat = Latencies(EXACT_CAP_TASK)
    errors: collections.Counter = collections.Counter()
    for m in meters:
        lat.merge(m.lat)
        errors.update(m.errors)
    q.put(("result", index, {
        "ops": sum(m.ops for m in meters), "ok": sum(m.ok for m in meters),
        "errors": dict(errors), "mismatches": sum(m.mismatches for m in meters),
        "verified": sum(m.verified for m in meters),
        "t_start": t_start, "t_end": t_end, "latencies": lat.to_wire(),
        "pid": os.getpid(), "threads": len(quotas), "counters": counters}))


def _thread_main(wl, rt, args, state, task, thread, meter, quota, deadline, local_stop):
    perf = time.perf_counter
    try:
        try:
            op = wl.make_op(rt, args, state, task, thread)
        except MachError as e:
            meter.error(err_name(e.code))
            return
        seq = 0
        while not local_stop.is_set():
            if quota is not None and seq >= quota:
                break
            if deadline is not None and perf() >= deadline:
                break
            t0 = perf()
            try:
                verified = op(seq)
            except Done:
                break
            except VerifyError as e:
                meter.mismatches += e.count
                meter.error("DATA_MISMATCH")
            except runtime.KernelGone:
                meter.error("KERNEL_GONE")
                meter.ops += 1
                break
            except MachError as e:
                meter.error(err_name(e.code))
                if e.code in wl.fatal_codes:
                    meter.ops += 1
                    break
                if e.code in (MachMsgReturn.MACH_RCV_TIMED_OUT, MigReturn.MIG_REPLY_MISMATCH,
                              MachMsgReturn.MACH_RCV_INTERRUPTED):
                    reset_reply_port(rt)
            else:
                meter.lat.add(perf() - t0)
                meter.ok += 1
                if verified is True:
                    meter.verified += 1
                elif verified:
                    meter.verified += int(verified)  # units verified by this op
            meter.ops += 1
            seq += 1
    finally:
        if not rt.dead:
            rt.thread_exit()


# ---------------------------------------------------------------- the parent

def split_count(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


class Progress:
    """A one-line progress display on stderr: rewritten in place on a TTY, one line a
    second otherwise."""

    def __init__(self, enabled: bool, label: str, unit: str):
        self.enabled, self.label, self.unit = enabled, label, unit
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.every = 0.25 if self.tty else 1.0
        self.shown = False

    def show(self, elapsed, ops, errors, sampler: Sampler | None, watch_key=None,
             force=False, extra=None):
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        rate = ops / elapsed if elapsed > 0 else 0.0
        line = (f"{self.label} {elapsed:6.1f}s  {self.unit} {ops}  {rate:.0f}/s  "
                f"errors {errors}")
        if sampler is not None and watch_key:
            s = sampler.last(watch_key)
            if s:
                line += f"  {watch_key} threads {s[1]} rss {s[2] / 2**20:.1f} MiB"
        if extra is not None:
            more = extra()
            if more:
                line += "  " + more
        if self.tty:
            sys.stderr.write("\r\x1b[K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
        self.shown = True

    def done(self):
        if self.enabled and self.tty and self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def run(wl: Workload, args) -> tuple[dict, int]:
    """Run a workload from the parent; returns (summary, exit status)."""
    total_threads = args.tasks * args.threads
    quotas = ([split_count(c, args.threads) for c in split_count(args.count, args.tasks)]
              if args.count is not None else [[None] * args.threads] * args.tasks)
    cluster = Cluster(args.run_dir, args.connect_timeout)
    cluster.connect("loadgen")
    sampler = None
    procs = []
    try:
        prepared = wl.prepare(cluster, args)
        watched = wl.watch(cluster, args, prepared)
        watched.setdefault("kernel", cluster.kernel_pid())
        sampler = Sampler(watched)
        sampler.sample()
        sampler.start()
        ki0 = cluster.kernel_info()

        ctx = multiprocessing.get_context("spawn")
        q = ctx.Queue(maxsize=max(64, 8 * args.tasks))
        go, stop = ctx.Event(), ctx.Event()
        for i in range(args.tasks):
            p = ctx.Process(target=_task_main, name=f"loadgen-{i}",
                            args=(wl.name, args, i, quotas[i], prepared, cluster.endpoint,
                                  q, go, stop), daemon=True)
            p.start()
            procs.append(p)
        status = {i: "starting" for i in range(args.tasks)}
        results, fatal, counts = {}, {}, {}

        def handle(msg):
            kind, i = msg[0], msg[1]
            if kind == "ready":
                status[i] = "ready"
            elif kind == "progress":
                counts[i] = (msg[2], msg[3])
            elif kind == "result":
                results[i] = msg[2]
                status[i] = "done"
            elif kind == "fatal":
                fatal[i] = msg[2]
                status[i] = "failed"

        def pump(timeout):
            try:
                handle(q.get(timeout=timeout))
                while True:
                    handle(q.get_nowait())
            except queue.Empty:
                pass
            for i, p in enumerate(procs):
                if status[i] in ("starting", "ready", "running") and not p.is_alive():
                    # Anything it sent before exiting is already in the pipe.
                    try:
                        while True:
                            handle(q.get(timeout=0.2))
                    except queue.Empty:
                        pass
                    if status[i] in ("starting", "ready", "running"):
                        fatal[i] = f"task process exited with status {p.exitcode}"
                        status[i] = "failed"

        progress = Progress(args.progress, f"{wl.name}", wl.progress_unit or wl.unit)
        interrupted = False
        # Start together: every task connected and set up before the clock starts.
        start_deadline = time.monotonic() + args.start_timeout
        try:
            while any(s == "starting" for s in status.values()) and not fatal:
                if time.monotonic() > start_deadline:
                    for i, s in status.items():
                        if s == "starting":
                            fatal[i] = "did not get ready in time"
                    break
                pump(0.1)
        except KeyboardInterrupt:
            interrupted = True
        if fatal or interrupted:
            stop.set()
            go.set()
            raise ClusterError("; ".join(f"task {i}: {m}" for i, m in sorted(fatal.items()))
                               or "interrupted")
        for i in status:
            status[i] = "running"
        go.set()
        t_go = time.monotonic()
        while any(s == "running" for s in status.values()):
            try:
                pump(0.1)
                ops = sum(c[0] for c in counts.values())
                errs = sum(c[1] for c in counts.values())
                progress.show(time.monotonic() - t_go, ops, errs, sampler,
                              "server" if "server" in watched else None,
                              extra=lambda: wl.progress_extra(cluster, args, prepared))
            except KeyboardInterrupt:
                if interrupted:
                    break
                interrupted = True
                stop.set()
        progress.done()
        sampler.stop()
        ki1 = cluster.kernel_info()
        wl.finish(cluster, args, prepared)
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        cluster.close()

    lat = Latencies(EXACT_CAP_TOTAL)
    errors: collections.Counter = collections.Counter()
    ops = ok = mismatches = verified = 0
    counters: collections.Counter = collections.Counter()
    for r in results.values():
        counters.update(r.get("counters") or {})
        lat.merge(Latencies.from_wire(r["latencies"]))
        errors.update(r["errors"])
        ops += r["ops"]
        ok += r["ok"]
        mismatches += r["mismatches"]
        verified += r["verified"]
    if fatal:
        errors["TASK_FAILED"] += len(fatal)
    if results:
        elapsed = (max(r["t_end"] for r in results.values())
                   - min(r["t_start"] for r in results.values()))
    else:
        elapsed = 0.0
    summary = {
        "workload": wl.name, "run_dir": str(args.run_dir), "endpoint": cluster.endpoint,
        "tasks": args.tasks, "threads_per_task": args.threads, "threads": total_threads,
        "mode": ("count" if args.count is not None
                 else "work" if wl.fixed_work else "duration"),
        "count": args.count, "duration": args.duration if args.count is None else None,
        wl.unit: ops, "ok": ok, "errors": dict(sorted(errors.items())),
        "errors_total": sum(errors.values()), "mismatches": mismatches,
        "verified": verified, "elapsed_s": round(elapsed, 4),
        f"{wl.unit}_per_s": round(ok / elapsed, 2) if elapsed > 0 else None,
        "latency_ms": lat.summary_ms(),
        "task_failures": {str(i): m for i, m in sorted(fatal.items())},
        "interrupted": interrupted,
        "counters": {k: round(v, 4) if isinstance(v, float) else v
                     for k, v in sorted(counters.items())},
    }
    for k in watched:
        summary[k] = sampler.report(k)
    summary.setdefault("kernel", {})
    summary["kernel"]["rss"] = ki1["kernel"]["rss"] if ki1 else None
    summary["kernel"]["rss_start"] = ki0["kernel"]["rss"] if ki0 else None
    if ki1:
        summary["kernel"]["stats"] = ki1.get("stats", {})
    wl.summarize(summary, args, prepared)
    own_failure = wl.check(summary)

    if "KERNEL_GONE" in errors or (ki1 is None and ops):
        code = EXIT_UNREACHABLE
        summary["failure"] = "the kernel stopped answering"
    elif mismatches:
        code = EXIT_FAILED
        summary["failure"] = f"{mismatches} verification failures (data mismatch)"
    elif ok == 0:
        code = EXIT_FAILED
        summary["failure"] = f"every {wl.unit[:-1] if wl.unit.endswith('s') else wl.unit} failed"
    elif own_failure:
        code = EXIT_FAILED
        summary["failure"] = own_failure
    else:
        code = EXIT_OK
    summary["exit_status"] = code
    return summary, code


# ---------------------------------------------------------------- output

def fmt_mib(n) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


def fmt_ms(v) -> str:
    return "-" if v is None else f"{v:.3f} ms"


def table(wl: Workload, s: dict) -> str:
    unit = wl.unit
    lat = s["latency_ms"]
    mode = (f"count {s['count']}" if s["mode"] == "count"
            else "fixed work" if s["mode"] == "work" else f"duration {s['duration']} s")
    rows = [
        (unit, str(s[unit])),
        ("ok", str(s["ok"])),
        ("errors", str(s["errors_total"])),
    ]
    rows += [(f"  {name}", str(n)) for name, n in s["errors"].items()]
    rate = s.get(f"{unit}_per_s")
    rows += [
        (f"{unit}/s", "-" if rate is None else f"{rate:.1f}"),
        ("elapsed", f"{s['elapsed_s']:.2f} s"),
        ("latency p50", fmt_ms(lat["p50"])),
        ("latency p99", fmt_ms(lat["p99"])),
        ("latency max", fmt_ms(lat["max"])),
    ]
    rows += wl.table(s)
    k = s.get("kernel") or {}
    rows.append(("kernel RSS", f"{fmt_mib(k.get('rss'))} (peak {fmt_mib(k.get('rss_peak'))})"))
    head = (f"loadgen {wl.name}: {s['tasks']} task(s) x {s['threads_per_task']} thread(s), "
            f"{mode}")
    w = max(len(r[0]) for r in rows)
    out = [head] + [f"  {a.ljust(w)}  {b}" for a, b in rows]
    if s.get("task_failures"):
        out += [f"  task {i} failed: {m}" for i, m in s["task_failures"].items()]
    if s.get("interrupted"):
        out.append("interrupted: stopped early")
    if s.get("failure"):
        out.append(f"FAILED: {s['failure']}")
    return "\n".join(out)


# ---------------------------------------------------------------- command line

def positive_int(v):
    n = int(v)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return n


def positive_float(v):
    x = float(v)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return x


def build_parser(prog="loadgen") -> argparse.ArgumentParser:
    top_common = argparse.ArgumentParser(add_help=False)
    top_common.add_argument("--run-dir", metavar="DIR",
                            help="the cluster's run directory (default $MACHEMU_RUN_DIR or ./run)")
    top_common.add_argument("--json", action="store_true",
                            help="print one JSON object (the summary) on stdout")
    top_common.add_argument("--progress", action=argparse.BooleanOptionalAction,
                            help="progress on stderr (default: only when stderr is a TTY)")
    top_common.add_argument("--connect-timeout", type=positive_float, metavar="S",
                            help="how long to wait for the kernel to answer (default 10)")
    p = argparse.ArgumentParser(prog=prog, parents=[top_common],
                                description="machemu load generator: named workloads "
                                            "run by N client tasks (OS processes).")
    sub = p.add_subparsers(dest="workload", metavar="WORKLOAD", required=True)
    # Options given before the workload name must not be reset by the subcommand's
    # defaults: the subparser copies default to SUPPRESS.
    sub_common = argparse.ArgumentParser(add_help=False)
    for a in top_common._actions:
        kw = {"dest": a.dest, "default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
        if isinstance(a, argparse._StoreTrueAction):
            sub_common.add_argument(*a.option_strings, action="store_true", **kw)
        elif isinstance(a, argparse.BooleanOptionalAction):
            sub_common.add_argument(*a.option_strings, action=argparse.BooleanOptionalAction,
                                    **kw)
        else:
            sub_common.add_argument(*a.option_strings, type=a.type, metavar=a.metavar, **kw)
    g = sub_common.add_argument_group("load")
    g.add_argument("--tasks", type=positive_int, default=1, metavar="N",
                   help="client tasks, each a separate OS process (default 1)")
    g.add_argument("--threads", type=positive_int, default=1, metavar="N",
                   help="threads per task (default 1)")
    m = g.add_mutually_exclusive_group()
    m.add_argument("--duration", type=positive_float, metavar="S",
                   help="run for S seconds (the default mode)")
    m.add_argument("--count", type=int, metavar="N",
                   help="N operations in all, split evenly over tasks and threads")
    g.add_argument("--start-timeout", type=positive_float, default=60.0, metavar="S",
                   help="how long tasks may take to start and connect (default 60)")
    for name, cls in WORKLOADS.items():
        wl = cls()
        sp = sub.add_parser(name, parents=[sub_common], help=cls.help, description=cls.help)
        wl.add_arguments(sp)
        sp.set_defaults(workload_obj=wl)
    return p


def main(argv=None) -> int:
    parser = build_parser(os.path.basename(sys.argv[0]) or "loadgen")
    args = parser.parse_args(argv)
    wl: Workload = args.workload_obj
    del args.workload_obj  # the instance stays in the parent; tasks make their own
    if args.run_dir is None:
        args.run_dir = os.environ.get("MACHEMU_RUN_DIR") or "run"
    args.run_dir = str(Path(args.run_dir).resolve())
    if args.connect_timeout is None:
        args.connect_timeout = 10.0
    if args.progress is None:
        args.progress = sys.stderr.isatty()
    if args.count is not None and args.count < 0:
        parser.error("--count must be >= 0")
    if wl.fixed_work:
        if args.count is not None:
            parser.error(f"{wl.name} does a fixed amount of work: no --count"
                         " (--duration is a time limit)")
    elif args.count is None and args.duration is None:
        args.duration = wl.default_duration
    wl.check_args(args, parser)
    try:
        logs.setup("loadgen", Path(args.run_dir) / "loadgen.log")
    except OSError:
        logs.setup("loadgen", os.devnull)
    try:
        summary, code = run(wl, args)
    except ClusterError as e:
        if args.json:
            print(json.dumps({"workload": wl.name, "run_dir": args.run_dir,
                              "error": str(e), "exit_status": EXIT_UNREACHABLE}))
        print(f"loadgen: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.json:
        print(json.dumps(summary))
    else:
        print(table(wl, summary))
    sys.stdout.flush()
    return code
