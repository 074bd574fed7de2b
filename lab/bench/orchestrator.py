"""The bench's orchestrator: starts the floor, kernels, memfs, ext2fs and the measuring
roles (lab.bench.role) in one temporary run directory, through lab.process, collects
what each reports and returns the rows (lab.bench.rows).

The floor is measured in two halves, one before the kernel paths and one after, so a
change of load on the host during the run weighs on both sides of each ratio alike.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import psutil

from lab.bench import rows
from lab.bench.profile import Profiler
from lab.process import Child, ProcessError, python_argv, read_line, stop_all, wait_ready
from lab.rundir import RunDir
from protocol.vm_param import PAGE_SIZE

ROLE = "lab.bench.role"  # python -m ROLE NAME ARGS: every measuring process
SERVER_NAME = "bench"    # the server task's name in the name server
MEMFS_NAME = "memfs"
EXT2_NAME = "ext2fs"
RSS_PAGES = 262144       # physical_pages of the kernel whose RSS per page is measured
RSS_CHUNK = 4 << 20      # bytes per vm_write while touching frames (MAX_OOL_BYTES)
STOP_TIMEOUT = 5.0       # seconds from SIGTERM to SIGKILL when stopping a process
# What --only may name; the floor is measured in every run.
STAGES = ("kernel", "trace", "vm", "lookups", "rss", "ext2")


def stages_run(only: list[str] | None) -> set[str]:
    """The stages a run with ``--only`` ``only`` (None: all of STAGES) measures: "trace"
    and "vm" run on the kernel the "kernel" stage starts (and the traced null RPC is
    compared with its untraced one), so either brings "kernel" in."""
    run = set(only or STAGES)
    if run & {"trace", "vm"}:
        run.add("kernel")
    return run


class BenchError(RuntimeError):
    """A measurement that could not be made: a process died, failed or did not answer."""


def cpu_watch(children: dict[str, Child]) -> dict:
    """The CPU seconds each child has used so far, to pass to ``cpu_used`` later."""
    out = {}
    for name, c in children.items():
        try:
            ps = psutil.Process(c.pid)
            t = ps.cpu_times()
            out[name] = (ps, t.user + t.system)
        except psutil.Error:
            out[name] = (None, 0.0)
    return out


def cpu_used(watched: dict, wall: float) -> dict[str, float]:
    """CPU each watched process used since ``cpu_watch``, in percent of one core over
    ``wall`` seconds (0 for one that is gone)."""
    out = {}
    for name, (ps, before) in watched.items():
        try:
            t = ps.cpu_times()
            out[name] = 100.0 * (t.user + t.system - before) / wall
        except (psutil.Error, AttributeError):
            out[name] = 0.0
    return out


def ext2_stats(log: Path, min_syncs: int) -> dict | None:
    """ext2fs's last "stats" log record once its counter of syncs reached ``min_syncs``,
    None before."""
    last = None
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and r.get("event") == "stats" and r.get("syncs", 0) >= min_syncs:
            last = r
    return last


class Bench:
    """One bench run: its options, its run directory and every process started in it
    (stopped by ``run`` at the end, whatever happens)."""

    def __init__(self, args, progress: Callable[[str], None], rd: RunDir):
        self.args, self.progress, self.rd = args, progress, rd
        self.children: list[Child] = []
        self.floor_endpoint = f"ipc://{rd.path}/floor.sock"

    # ------------------------------------------------------------ processes

    def start(self, name: str, argv: list[str], rd: RunDir | None = None, **kw) -> Child:
        """A child ``name`` writing DIR/NAME.out in ``rd`` (default: the run's)."""
        c = Child(name, argv, (rd or self.rd).path, **kw)
        self.children.append(c)
        return c

    def role(self, name: str, role: str, *args, rd: RunDir | None = None, **kw) -> Child:
        """A measuring process ``name`` running ``role`` (lab.bench.role) with ``args``."""
        return self.start(name, python_argv(ROLE, role, *args), rd, **kw)

    def kernel(self, name: str, rd: RunDir, timeout: float, config: dict | None = None):
        """A kernel serving ``rd`` (with the [kernel] settings ``config``), once ready."""
        argv = python_argv("kernel", "--run-dir", rd.path)
        if config:
            argv += ["--config", str(rd.write_kernel_toml(config))]
        c = self.start(name, argv, rd)
        self.ready(c, rd, "kernel", timeout)
        return c

    def ready(self, child: Child, rd: RunDir, server: str, timeout: float):
        """Wait until ``server`` (run by ``child``) wrote its ready file in ``rd``."""
        wait_ready([child], timeout, ready=lambda c: rd.ready_file(server).exists())

    def finish(self, child: Child, timeout: float):
        """Wait until ``child`` exits, which it must do with status 0."""
        if child.wait(timeout) is None:
            raise BenchError(f"{child.name} did not finish within {timeout}s")
        if child.poll() != 0:
            raise BenchError(f"{child.name} failed ({child.poll()}):\n{child.output(20)}")

    def result(self, child: Child, out: Path, timeout: float) -> dict:
        """What ``child`` wrote to ``out`` (JSON), once it finished."""
        self.finish(child, timeout)
        return json.loads(out.read_text())

    def answer(self, child: Child, timeout: float) -> dict:
        """The JSON line ``child`` prints next on its stdout."""
        line = read_line(child, timeout)
        try:
            return json.loads(line)
        except ValueError:
            raise BenchError(f"{child.name}: bad result {line!r}\n{child.output(20)}") from None

    @staticmethod
    def tell(child: Child, line: str):
        """Write ``line`` to ``child``'s stdin pipe."""
        child.popen.stdin.write(line.encode() + b"\n")
        child.popen.stdin.flush()

    # ------------------------------------------------------------ measurements

    def measure(self) -> list[dict]:
        """Every measurement, in order; the result rows."""
        a = self.args
        self.progress("floor: starting two bare zmq processes")
        fs = self.role("floor-server", "floor-server", self.floor_endpoint,
                       self.rd.ready_file("floor-server"))
        self.ready(fs, self.rd, "floor-server", 30)
        only = stages_run(a.only)
        # The kernel stages run between the floor's two halves, the others after them.
        floor = [self.floor_half(0)]
        got = {name: measure() for name, measure in (
            ("kernel", self.kernel_paths), ("trace", self.trace_cost),
            ("vm", self.vm_paths)) if name in only}
        floor.append(self.floor_half(1))
        got.update({name: measure() for name, measure in (
            ("lookups", self.map_lookups), ("rss", self.kernel_rss),
            ("ext2", self.ext2_writeback)) if name in only})
        self.progress("done")
        fr, rate = rows.floor_summary(floor)
        rows_of = {
            "kernel": lambda: rows.kernel_rows(fr, rate, *got["kernel"], os.cpu_count() or 1),
            "trace": lambda: rows.trace_rows(fr, got["kernel"][0], got["trace"]),
            "vm": lambda: rows.vm_rows(fr, got["vm"]),
            "lookups": lambda: rows.lookup_rows(got["lookups"]),
            "rss": lambda: rows.rss_rows(got["rss"]),
            "ext2": lambda: rows.ext2_rows(got["ext2"], a.ext2_mib),
        }
        out = rows.floor_rows(fr, rate)
        for name in STAGES:
            if name in got:
                out += rows_of[name]()
        return out

    def floor_half(self, i: int) -> dict:
        """Half the floor's round trips and stream: floor client ``i``'s report."""
        a = self.args
        rounds, msgs = -(-a.rounds // 2), -(-a.messages // 2)
        self.progress(f"floor ({i + 1}/2): {rounds} round trips, {msgs} pipelined pages")
        name = f"floor-client{i}"
        out = self.rd.file(f"{name}.json")
        return self.result(self.role(name, "floor-client", self.floor_endpoint, rounds, msgs,
                                     out), out, a.timeout)

    def kernel_paths(self) -> tuple[dict, dict]:
        """The kernel, a bare server task, a client timing RPCs, senders streaming one-way
        messages: the client's report and the routed stream's totals."""
        a, rd = self.args, self.rd
        self.progress("kernel: starting kernel and server task")
        kp = self.kernel("kernel", rd, 30)
        sp = self.role("server", "server", rd.path, SERVER_NAME, a.server_threads, a.qlimit)
        self.ready(sp, rd, SERVER_NAME, 30)
        self.progress(f"kernel: {a.rounds} RPCs each of demo_null, demo_echo(4 KiB), "
                      "mach_port_type")
        out = rd.file("client.json")
        prof = self.profile(kp, "rpc")
        kern = self.result(self.role("client", "client", rd.path, "client", SERVER_NAME,
                                     a.rounds, out), out, a.timeout)
        self.profiled(prof, "rpc")

        self.progress(f"kernel: {a.routed} one-way demo_send from {a.senders} tasks x "
                      f"{a.sender_threads} threads")
        senders = []
        base, extra = divmod(a.routed, a.senders)
        for i in range(a.senders):
            n = base + (1 if i < extra else 0)
            senders.append(self.role(f"sender{i}", "sender", rd.path, f"sender{i}",
                                     SERVER_NAME, n, a.sender_threads,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        for s in senders:
            line = read_line(s, 60)
            if line != "ready":
                raise BenchError(f"{s.name} not ready: {line!r}\n{s.output(20)}")
        prof = self.profile(kp, "routed")
        watched = cpu_watch({"kernel": kp, "server": sp})
        t0 = time.monotonic()
        for s in senders:
            self.tell(s, "go")
        ends, total, sender_cpu = [], 0, 0.0
        for s in senders:
            r = self.answer(s, a.timeout)
            self.finish(s, a.timeout)
            ends.append(r["end"])
            total += r["sent"]
            sender_cpu += r["cpu"]
        wall = max(ends) - t0
        self.profiled(prof, "routed")
        cpu = cpu_used(watched, wall)
        return kern, {"sent": total, "wall": wall, "kernel_cpu": cpu["kernel"],
                      "server_cpu": cpu["server"], "senders_cpu_s": sender_cpu}

    def profile(self, kp: Child, stage: str) -> Profiler | None:
        """With --profile DIR: py-spy on the kernel ``kp`` for ``stage``."""
        d = self.args.profile
        if d is None:
            return None
        d.mkdir(parents=True, exist_ok=True)
        return Profiler(kp.pid, d / f"kernel-{stage}.raw")

    def profiled(self, prof: Profiler | None, stage: str):
        """Stop ``prof`` and write its summary to DIR/kernel-STAGE.txt."""
        if prof is not None:
            path = self.args.profile / f"kernel-{stage}.txt"
            path.write_text(prof.stop())
            self.progress(f"profile of the kernel during {stage}: {path}")

    def trace_cost(self) -> dict:
        """The client's RPCs again while rpctrace (lab.tools.rpctrace --json, every
        message) traces the kernel, then once more untraced (the load on the host may
        have changed since the first run): the traced report, with rpctrace's summary
        as "trace" and the untraced report after it as "after"."""
        rd = self.rd
        self.progress("kernel: the same RPCs while rpctrace traces every message, then "
                      "untraced again")
        tp = self.start("rpctrace", python_argv("lab.tools.rpctrace", "--run-dir", rd.path,
                                                "--json"))
        wait_ready([tp], 30, ready=lambda c: "rpctrace: tracing" in c.output())
        r = self.client_run("client-traced")
        tp.send_signal(signal.SIGINT)  # rpctrace stops its session and sums up
        self.finish(tp, 60)
        summary = [ln for ln in tp.output().splitlines() if ln.startswith('{"summary"')]
        if not summary:
            raise BenchError(f"rpctrace printed no summary:\n{tp.output(20)}")
        r["trace"] = json.loads(summary[-1])
        r["after"] = self.client_run("client-after")
        return r

    def client_run(self, name: str) -> dict:
        """The client role's report (null, echo, kobject latencies) as task ``name``."""
        a, rd = self.args, self.rd
        out = rd.file(f"{name}.json")
        return self.result(self.role(name, "client", rd.path, name, SERVER_NAME, a.rounds,
                                     out), out, a.timeout)

    def vm_paths(self) -> dict:
        """memfs (a pager) on the same kernel and a VM client: the client's report."""
        a, rd = self.args, self.rd
        self.progress("vm: starting memfs (--direct-io: io_write fills its page store)")
        mp = self.start(MEMFS_NAME, python_argv(
            "translators.memfs", "--run-dir", rd.path, "--name", MEMFS_NAME, "--direct-io",
            "--stats-interval", "0"))
        self.ready(mp, rd, MEMFS_NAME, 30)
        self.progress(f"vm: {a.rounds} resident vm_reads, {a.faults} cold faults from memfs "
                      f"({a.fault_pages} pages per file)")
        out = rd.file("vm.json")
        return self.result(self.role("vmclient", "vmclient", rd.path, "vmclient", MEMFS_NAME,
                                     a.rounds, a.faults, a.fault_pages, out), out, a.timeout)

    def map_lookups(self) -> dict:
        """The VM map's lookup structures, in a process of their own (no kernel)."""
        self.progress("vm: map lookups, list and tree, 100 / 10k / 100k entries")
        out = self.rd.file("maplookup.json")
        return self.result(self.role("maplookup", "maplookup", int(self.args.quick), out),
                           out, self.args.timeout)

    def kernel_rss(self) -> dict:
        """A kernel with RSS_PAGES physical pages, a task writing (nearly) every frame
        with 4 MiB vm_writes: the toucher's report plus the kernel's RSS while the task
        holds them ("rss") and before ("idle_rss")."""
        rd = RunDir(self.rd.path / "k256")
        rd.path.mkdir()
        self.progress(f"rss: starting a kernel with {RSS_PAGES} physical pages")
        kp = self.kernel("kernel256k", rd, 60, {"physical_pages": RSS_PAGES})
        try:
            kproc = psutil.Process(kp.pid)
            idle = kproc.memory_info().rss
            self.progress(f"rss: writing {RSS_PAGES * PAGE_SIZE >> 20} MiB in "
                          f"{RSS_CHUNK >> 20} MiB vm_writes")
            tp = self.role("toucher", "toucher", rd.path, "toucher", RSS_CHUNK, rd=rd,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            r = self.answer(tp, self.args.timeout)
            r["rss"] = kproc.memory_info().rss
            r["idle_rss"] = idle
            self.tell(tp, "done")
            self.finish(tp, 60)
            return r
        finally:
            kp.stop(STOP_TIMEOUT, STOP_TIMEOUT)  # give its gigabyte back now

    def ext2_writeback(self) -> dict:
        """``ext2_cluster`` for each data_return cluster size, by cluster size."""
        return {cluster: self.ext2_cluster(cluster) for cluster in rows.EXT2_CLUSTERS}

    def ext2_cluster(self, cluster: int) -> dict:
        """A fresh kernel with data_return_cluster ``cluster`` and a small physical
        memory, a fresh ext2fs (image 2x the file, no periodic sync), a sequential write
        of --ext2-mib MiB in 1 MiB io_writes, then fsys_syncfs: the writer's report with
        ext2fs's counters as "ext2fs"."""
        a = self.args
        rd = RunDir(self.rd.path / f"ext2c{cluster}")
        rd.path.mkdir()
        self.progress(f"ext2: kernel ({a.ext2_pages} pages, data_return_cluster {cluster}), "
                      f"ext2fs, {a.ext2_mib} MiB sequential write + fsys_syncfs")
        kp = self.kernel(f"kernel-ext2c{cluster}", rd, 60,
                         {"physical_pages": a.ext2_pages, "data_return_cluster": cluster})
        try:
            ep = self.start(f"ext2fs-c{cluster}", python_argv(
                "translators.ext2fs", "--run-dir", rd.path, "--name", EXT2_NAME,
                "--size-mib", max(64, 2 * a.ext2_mib), "--sync-interval", "0",
                "--stats-interval", "0.2"), rd)
            self.ready(ep, rd, EXT2_NAME, 60)
            out = rd.file("writer.json")
            r = self.result(self.role(f"ext2writer-c{cluster}", "ext2writer", rd.path,
                                      "ext2writer", EXT2_NAME, a.ext2_mib, out, rd=rd),
                            out, a.timeout)
            log = rd.log_file(EXT2_NAME)
            wait_ready([ep], 30, ready=lambda c: ext2_stats(log, 1) is not None)
            r["ext2fs"] = ext2_stats(log, 1)
            ep.stop(STOP_TIMEOUT, STOP_TIMEOUT)
            return r
        finally:
            kp.stop(STOP_TIMEOUT, STOP_TIMEOUT)


def run(args, progress: Callable[[str], None]) -> list[dict]:
    """Measure the floor and the kernel paths in a fresh run directory; the result rows.
    Every process is stopped and the directory removed (kept with ``args.keep``) on the
    way out, also on an error or an interrupt."""
    tmp = Path(tempfile.mkdtemp(prefix="mxb", dir="/tmp"))
    print(f"bench: run dir {tmp}", file=sys.stderr, flush=True)
    bench = Bench(args, progress, RunDir(tmp))
    try:
        return bench.measure()
    except ProcessError as e:
        child = e.args[1] if len(e.args) > 1 else None
        raise BenchError(f"{e.args[0]}\n{child.output(20)}" if child else str(e)) from None
    finally:
        # A second Ctrl-C must not cut the cleanup short: hold signals until it is done.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            stop_all(bench.children, STOP_TIMEOUT, STOP_TIMEOUT)
            if args.keep:
                print(f"bench: run dir kept: {tmp}", file=sys.stderr)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
