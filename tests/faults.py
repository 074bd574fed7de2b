"""Shared by tests/stress/test_faults_*.py: a workload thread that counts what each fault
cost (calls done, calls failed by code), the checks that must hold after a fault, and
the per-test summary the closing note quotes."""

from __future__ import annotations

import collections
import threading
import time

from lab.client import err_name
from protocol.defs import fs as F
from protocol.defs import machemu as X
from protocol.defs import netname as NS
from protocol.kern_return import MachError
from protocol.runtime import TaskRuntime
from tests.conftest import wait_for

T = 30  # seconds: one RPC
ERROR_BOUND = 30.0  # seconds: a client of a dead or stopped server gets an error by then
RW = F.O_READ | F.O_WRITE


class Workload(threading.Thread):
    """Call ``step(i)`` in a loop until stopped or until a call fails ``max_errors``
    times; ``done``, ``errors`` (code name -> count), ``last_ok`` and ``first_error_at``
    say what happened."""

    def __init__(self, name, step, max_errors=3):
        super().__init__(name=name, daemon=True)
        self.step, self.max_errors = step, max_errors
        self.done = 0
        self.errors: collections.Counter = collections.Counter()
        self.first_error_at: float | None = None
        self.stopping = threading.Event()

    def run(self):
        i = 0
        while not self.stopping.is_set() and sum(self.errors.values()) < self.max_errors:
            try:
                self.step(i)
                self.done += 1
            except MachError as e:
                self.errors[err_name(e.code)] += 1
                if self.first_error_at is None:
                    self.first_error_at = time.monotonic()
            except AssertionError as e:  # bytes differ: a lost or corrupted write
                self.errors[f"wrong data: {e}"] += 1
            i += 1

    def stop(self, timeout=ERROR_BOUND * 2):
        self.stopping.set()
        self.join(timeout)
        assert not self.is_alive(), f"{self.name} still blocked {timeout}s after stop"

    def cost(self) -> str:
        return f"{self.name}: {self.done} calls done, failed " + (
            ", ".join(f"{k} x{v}" for k, v in self.errors.items()) or "none")


class Summary:
    """What a fault test prints: faults injected, what each cost, wall time."""

    def __init__(self, test):
        self.test, self.t0, self.faults, self.lines = test, time.monotonic(), [], []

    def fault(self, what):
        self.faults.append(what)

    def note(self, line):
        self.lines.append(line)

    def print(self):
        print(f"\nfaults {self.test}: {len(self.faults)} injected ({'; '.join(self.faults)}),"
              f" wall {time.monotonic() - self.t0:.1f}s")
        for ln in self.lines:
            print("  " + ln)


def kernel_serves(endpoint, name="checker") -> dict:
    """A new task is served by the kernel: its statistics (internal errors must be 0)."""
    with TaskRuntime(endpoint, name) as rt:
        stats = X.machemu_kernel_info(rt.host, timeout=T, rt=rt)["stats"]
    assert stats.get("internal_errors", 0) == 0, stats
    return stats


def look_up(rt, server, timeout=60.0):
    """The server's port from the name server, waiting for it to check in."""
    def found():
        try:
            return NS.netname_look_up(rt.name_server, "", server, timeout=T, rt=rt)
        except MachError:
            return None
    return wait_for(found, timeout, interval=0.1, what=f"{server} checked in")


def open_file(rt, root, path, flags=RW | F.O_CREAT):
    retry, name, port = F.dir_lookup(root, path, flags, 0o644, timeout=T, rt=rt)
    assert retry == F.FS_RETRY_NORMAL and name == "" and port
    return port


def read_all(rt, port, size) -> bytes:
    got = b""
    while len(got) < size:
        piece = F.io_read(port, len(got), size - len(got), timeout=T, rt=rt)
        if not piece:
            break
        got += piece
    return got


def write_synced(rt, root, path, data):
    """Write ``data`` to ``path``, file_sync it and fsys_syncfs: it must survive."""
    f = open_file(rt, root, path)
    assert F.io_write(f, data, 0, timeout=T, rt=rt) == len(data)
    F.file_sync(f, 1, 0, timeout=T, rt=rt)
    F.fsys_syncfs(root, 1, 0, timeout=T, rt=rt)
    return f


def file_roundtrip(rt, server, path, data) -> str:
    """Another client of ``server`` writes and reads back ``data``: the server goes on."""
    root = look_up(rt, server)
    f = open_file(rt, root, path)
    assert F.io_write(f, data, 0, timeout=T, rt=rt) == len(data)
    assert read_all(rt, f, len(data)) == data
    return f"{server} served {len(data)} bytes equal"
