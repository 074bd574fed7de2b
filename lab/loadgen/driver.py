"""The load generator's driver: a workload run by a pool of client tasks.

Every task is an OS process of its own (multiprocessing 'spawn': a fresh interpreter, its
own TaskRuntime and kernel connection) with ``--threads`` threads, for a duration, a total
count split over tasks and threads, or a fixed amount of work.  The driver times each
operation, counts MachErrors by code name, samples the watched processes, shows progress
and builds the summary.  Tasks report to the parent through a multiprocessing Queue:
("ready", i), ("progress", i, done, errors), ("result", i, dict), ("fatal", i, why).
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path

import structlog

from lab.client import ClusterClient, ClusterError, connect_task, err_name, reset_reply_port
from lab.loadgen.latency import EXACT_CAP_TASK, EXACT_CAP_TOTAL, Latencies, Meter
from lab.loadgen.sampler import Sampler
from lab.loadgen.workload import Done, VerifyError, Workload
from protocol import logs, runtime
from protocol.kern_return import MachError, MachMsgReturn, MigReturn

# Exit statuses.
EXIT_OK, EXIT_FAILED, EXIT_UNREACHABLE = 0, 1, 2

PROGRESS_INTERVAL = 0.25      # how often a task reports its counts (s)
# After these the thread's reply port may still get the late reply: drop it.
_STALE_REPLY_CODES = (MachMsgReturn.MACH_RCV_TIMED_OUT, MigReturn.MIG_REPLY_MISMATCH,
                      MachMsgReturn.MACH_RCV_INTERRUPTED)


def split_count(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` shares differing by at most one, larger first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def setup_logs(name: str, run_dir: str, file: str):
    """structlog JSON lines to DIR/FILE, or nowhere if the run directory is not
    writable."""
    try:
        logs.setup(name, Path(run_dir) / file)
    except OSError:
        logs.setup(name, os.devnull)


# ---------------------------------------------------------------- task processes

def _task_main(wl_cls: type[Workload], args, index: int, quotas, prepared, endpoint: str,
               q, go, stop):
    """One client task (an OS process): connect, set up, wait for the start, run the
    threads, send the counts and latencies back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us through ``stop``
    wname = wl_cls.name
    setup_logs(f"loadgen.{wname}.{index}", args.run_dir, f"loadgen.{index}.log")
    wl = wl_cls()
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
    """Run the task's threads (one per quota) to the end, reporting progress every
    PROGRESS_INTERVAL; then send the task's result."""
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
        "pid": os.getpid(), "threads": len(quotas), "counters": counters,
        "extra": wl.task_extra(state)}))


def _thread_main(wl, rt, args, state, task, thread, meter, quota, deadline, local_stop):
    """One client thread: repeat the workload's op until its quota, the deadline, the
    stop, Done or a fatal error, timing and counting each call in ``meter``."""
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
                if e.code in _STALE_REPLY_CODES:
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

class TaskPool:
    """The task processes of one run, and what they reported: ``status`` (starting,
    ready, running, done, failed), ``results``, ``fatal`` (why a task failed) and
    ``counts`` (the latest progress, (done, errors))."""

    ACTIVE = ("starting", "ready", "running")

    def __init__(self, wl: Workload, args, quotas: list, prepared: dict, endpoint: str):
        self.wl, self.args, self.quotas = wl, args, quotas
        self.prepared, self.endpoint = prepared, endpoint
        self.ctx = multiprocessing.get_context("spawn")
        self.q = self.ctx.Queue(maxsize=max(64, 8 * args.tasks))
        self.go, self.stop = self.ctx.Event(), self.ctx.Event()
        self.procs: list = []
        self.status = {i: "starting" for i in range(args.tasks)}
        self.results: dict[int, dict] = {}
        self.fatal: dict[int, str] = {}
        self.counts: dict[int, tuple[int, int]] = {}

    def start(self):
        """Start every task process."""
        for i in range(self.args.tasks):
            p = self.ctx.Process(target=_task_main, name=f"loadgen-{i}",
                                 args=(type(self.wl), self.args, i, self.quotas[i],
                                       self.prepared, self.endpoint, self.q, self.go,
                                       self.stop), daemon=True)
            p.start()
            self.procs.append(p)

    def _handle(self, msg):
        kind, i = msg[0], msg[1]
        if kind == "ready":
            self.status[i] = "ready"
        elif kind == "progress":
            self.counts[i] = (msg[2], msg[3])
        elif kind == "result":
            self.results[i] = msg[2]
            self.status[i] = "done"
        elif kind == "fatal":
            self.fatal[i] = msg[2]
            self.status[i] = "failed"

    def pump(self, timeout: float):
        """Take the tasks' messages (waiting up to ``timeout`` for the first); a task
        process that exited without its result is failed."""
        try:
            self._handle(self.q.get(timeout=timeout))
            while True:
                self._handle(self.q.get_nowait())
        except queue.Empty:
            pass
        for i, p in enumerate(self.procs):
            if self.status[i] in self.ACTIVE and not p.is_alive():
                # Anything it sent before exiting is already in the pipe.
                try:
                    while True:
                        self._handle(self.q.get(timeout=0.2))
                except queue.Empty:
                    pass
                if self.status[i] in self.ACTIVE:
                    self.fatal[i] = _died(p.exitcode, self.counts.get(i), self.wl.unit)
                    self.status[i] = "failed"

    def wait_ready(self, timeout: float):
        """Wait until every task is set up (or one failed); a task not ready within
        ``timeout`` seconds is failed."""
        deadline = time.monotonic() + timeout
        while any(s == "starting" for s in self.status.values()) and not self.fatal:
            if time.monotonic() > deadline:
                for i, s in self.status.items():
                    if s == "starting":
                        self.fatal[i] = "did not get ready in time"
                break
            self.pump(0.1)

    def abort(self):
        """Tell every task to stop without starting."""
        self.stop.set()
        self.go.set()

    def release(self):
        """Start every task's threads at once."""
        for i in self.status:
            self.status[i] = "running"
        self.go.set()

    def running(self) -> bool:
        return any(s == "running" for s in self.status.values())

    def progress(self) -> tuple[int, int]:
        """(done, errors) over all tasks, as last reported."""
        return (sum(c[0] for c in self.counts.values()),
                sum(c[1] for c in self.counts.values()))

    def join(self):
        """Wait for every task process to exit; terminate those that do not."""
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)


def _died(exitcode, counts, unit: str) -> str:
    """Why a task process ended without its result, and what went with it."""
    if exitcode is not None and exitcode < 0:
        try:
            how = f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"killed by signal {-exitcode}"
    else:
        how = f"exited with status {exitcode}"
    done, errors = counts if counts is not None else (0, 0)
    return (f"task process {how}; lost: its result (latencies, verification) and "
            f"{done} {unit} ({errors} errors) it had reported")


class Progress:
    """The workload's progress on stderr: on a terminal a rich bar (against the run's
    seconds, or its operations with --count) with the counts beside it, refreshed in
    place; otherwise one plain line a second."""

    def __init__(self, enabled: bool, label: str, unit: str, total_s: float | None = None,
                 total_ops: int | None = None):
        self.enabled, self.label, self.unit = enabled, label, unit
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.every = 0.25 if self.tty else 1.0
        self.shown = False
        self.total_s, self.total_ops = total_s, total_ops
        self.bar = self.task = None

    def _line(self, elapsed, ops, errors, sampler, watch_key, extra) -> str:
        rate = ops / elapsed if elapsed > 0 else 0.0
        line = f"{self.unit} {ops}  {rate:.0f}/s  errors {errors}"
        if sampler is not None and watch_key:
            s = sampler.last(watch_key)
            if s:
                line += f"  {watch_key} threads {s[1]} rss {s[2] / 2**20:.1f} MiB"
        if extra is not None:
            more = extra()
            if more:
                line += "  " + more
        return line

    def _rich(self):
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bars

        self.bar = Bars(TextColumn("{task.description}"), BarColumn(bar_width=24),
                        TimeElapsedColumn(), TextColumn("{task.fields[line]}"),
                        console=Console(file=sys.stderr), transient=False)
        total = self.total_ops or self.total_s
        self.task = self.bar.add_task(self.label, total=total, line="")
        self.bar.start()

    def show(self, elapsed, ops, errors, sampler: Sampler | None, watch_key=None,
             force=False, extra=None):
        """Show the counts (at most every ``every`` seconds unless ``force``), the last
        sample of ``watch_key`` and what ``extra()`` returns."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        line = self._line(elapsed, ops, errors, sampler, watch_key, extra)
        self.shown = True
        if self.tty:
            if self.bar is None:
                self._rich()
            done = ops if self.total_ops else elapsed
            self.bar.update(self.task, completed=done, line=line)
            return
        sys.stderr.write(f"{self.label} {elapsed:6.1f}s  {line}\n")
        sys.stderr.flush()

    def done(self):
        """End the progress display."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def run(wl: Workload, args) -> tuple[dict, int]:
    """Run a workload from the parent; returns (summary, exit status).  ClusterError
    when the cluster cannot be reached or a task could not start."""
    quotas = ([split_count(c, args.threads) for c in split_count(args.count, args.tasks)]
              if args.count is not None else [[None] * args.threads] * args.tasks)
    cluster = ClusterClient(args.run_dir, args.connect_timeout, name="loadgen")
    cluster.connect()
    sampler = pool = None
    try:
        prepared = wl.prepare(cluster, args)
        watched = wl.watch(cluster, args, prepared)
        watched.setdefault("kernel", cluster.kernel_pid())
        sampler = Sampler(watched)
        sampler.sample()
        sampler.start()
        ki0 = cluster.kernel_info()

        pool = TaskPool(wl, args, quotas, prepared, cluster.endpoint)
        pool.start()
        progress = Progress(args.progress, f"{wl.name}", wl.progress_unit or wl.unit,
                            total_s=None if getattr(args, "count", None) else
                            getattr(args, "duration", None),
                            total_ops=getattr(args, "count", None))
        interrupted = False
        # Start together: every task connected and set up before the clock starts.
        try:
            pool.wait_ready(args.start_timeout)
        except KeyboardInterrupt:
            interrupted = True
        if pool.fatal or interrupted:
            pool.abort()
            raise ClusterError("; ".join(f"task {i}: {m}" for i, m in sorted(pool.fatal.items()))
                               or "interrupted")
        pool.release()
        t_go = time.monotonic()
        while pool.running():
            try:
                pool.pump(0.1)
                ops, errs = pool.progress()
                progress.show(time.monotonic() - t_go, ops, errs, sampler,
                              "server" if "server" in watched else None,
                              extra=lambda: wl.progress_extra(cluster, args, prepared))
            except KeyboardInterrupt:
                if interrupted:
                    break
                interrupted = True
                pool.stop.set()
        progress.done()
        sampler.stop()
        ki1 = cluster.kernel_info()
        wl.finish(cluster, args, prepared)
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        if pool is not None:
            pool.join()
        cluster.close()

    summary = summarize(wl, args, cluster.endpoint, pool.results, pool.fatal, interrupted)
    for k in watched:
        summary[k] = sampler.report(k)
    summary.setdefault("kernel", {})
    summary["kernel"]["rss"] = ki1["kernel"]["rss"] if ki1 else None
    summary["kernel"]["rss_start"] = ki0["kernel"]["rss"] if ki0 else None
    if ki1:
        summary["kernel"]["stats"] = ki1.get("stats", {})
    # What tasks reported beyond summed counters, for the workload's own summary.
    prepared["task_extra"] = [r["extra"] for r in pool.results.values()
                              if r.get("extra") is not None]
    wl.summarize(summary, args, prepared)
    code, failure = exit_status(wl, summary, kernel_answered=ki1 is not None)
    if failure:
        summary["failure"] = failure
    summary["exit_status"] = code
    return summary, code


def summarize(wl: Workload, args, endpoint: str, results: dict, fatal: dict,
              interrupted: bool) -> dict:
    """The summary of the tasks' results: counts, errors by name, rate, latencies, the
    tasks that failed, the workloads' counters summed."""
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
    return {
        "workload": wl.name, "run_dir": str(args.run_dir), "endpoint": endpoint,
        "tasks": args.tasks, "threads_per_task": args.threads,
        "threads": args.tasks * args.threads,
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


def exit_status(wl: Workload, s: dict, kernel_answered: bool) -> tuple[int, str | None]:
    """The run's exit status and, when it failed, why: the kernel gone, data mismatches,
    a task that died (its results are not in the summary), every operation failed, or
    the workload's own check."""
    own_failure = wl.check(s)
    unit = wl.unit
    if "KERNEL_GONE" in s["errors"] or (not kernel_answered and s[unit]):
        return EXIT_UNREACHABLE, "the kernel stopped answering"
    if s["mismatches"]:
        return EXIT_FAILED, f"{s['mismatches']} verification failures (data mismatch)"
    if s.get("task_failures"):
        return EXIT_FAILED, "; ".join(f"task {i} failed: {m}"
                                      for i, m in s["task_failures"].items())
    if s["ok"] == 0:
        return EXIT_FAILED, f"every {unit[:-1] if unit.endswith('s') else unit} failed"
    if own_failure:
        return EXIT_FAILED, own_failure
    return EXIT_OK, None
