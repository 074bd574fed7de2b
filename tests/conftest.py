"""Fixtures that start real kernels (and other processes) in per-test run directories.

Run directories are short ``mkdtemp`` paths under the system temp dir, because ipc://
endpoints are Unix socket paths limited to about 107 bytes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lab.cluster import kernel_argv, server_argv
from lab.process import ROOT, Child, ProcessError, child_env, wait_ready
from lab.rundir import RunDir


def wait_for(cond, timeout=30.0, interval=0.02, what="condition"):
    """Poll ``cond`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def log_records(path) -> list[dict]:
    """The JSON lines of a process's structlog file (lines that are not JSON skipped)."""
    import json

    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def start_server(procs, run_dir, module, name, *extra, timeout=60):
    """Start ``python -m MODULE --run-dir DIR --name NAME EXTRA`` and wait for its
    DIR/NAME.ready (which must hold its pid)."""
    p = procs.start(server_argv(module, run_dir, name, extra), name=name)
    ready_or_fail(p, timeout)
    assert int(p.ready_file.read_text()) == p.pid
    return p


def start_kernel(run_dir, procs, timeout=30, **settings) -> str:
    """A real kernel, with SETTINGS as its [kernel] config table (DIR/kernel.toml, checked
    by the kernel's KernelConfig first) if any; returns its endpoint.  The run directory
    gets the owner's host secret first, as the launcher's does (RunDir.prepare)."""
    rd = RunDir(run_dir)
    rd.make_host_secret()
    config = rd.write_kernel_toml(settings) if settings else None
    p = procs.start(kernel_argv(run_dir, config), name="kernel")
    ready_or_fail(p, timeout)
    return rd.kernel_endpoint()


def ready_or_fail(p: "Proc", timeout: float):
    """Wait for ``p``'s DIR/NAME.ready; fail the test with its output if it dies (first or
    at once) or the deadline passes."""
    try:
        wait_ready([p], timeout)
    except ProcessError as e:
        raise AssertionError(f"{e}\n{p.output()}") from None
    assert p.alive(), p.output()


def run_loadgen(run_dir, *args, timeout=100):
    """scripts/loadgen --run-dir DIR ARGS --json: (exit status, summary, stderr)."""
    import json

    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "loadgen"), "--run-dir",
                        str(run_dir), *args, "--json"], capture_output=True, text=True,
                       timeout=timeout, env=child_env(), cwd=ROOT)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"stdout must be one JSON object:\n{r.stdout}\n{r.stderr}"
    return r.returncode, json.loads(lines[0]), r.stderr


class Proc(Child):
    """A child process of a test (lab.process.Child: its own session, output to
    DIR/NAME.out, which is truncated first), killed (whole process group) at teardown."""

    def __init__(self, argv, run_dir, env=None, name="proc"):
        out = Path(run_dir) / f"{name}.out"
        out.write_bytes(b"")
        super().__init__(name, argv, run_dir, env=child_env(extra=env), out=out)
        self.log_path = out

    @property
    def p(self) -> subprocess.Popen:
        return self.popen

    def kill(self, sig=signal.SIGKILL):
        """Send ``sig`` to its process group."""
        self.send_signal(sig)

    def stop(self, timeout=10):
        """SIGTERM to its group, SIGKILL after ``timeout``."""
        super().stop(timeout, timeout)


class Procs(list):
    """The processes of one test: ``start(argv, name=, env=)``, ``python(code_or_args)``;
    ``stop_all()`` stops them, last started first."""

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir

    def start(self, argv, name="proc", env=None) -> Proc:
        p = Proc(argv, self.run_dir, env, name)
        self.append(p)
        return p

    def python(self, code_or_args, name="task", env=None) -> Proc:
        argv = [sys.executable] + (["-c", code_or_args] if isinstance(code_or_args, str)
                                   else list(code_or_args))
        return self.start(argv, name, env)

    def stop_all(self):
        for p in reversed(self):
            p.stop()


@pytest.fixture
def run_dir():
    d = tempfile.mkdtemp(prefix="mx", dir="/tmp")
    yield Path(d)
    if not os.environ.get("MACHEMU_KEEP_RUN_DIR"):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def procs(run_dir):
    """Start processes with ``procs.start(argv, name=...)``; all are stopped at teardown."""
    ps = Procs(run_dir)
    yield ps
    ps.stop_all()


@pytest.fixture
def kernel(run_dir, procs):
    """A real kernel process; yields its endpoint."""
    endpoint = start_kernel(run_dir, procs)
    yield KernelHandle(endpoint, procs[-1], run_dir)


class KernelHandle(str):
    def __new__(cls, endpoint, proc, run_dir):
        s = super().__new__(cls, endpoint)
        s.proc, s.run_dir = proc, run_dir
        return s


@pytest.fixture
def tasks(kernel):
    """Make tasks of the test process itself: ``tasks.new(name)`` returns a TaskRuntime.
    The test is the cluster's owner, as lab's tools are: its tasks show the run
    directory's secret and hold host_priv, unless ``priv=False`` (a plain task)."""
    from protocol.runtime import TaskRuntime

    made = []
    secret = RunDir(kernel.run_dir).host_secret()

    class Tasks:
        endpoint = kernel

        def new(self, name="t", priv=True):
            rt = TaskRuntime(kernel, name, secret=secret if priv else None)
            made.append(rt)
            return rt

    yield Tasks()
    for rt in made:
        rt.close()
