"""scripts/loadgen flood when one of its client task processes is killed mid-run: the
run exits non-zero and its summary says which task died, how, and what was lost."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import psutil
import pytest

from lab.process import child_env
from tests.conftest import ROOT, wait_for
from tests.integration.test_loadgen import demo  # noqa: F401 - a fixture


def _task_processes(pid):
    return [c for c in psutil.Process(pid).children(recursive=True)
            if "spawn_main" in " ".join(c.cmdline())]


@pytest.mark.timeout(120)
def test_flood_with_a_killed_task_fails_and_names_it(run_dir, demo):  # noqa: F811
    err_path = run_dir / "loadgen.err"
    with open(err_path, "wb") as err:
        lg = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "loadgen"),
                               "--run-dir", str(run_dir), "--progress", "--json", "flood",
                               "--tasks", "2", "--duration", "20"],
                              stdout=subprocess.PIPE, stderr=err, env=child_env(), cwd=ROOT)
    try:
        # Running: progress lines count calls.
        wait_for(lambda: any(int(n) > 0 for n in re.findall(rb" calls (\d+) ",
                                                            err_path.read_bytes())),
                 timeout=60, what="flood calls under way")
        victims = _task_processes(lg.pid)
        assert len(victims) == 2, victims
        victims[0].send_signal(signal.SIGKILL)
        out, _ = lg.communicate(timeout=90)
    finally:
        if lg.poll() is None:
            lg.kill()
            lg.wait(10)
    assert lg.returncode != 0, out
    s = json.loads(out)
    assert s["exit_status"] == lg.returncode
    (failed,) = s["task_failures"].items()
    assert "SIGKILL" in failed[1] and "lost" in failed[1], failed
    assert f"task {failed[0]} failed" in s["failure"], s["failure"]
    assert s["errors"].get("TASK_FAILED") == 1
    assert s["ok"] > 0  # the other task's calls are still counted
