"""tests/conftest.py's processes (``procs``, ``start_server``, ``kernel``) on lab.process:
the attributes tests use, and the teardown that kills each whole process group."""

from __future__ import annotations

import signal
import subprocess
import sys

import psutil
import pytest

from lab.process import wait_gone
from tests.conftest import Procs, start_server, wait_for

GRANDPARENT = ("import subprocess, sys, time; signal = __import__('signal');"
               " signal.signal(signal.SIGTERM, signal.SIG_IGN);"
               " p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
               " print(p.pid, flush=True); time.sleep(60)")


def test_teardown_kills_the_whole_group_even_of_a_child_ignoring_sigterm(run_dir):
    ps = Procs(run_dir)
    p = ps.python(GRANDPARENT, name="parent")
    grandchild = psutil.Process(int(wait_for(lambda: p.output().split()[:1], 30)[0]))
    plain = ps.python("import time; time.sleep(60)")
    ps.stop_all()  # what the fixture's teardown does
    assert plain.p.poll() == -signal.SIGTERM
    assert p.p.poll() == -signal.SIGKILL  # SIGTERM ignored: SIGKILL after the deadline
    assert wait_gone([grandchild], 20) == []


def test_proc_attributes(run_dir):
    ps = Procs(run_dir)
    try:
        p = ps.start([sys.executable, "-c", "import sys; print('one'); sys.stderr.write('two')"],
                     name="x", env={"X_TEST": "1"})
        assert isinstance(p.p, subprocess.Popen) and p.pid == p.p.pid
        assert p.p.wait(30) == 0
        assert p.output().split() == ["one", "two"]
        assert p.log_path == run_dir / "x.out"
        again = ps.python("import os; print(os.environ['X_TEST'])", name="x", env={"X_TEST": "2"})
        assert again.p.wait(30) == 0
        assert again.output() == "2\n"  # NAME.out starts empty for each process
        s = ps.python("import time; time.sleep(60)", name="s")
        s.kill(signal.SIGINT)
        assert s.p.wait(30) != 0
        s.kill()  # after its exit: nothing happens
    finally:
        ps.stop_all()


@pytest.mark.timeout(120)
def test_start_server_and_kernel_fixture(kernel, procs, run_dir):
    assert kernel == f"ipc://{run_dir}/kernel.sock" and kernel.run_dir == run_dir
    assert kernel.proc.p.poll() is None and kernel.proc.name == "kernel"
    d = start_server(procs, run_dir, "translators.demo", "demo", "--threads", "workers")
    assert int((run_dir / "demo.ready").read_text()) == d.pid
    with pytest.raises(AssertionError) as e:
        start_server(procs, run_dir, "translators.no_such_server", "bad")
    assert "bad died before it was ready" in str(e.value)
    assert "No module named translators.no_such_server" in str(e.value)
