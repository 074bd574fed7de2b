"""A cluster: one kernel process and the servers (translators) of a config, started,
supervised and stopped in order.

The process that runs a Cluster is the servers' parent, as the Hurd's bootstrap is the
parent of its first servers: it starts the kernel and waits for DIR/kernel.ready, starts
the default pager(s) and waits for them (the others' memory may need paging), starts the
rest and waits for each DIR/NAME.ready, then writes DIR/cluster.json (and DIR/launch.pid)
so that ``launch status`` and ``launch stop`` find them.

Supervision: a server that dies is reported (``warn`` and the log, with the tail of its
output) and the rest keep running; a dead kernel ends the cluster.  ``stop()`` sends
SIGTERM to the servers, last started first, then to the kernel, and SIGKILLs what is still
there after a deadline.

Used by ``launch`` (which adds signal handling: ``install_signals``), and directly::

    with Cluster(run_dir, kernel_table={"physical_pages": 2048}, servers=[...]) as cl:
        ... cl.endpoint ...
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Callable

import psutil
import structlog

from lab.config import DEFAULT_PAGER_ROLE, default_servers
from lab.process import (
    Child,
    ProcessError,
    child_env,
    describe_exit,
    gone,
    python_argv,
    stop_all,
    tail,
    wait_exit,
    wait_ready,
)
from lab.rundir import RunDir

READY_TIMEOUT = 90.0  # per process, generous: a loaded 2-core machine imports slowly
SERVER_STOP_TIMEOUT = 15.0
KERNEL_STOP_TIMEOUT = 10.0
KILL_TIMEOUT = 5.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class ClusterError(Exception):
    """A cluster that cannot start (another one there, a process that died or did not
    get ready, a bad [kernel] table); the message says which and why."""


def kernel_argv(run_dir, config: Path | None = None) -> list[str]:
    """``python -m kernel --run-dir DIR [--config FILE]``."""
    return python_argv("kernel", "--run-dir", run_dir, *(["--config", config] if config else []))


def server_argv(module: str, run_dir, name: str, args=(), threads: str | None = None) -> list[str]:
    """``python -m MODULE --run-dir DIR --name NAME ARGS``, with ``--threads THREADS``
    unless ARGS choose their own thread model."""
    argv = python_argv(module, "--run-dir", run_dir, "--name", name, *args)
    if threads and "--threads" not in args:
        argv += ["--threads", threads]
    return argv


def entry(c: Child) -> dict:
    """A process as cluster.json lists it."""
    return {"name": c.name, "role": c.role, "pid": c.pid, "log": str(c.log),
            "stderr": str(c.out), "argv": c.argv}


def live_launcher(rd: RunDir) -> psutil.Process | None:
    """The launcher recorded in DIR/launch.pid, if it still runs (and is not us)."""
    pid = rd.launcher_pid()
    if pid is None or pid == os.getpid():
        return None
    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        if not any("launch" in a for a in p.cmdline()):
            return None  # the pid was reused
        return p
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def recorded_processes(description: dict, rd: RunDir) -> list[tuple[dict, psutil.Process]]:
    """The processes of a cluster.json still running, each (its entry, the process);
    pids reused by other processes since are left out."""
    out = []
    started = float(description.get("started", 0))
    for e in description.get("processes", []):
        try:
            p = psutil.Process(int(e["pid"]))
            if gone(p):
                continue
            if p.create_time() < started - 2 or str(rd) not in " ".join(p.cmdline()):
                continue
            out.append((e, p))
        except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
            continue
    return out


class Cluster:
    """The kernel and servers of one run directory.

    ``servers``: ``{name, module, args, role}`` dicts (lab.config; default the default
    servers); ``kernel_table``: the [kernel] settings (None: the kernel's defaults);
    ``threads``: the libports thread model of every server; ``warn(text)``: where reports
    for a person go (deaths, stragglers; default nowhere but the log); ``log``: a structlog
    logger (default structlog's, as the caller configured it with protocol.logs.setup);
    ``launcher``: write DIR/launch.pid (``launch stop`` signals this process).

    ``prepare(fresh)`` (called by ``start`` if not done) refuses a run directory with a
    live launcher or kernel (ClusterError) or a socket path too long (RunDirError).
    """

    def __init__(self, run_dir: RunDir | str | os.PathLike, kernel_table: dict | None = None,
                 servers: list[dict] | None = None, threads: str | None = None, *,
                 warn: Callable[[str], None] | None = None, log=None,
                 ready_timeout: float = READY_TIMEOUT, launcher: bool = True):
        self.rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.run_dir = self.rd.path
        self.kernel_table = kernel_table
        self.servers = default_servers() if servers is None else servers
        self.threads = threads
        self.warn = warn or (lambda text: None)
        self.log = log or structlog.get_logger("cluster")
        self.ready_timeout = ready_timeout
        self.launcher = launcher
        self.children: list[Child] = []
        self.kernel: Child | None = None
        self.endpoint: str | None = None
        self.started = time.time()
        self.stop_signal: int | None = None
        self.failures: list[str] = []
        self.prepared = self.stopped = False
        self._sig_r = self._sig_w = None  # the wakeup fd pair, while signals are ours
        self._old_handlers: dict = {}
        self._old_wakeup = -1

    def __enter__(self) -> "Cluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def names(self) -> list[str]:
        return ["kernel", *(s["name"] for s in self.servers)]

    def child(self, name: str) -> Child | None:
        """The started process called ``name``, or None."""
        return next((c for c in self.children if c.name == name), None)

    # ------------------------------------------------------------ signals

    def install_signals(self):
        """Turn SIGINT, SIGTERM and SIGHUP into a stop request (``stop_signal``) that
        wakes ``wait_event``.  Main thread only."""
        self._sig_r, self._sig_w = socket.socketpair()
        self._sig_r.setblocking(False)
        self._sig_w.setblocking(False)
        self._old_wakeup = signal.set_wakeup_fd(self._sig_w.fileno(), warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def restore_signals(self):
        """Put back the handlers install_signals replaced, and close its wakeup fds."""
        for sig, h in self._old_handlers.items():
            signal.signal(sig, h)
        self._old_handlers.clear()
        if self._sig_r is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            self._sig_r.close()
            self._sig_w.close()
            self._sig_r = self._sig_w = None

    def _on_signal(self, signum, frame):
        if self.stop_signal is None:
            self.stop_signal = signum

    def wait_event(self, timeout: float | None, extra: list[Child] = ()):
        """Sleep until a child (of the cluster, or in ``extra``) exits, a stop signal
        arrives, or ``timeout`` passes."""
        fds = [self._sig_r.fileno()] if self._sig_r is not None else []
        if wait_exit([*self.children, *extra], timeout, fds):
            try:
                self._sig_r.recv(4096)
            except BlockingIOError:
                pass

    # ------------------------------------------------------------ start

    def env(self) -> dict:
        """The environment of the cluster's processes (and of its workloads)."""
        return child_env(self.run_dir, self.endpoint)

    def prepare(self, fresh: bool = False):
        """Make the run directory ready (lab.rundir.RunDir.prepare; ``fresh``: last run's
        logs removed); ClusterError if a launcher or a kernel already runs there."""
        rd = self.rd
        rd.check_socket_path()
        if (p := live_launcher(rd)) is not None:
            raise ClusterError(f"a launcher (pid {p.pid}) already runs a cluster in {rd};"
                               f" stop it first: scripts/launch stop --run-dir {rd}")
        if rd.kernel_listening():
            raise ClusterError(f"a kernel is listening on {rd.socket}; stop it first")
        rd.prepare(self.names, fresh)
        self.prepared = True

    def spawn(self, name: str, role: str, argv: list[str]) -> Child:
        """Start one process of the cluster (output to DIR/NAME.out)."""
        c = Child(name, argv, self.run_dir, role=role, env=self.env(), group=False, cwd=None)
        self.children.append(c)
        self.log.info("process started", name=name, role=role, child_pid=c.pid, argv=argv)
        return c

    def wait_ready(self, children: list[Child]):
        """Wait for every child's ready file; ClusterError if one dies (reported), a stop
        signal comes, or the deadline passes (the last output of those not ready warned)."""
        def interrupted():
            if self.stop_signal is not None:
                return (f"interrupted by {signal.Signals(self.stop_signal).name}"
                        " while starting")
            return None

        try:
            wait_ready(children, self.ready_timeout, interrupted=interrupted,
                       sleep=self.wait_event,
                       on_ready=lambda c: self.log.info("process ready", name=c.name,
                                                        child_pid=c.pid))
        except ProcessError as e:
            c = e.child
            if c is not None and not c.alive():
                self.report_death(c, "before it was ready")
                raise ClusterError(f"{c.name} died before it was ready") from None
            if c is not None:
                for p in children:
                    if not p.ready_file.exists():
                        self.warn(f"{p.name} (pid {p.pid}) not ready after"
                                  f" {self.ready_timeout:.0f}s; last output:\n"
                                  f"{tail(p.out) or '(none)'}")
            raise ClusterError(str(e)) from None

    def start(self):
        """Start the kernel, then the default pager(s), then the other servers, each
        group ready before the next; then write cluster.json (and launch.pid).
        ClusterError if that cannot be done (what was started keeps running: stop())."""
        if not self.prepared:
            self.prepare()
        rd = self.rd
        config = None
        if self.kernel_table is not None:
            try:
                config = rd.write_kernel_toml(self.kernel_table)
            except ValueError as e:
                raise ClusterError(str(e)) from None
        self.kernel = self.spawn("kernel", "kernel", kernel_argv(rd, config))
        self.wait_ready([self.kernel])
        self.endpoint = rd.kernel_endpoint()
        # The default pager before the rest: a server's pages may have to go to it.
        first = [s for s in self.servers if s["role"] == DEFAULT_PAGER_ROLE]
        rest = [s for s in self.servers if s["role"] != DEFAULT_PAGER_ROLE]
        for group in (first, rest):
            self.wait_ready([self.spawn(s["name"], s["role"], server_argv(
                s["module"], rd, s["name"], s["args"], self.threads)) for s in group])
        if self.launcher:
            rd.write_launcher_pid()
        rd.write_cluster(self.description())
        self.log.info("cluster ready", endpoint=self.endpoint,
                      processes=[c.name for c in self.children])

    def description(self) -> dict:
        """What cluster.json says: run directory, kernel, processes, launcher, start."""
        return {"run_dir": str(self.run_dir),
                "kernel": {"endpoint": self.endpoint, "pid": self.kernel.pid},
                "processes": [entry(c) for c in self.children],
                "launcher_pid": os.getpid(), "started": self.started}

    # ------------------------------------------------------------ supervise

    def report_death(self, c: Child, when: str = "unexpectedly"):
        """Report (once) that ``c`` died: the failure is kept in ``failures``, logged, and
        warned with the tail of its output and log."""
        if c.reported:
            return
        c.reported = True
        code = c.poll()
        msg = f"{c.name} (pid {c.pid}, {c.role}) died {when}: {describe_exit(code)}"
        self.failures.append(msg)
        self.log.error("process died", name=c.name, child_pid=c.pid, role=c.role,
                       returncode=code, when=when, stderr_tail=tail(c.out, 40))
        self.warn(msg)
        if err := tail(c.out):
            self.warn(f"last output of {c.name} ({c.out}):\n{err}")
        if lg := tail(c.log, 5):
            self.warn(f"last log lines of {c.name} ({c.log}):\n{lg}")

    def check_children(self) -> bool:
        """Report children that died unexpectedly (a dead server is marked in
        cluster.json); False if the kernel is among them."""
        ok = True
        for c in self.children:
            if not c.alive() and not c.expected_exit and not c.reported:
                self.report_death(c)
                if c is self.kernel:
                    ok = False
                else:
                    self.rd.mark_exit(c.pid, c.poll())
        return ok

    def supervise(self):
        """Report deaths until a stop signal comes or the kernel dies."""
        while self.stop_signal is None:
            if not self.check_children():
                self.warn("the kernel is gone: stopping the cluster")
                return
            self.wait_event(None)
        self.log.info("stop requested", signal=signal.Signals(self.stop_signal).name)

    def run_workload(self, name: str, argv: list[str], limit: float) -> int | None:
        """Run a client program (its output on ours) while supervising the cluster; it is
        stopped (SIGINT, then SIGKILL) if a stop signal comes, the kernel dies or it runs
        longer than ``limit`` seconds.  Returns its exit status (negative: a signal)."""
        wl = Child(name, argv, self.run_dir, role="workload", env=self.env(), out="inherit",
                   group=False, cwd=None)
        self.log.info("workload started", child_pid=wl.pid, argv=argv)
        deadline = time.monotonic() + limit
        try:
            while wl.alive():
                if self.stop_signal is not None:
                    self.warn(f"{signal.Signals(self.stop_signal).name}: stopping the workload")
                    break
                if not self.check_children():
                    self.warn("the kernel is gone: stopping the workload")
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    self.warn(f"workload {name} still running after {limit:.0f}s:"
                              " stopping it")
                    break
                self.wait_event(left, [wl])
            if wl.alive():
                wl.stop(SERVER_STOP_TIMEOUT, KILL_TIMEOUT, sig=signal.SIGINT)
        finally:
            wl.close()
        status = wl.poll()
        self.log.info("workload finished", workload=name, returncode=status)
        return status

    # ------------------------------------------------------------ stop

    def _stop_group(self, group: list[Child], timeout: float):
        def on_kill(c):
            self.warn(f"{c.name} (pid {c.pid}) did not stop within {timeout:.0f}s: SIGKILL")
            self.log.warning("killing straggler", name=c.name, child_pid=c.pid)

        def on_stopped(c):
            if c.alive():
                self.warn(f"{c.name} (pid {c.pid}) survives SIGKILL")
            self.log.info("process stopped", name=c.name, child_pid=c.pid,
                          returncode=c.poll())

        stop_all(group, timeout, KILL_TIMEOUT, on_kill=on_kill, on_stopped=on_stopped,
                 wait=lambda g, t: self.wait_event(t, g))

    def stop(self):
        """Servers first (SIGTERM, last started first), then the kernel, SIGKILL after
        the deadlines; ready files, cluster.json and our launch.pid removed."""
        if self.stopped:
            return
        self.stopped = True
        self._stop_group([c for c in self.children if c is not self.kernel],
                         SERVER_STOP_TIMEOUT)
        if self.kernel is not None:
            self._stop_group([self.kernel], KERNEL_STOP_TIMEOUT)
        for c in self.children:
            c.close()
            c.ready_file.unlink(missing_ok=True)  # stale once the process is gone
        if self.prepared:
            self.rd.remove_cluster_files(launcher_pid=os.getpid())
        self.log.info("cluster stopped")

