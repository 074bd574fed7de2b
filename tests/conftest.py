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

ROOT = Path(__file__).resolve().parent.parent


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
    p = procs.start([sys.executable, "-m", module, "--run-dir", str(run_dir), "--name", name,
                     *extra], name=name)
    ready = Path(run_dir) / f"{name}.ready"
    wait_for(lambda: ready.exists() or p.p.poll() is not None, timeout, what=f"{name} ready")
    assert p.p.poll() is None, p.output()
    assert int(ready.read_text()) == p.pid
    return p


def run_loadgen(run_dir, *args, timeout=100):
    """scripts/loadgen --run-dir DIR ARGS --json: (exit status, summary, stderr)."""
    import json

    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "loadgen"), "--run-dir",
                        str(run_dir), *args, "--json"], capture_output=True, text=True,
                       timeout=timeout, env=env, cwd=ROOT)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"stdout must be one JSON object:\n{r.stdout}\n{r.stderr}"
    return r.returncode, json.loads(lines[0]), r.stderr


class Proc:
    """A child process of a test, killed (whole process group) at teardown."""

    def __init__(self, argv, run_dir, env=None, name="proc"):
        self.name = name
        self.log_path = Path(run_dir) / f"{name}.out"
        self.log = open(self.log_path, "wb")
        e = dict(os.environ)
        e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
        e.update(env or {})
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=e,
                                  cwd=ROOT, start_new_session=True)
        self.pid = self.p.pid

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self, sig=signal.SIGKILL):
        try:
            os.killpg(self.p.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout=10):
        if self.p.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.p.wait(timeout)
        self.log.close()


@pytest.fixture
def run_dir():
    d = tempfile.mkdtemp(prefix="mx", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def procs(run_dir):
    """Start processes with ``procs.start(argv, name=...)``; all are stopped at teardown."""

    class Procs(list):
        def start(self, argv, name="proc", env=None):
            p = Proc(argv, run_dir, env, name)
            self.append(p)
            return p

        def python(self, code_or_args, name="task", env=None):
            argv = [sys.executable] + (["-c", code_or_args] if isinstance(code_or_args, str)
                                       else list(code_or_args))
            return self.start(argv, name, env)

    ps = Procs()
    yield ps
    for p in reversed(ps):
        p.stop()


@pytest.fixture
def kernel(run_dir, procs):
    """A real kernel process; yields its endpoint."""
    p = procs.python(["-m", "kernel", "--run-dir", str(run_dir)], name="kernel")
    ready = run_dir / "kernel.ready"
    wait_for(lambda: ready.exists() or p.p.poll() is not None, 30, what="kernel ready")
    assert p.p.poll() is None, p.output()
    k = ready.read_text().strip()
    yield KernelHandle(k, p, run_dir)


class KernelHandle(str):
    def __new__(cls, endpoint, proc, run_dir):
        s = super().__new__(cls, endpoint)
        s.proc, s.run_dir = proc, run_dir
        return s


@pytest.fixture
def tasks(kernel):
    """Make tasks of the test process itself: ``tasks.new(name)`` returns a TaskRuntime."""
    from protocol.runtime import TaskRuntime

    made = []

    class Tasks:
        endpoint = kernel

        def new(self, name="t"):
            rt = TaskRuntime(kernel, name)
            made.append(rt)
            return rt

    yield Tasks()
    for rt in made:
        rt.close()
