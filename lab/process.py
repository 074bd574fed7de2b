"""Child processes of the lab tools: the one way a kernel, a server, a workload or a bench
role is started, waited for and stopped.

Every child runs in its own session (a terminal's Ctrl-C reaches only the tool, which then
stops its children in order), optionally with a parent-death signal (a killed tool does not
leave its children running), with ``PYTHONPATH`` pointing at this tree, and writes its
stdout and stderr to ``DIR/NAME.out``.  A child is watched through a pidfd where the
platform has them, so waiting for an exit costs no polling.  ``gone`` and ``wait_gone``
watch processes that are not our children (those a cluster.json lists, say).
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import psutil

ROOT = Path(__file__).resolve().parent.parent  # the tree that holds protocol/, kernel/, ...
PR_SET_PDEATHSIG = 1

try:  # loaded here: the child only calls prctl between fork and exec
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:
    _libc = None


class ProcessError(Exception):
    """A child that died, did not get ready, or did not finish in time.

    ``args`` are (message, child): ``child`` is the Child concerned (the first of those
    not ready, for a deadline), None for an interruption.
    """

    def __init__(self, message: str, child: "Child | None" = None):
        super().__init__(message, child)
        self.child = child

    def __str__(self):
        return self.args[0]


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a (log) file, "" if it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def describe_exit(code: int | None) -> str:
    """A returncode as people read it: "exit status 1", "killed by SIGKILL"."""
    if code is None:
        return "running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def child_env(run_dir: Path | None = None, endpoint: str | None = None,
              extra: dict | None = None) -> dict:
    """The environment of a child: ours, with this tree first on ``PYTHONPATH``, unbuffered
    output, and MACHEMU_RUN_DIR / MACHEMU_KERNEL set to this cluster (or unset, so a
    child never reaches the kernel of an enclosing cluster by accident)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e["PYTHONUNBUFFERED"] = "1"
    if run_dir is not None:
        e["MACHEMU_RUN_DIR"] = str(run_dir)
    if endpoint:
        e["MACHEMU_KERNEL"] = endpoint
    else:
        e.pop("MACHEMU_KERNEL", None)
    e.update(extra or {})
    return e


def python_argv(module: str, *args) -> list[str]:
    """``python -m MODULE ARGS`` with this interpreter."""
    return [sys.executable, "-m", module, *map(str, args)]


def _child_setup(parent_pid: int, pdeathsig: int):
    """In the child, before exec: a parent-death signal, and exit at once if the parent
    died before prctl took effect (the signal would never come).  SIGINT goes back to its
    default: started from a background job (``cmd &`` in a script) we inherit it ignored,
    and a Python child keeps an ignored SIGINT ignored, so the SIGINT that stops a
    workload early would do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if _libc is not None and sys.platform.startswith("linux"):
        _libc.prctl(PR_SET_PDEATHSIG, pdeathsig, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


class Child:
    """One child process.

    ``out``: where stdout and stderr go — a path (appended), ``None`` for DIR/NAME.out, or
    ``"inherit"`` (the tool's own stdout, for a workload that prints its summary).
    ``stdout=subprocess.PIPE`` / ``stdin=subprocess.PIPE`` give a pipe instead (stderr
    still goes to ``out``).  ``group``: signals go to the child's whole process group
    (it leads its own session), so helpers it forked go too.
    """

    def __init__(self, name: str, argv: list[str], run_dir: Path, *, role: str = "",
                 env: dict | None = None, out: Path | str | None = None, stdin=None,
                 stdout=None, pdeathsig: int | None = signal.SIGTERM, group: bool = True,
                 cwd: Path | None = ROOT):
        self.name, self.role, self.argv = name, role, list(argv)
        self.run_dir = Path(run_dir)
        self.log = self.run_dir / f"{name}.log"
        self.ready_file = self.run_dir / f"{name}.ready"
        self.out = None if out == "inherit" else Path(out) if out else self.run_dir / f"{name}.out"
        self.group = group
        self.expected_exit = False  # set by whoever stops it on purpose
        self.reported = False       # its death has been reported
        me = os.getpid()
        setup = (lambda: _child_setup(me, int(pdeathsig))) if pdeathsig else None
        f = open(self.out, "ab") if self.out else None
        try:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL if stdin is None else stdin,
                stdout=stdout if stdout is not None else f,
                stderr=f if f is not None else None,
                env=env if env is not None else child_env(self.run_dir), cwd=cwd,
                start_new_session=True, preexec_fn=setup, close_fds=True)
        finally:
            if f is not None:
                f.close()
        self.pid = self.popen.pid
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except (OSError, AttributeError):
            self.pidfd = None

    def __repr__(self):
        return f"<Child {self.name} pid {self.pid} {describe_exit(self.poll())}>"

    def poll(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send_signal(self, sig, group: bool | None = None):
        """Send ``sig`` to the child (its process group if ``group``) while it runs."""
        if not self.alive():
            return
        try:
            if self.group if group is None else group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self, timeout: float | None) -> int | None:
        """Its returncode, or None if it still runs after ``timeout`` seconds."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0, kill_timeout: float = 5.0,
             sig=signal.SIGTERM) -> int | None:
        """``sig``, then SIGKILL if it has not exited after ``timeout``; its returncode."""
        self.expected_exit = True
        if self.alive():
            self.send_signal(sig)
            if self.wait(timeout) is None:
                self.send_signal(signal.SIGKILL)
                self.wait(kill_timeout)
        self.close()
        return self.poll()

    def output(self, lines: int | None = None) -> str:
        """What it printed (DIR/NAME.out): all of it, or the last ``lines`` lines."""
        if self.out is None:
            return ""
        if lines is not None:
            return tail(self.out, lines)
        try:
            return self.out.read_text(errors="replace")
        except OSError:
            return ""

    def close(self):
        """Release the pidfd and any pipes (the process itself is not touched)."""
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        for f in (self.popen.stdin, self.popen.stdout):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass


def wait_exit(children: Iterable[Child], timeout: float | None, extra_fds=()) -> list:
    """Sleep until one of ``children`` exits, one of ``extra_fds`` is readable, or
    ``timeout`` passes; returns the readable extra fds."""
    fds = list(extra_fds)
    cap = timeout
    for c in children:
        if c.alive():
            if c.pidfd is not None:
                fds.append(c.pidfd)
            else:  # no pidfd: look again soon
                cap = 0.2 if cap is None else min(cap, 0.2)
    try:
        r, _, _ = select.select(fds, [], [], cap)
    except InterruptedError:
        r = []
    return [f for f in r if f in extra_fds]


def wait_ready(children: list[Child], timeout: float, *,
               ready: Callable[[Child], bool] | None = None,
               interrupted: Callable[[], str | None] | None = None,
               on_ready: Callable[[Child], None] | None = None,
               sleep: Callable[[float], None] | None = None):
    """Wait until every child is ready (by default: DIR/NAME.ready exists).

    Raises ProcessError naming the child if one dies first or the deadline passes, or
    with the reason ``interrupted()`` returns.  Ready files have no fd to wait on, so this
    looks again every 50 ms (``sleep`` lets a caller wake on its own events meanwhile).
    """
    is_ready = ready or (lambda c: c.ready_file.exists())
    deadline = time.monotonic() + timeout
    pending = list(children)
    while pending:
        for c in list(pending):
            if is_ready(c):
                pending.remove(c)
                if on_ready:
                    on_ready(c)
            elif not c.alive():
                raise ProcessError(f"{c.name} died before it was ready"
                                   f" ({describe_exit(c.poll())})", c)
        if not pending:
            return
        why = interrupted() if interrupted else None
        if why:
            raise ProcessError(why, None)
        left = deadline - time.monotonic()
        if left <= 0:
            names = ", ".join(c.name for c in pending)
            raise ProcessError(f"not ready after {timeout:.0f}s: {names}", pending[0])
        (sleep or time.sleep)(min(left, 0.05))


def stop_all(children: list[Child], timeout: float = 10.0, kill_timeout: float = 5.0, *,
             sig=signal.SIGTERM, on_kill: Callable[[Child], None] | None = None,
             on_stopped: Callable[[Child], None] | None = None,
             wait: Callable[[list[Child], float], None] | None = None) -> list[Child]:
    """Stop ``children`` as a group, last started first: ``sig`` to all, then SIGKILL to
    what is left after ``timeout`` (``on_kill(child)`` just before), then up to
    ``kill_timeout`` for each to go (``on_stopped(child)`` after it, gone or not).
    ``wait(group, seconds)`` sleeps until one exits (default wait_exit): a caller that
    also waits for signals passes its own.  Returns those that survive SIGKILL."""
    group = list(reversed(children))
    for c in group:
        c.expected_exit = True
        c.send_signal(sig)
    deadline = time.monotonic() + timeout
    while any(c.alive() for c in group) and time.monotonic() < deadline:
        (wait or wait_exit)(group, max(0.0, deadline - time.monotonic()))
    for c in group:
        if c.alive():
            if on_kill:
                on_kill(c)
            c.send_signal(signal.SIGKILL)
    for c in group:
        c.wait(kill_timeout)
        if on_stopped:
            on_stopped(c)
    for c in children:
        c.close()
    return [c for c in group if c.alive()]


def read_line(child: Child, timeout: float) -> str:
    """One line from ``child``'s stdout pipe, stripped; "" if the child closed the pipe
    first.  Raises ProcessError if no whole line arrives within ``timeout`` seconds."""
    fd = child.popen.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise ProcessError(f"no answer from {child.name} (pid {child.pid}) within"
                               f" {timeout:.0f}s", child)
        r, _, _ = select.select([fd], [], [], min(left, 1.0))
        if r:
            chunk = os.read(fd, 1)  # one byte: what follows the line stays in the pipe
            if not chunk:
                break
            buf += chunk
    return buf.decode(errors="replace").strip()


# ---------------------------------------------------------------- processes of others


def gone(p: psutil.Process) -> bool:
    """Whether a process (not necessarily our child) has exited: a zombie counts, its
    parent just has not reaped it."""
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has exited (psutil's own wait does not see a non-child's
    exit until it is reaped); returns those still running after ``timeout``."""
    fds = {}
    for p in procs:
        try:
            fds[p.pid] = os.pidfd_open(p.pid)
        except (OSError, AttributeError):
            pass
    try:
        deadline = time.monotonic() + timeout
        while True:
            alive = [p for p in procs if not gone(p)]
            left = deadline - time.monotonic()
            if not alive or left <= 0:
                return alive
            wait_fds = [fds[p.pid] for p in alive if p.pid in fds]
            cap = left if len(wait_fds) == len(alive) else min(left, 0.1)
            select.select(wait_fds, [], [], cap)
    finally:
        for fd in fds.values():
            os.close(fd)
