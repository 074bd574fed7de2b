"""What every machemu role of the bench does first: become a task of the kernel of its run
directory, and look up the server it measures."""

from __future__ import annotations

import time

from lab.rundir import RunDir
from protocol import logs, runtime
from protocol.defs.netname import netname_look_up
from protocol.kern_return import MachError


def connect(run_dir: str, name: str, role: str) -> runtime.TaskRuntime:
    """A task named ``name`` of the kernel serving ``run_dir`` (shown the owner's secret,
    as every tool of the owner), logging to DIR/NAME.log."""
    rd = RunDir(run_dir)
    logs.setup(name, rd.log_file(name))
    return runtime.connect(rd.kernel_endpoint(), name=name, role=role,
                           secret=rd.host_secret())


def look_up(rt: runtime.TaskRuntime, name: str, deadline: float = 30.0) -> int:
    """A send right to the server checked in as ``name``, waiting up to ``deadline``
    seconds for it to check in."""
    end = time.monotonic() + deadline
    while True:
        try:
            return netname_look_up(rt.name_server, "", name, timeout=10, rt=rt)
        except MachError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)
