"""lab.cluster.Cluster used programmatically, with a real kernel: start in order, the
files it writes, supervision, workloads, failures to start, stop; lab.status on it."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading

import psutil
import pytest

from lab import status
from lab.cluster import Cluster, ClusterError, kernel_argv, server_argv
from lab.process import wait_gone
from lab.rundir import RunDir


def procs_gone(pids) -> bool:
    return not wait_gone([psutil.Process(p) for p in pids if psutil.pid_exists(p)], 30)


@pytest.mark.timeout(120)
def test_kernel_only_cluster_as_a_context_manager(run_dir):
    warned = []
    with Cluster(run_dir, kernel_table={"qlimit_default": 7}, servers=[],
                 warn=warned.append) as cl:
        assert cl.endpoint == f"ipc://{run_dir}/kernel.sock"
        assert [c.name for c in cl.children] == ["kernel"] and cl.kernel.alive()
        d = json.loads((run_dir / "cluster.json").read_text())
        assert d["kernel"] == {"endpoint": cl.endpoint, "pid": cl.kernel.pid}
        assert d["launcher_pid"] == os.getpid() and d["run_dir"] == str(run_dir)
        assert d["processes"] == [{
            "name": "kernel", "role": "kernel", "pid": cl.kernel.pid,
            "log": str(run_dir / "kernel.log"), "stderr": str(run_dir / "kernel.out"),
            "argv": kernel_argv(run_dir, run_dir / "kernel.toml")}]
        assert RunDir(run_dir).launcher_pid() == os.getpid()
        assert "qlimit_default = 7" in (run_dir / "kernel.toml").read_text()
        st = status.collect(RunDir(run_dir), all_ports=True)
        mine = [p for p in st["ports"] if p["task"] == "launch-status"]
        assert mine and all(p["qlimit"] == 7 for p in mine)
        assert [p["name"] for p in st["processes"]] == ["kernel", "launch"]
        text = status.render(st)
        assert text.startswith(f"kernel {cl.endpoint}  pid {cl.kernel.pid}")
        assert "\nports (all: " in text and "\nkernel counters" in text
        assert cl.check_children()
        pid = cl.kernel.pid
    assert cl.kernel.poll() == 0 and procs_gone([pid])  # SIGTERM: a clean exit
    assert not (run_dir / "cluster.json").exists() and not (run_dir / "launch.pid").exists()
    assert not (run_dir / "kernel.ready").exists()
    assert warned == [] and cl.failures == []
    cl.stop()  # again: nothing to do


@pytest.mark.timeout(180)
def test_default_pager_first_deaths_reported_workloads(run_dir):
    warned = []
    servers = [{"name": "demo", "module": "translators.demo", "args": [], "role": "server"},
               {"name": "defpager", "module": "translators.defpager", "args": [],
                "role": "default-pager"}]
    with Cluster(run_dir, servers=servers, threads="workers", warn=warned.append,
                 launcher=False) as cl:
        assert [c.name for c in cl.children] == ["kernel", "defpager", "demo"]
        demo = cl.child("demo")
        assert demo.argv == server_argv("translators.demo", run_dir, "demo", [], "workers")
        assert demo.argv[-2:] == ["--threads", "workers"]
        assert not (run_dir / "launch.pid").exists()

        code = cl.run_workload("hello", [sys.executable, "-c", "raise SystemExit(3)"], 30)
        assert code == 3
        code = cl.run_workload("hang", [sys.executable, "-c", "import time; time.sleep(60)"],
                               2)
        # SIGINT: KeyboardInterrupt, or exit status 1 if it came while Python was starting
        assert code in (-signal.SIGINT, 1)
        assert warned == ["workload hang still running after 2s: stopping it"]

        demo.send_signal(signal.SIGKILL)
        demo.wait(20)
        assert cl.check_children()  # a server died: reported, the cluster goes on
        assert cl.failures == [f"demo (pid {demo.pid}, server) died unexpectedly:"
                               " killed by SIGKILL"]
        assert warned[1] == cl.failures[0]
        d = RunDir(run_dir).read_cluster()
        assert {p["name"]: p.get("exit") for p in d["processes"]}["demo"] == -signal.SIGKILL
        assert cl.check_children() and len(cl.failures) == 1  # reported once
        cl.kernel.send_signal(signal.SIGKILL)
        cl.kernel.wait(20)
        assert not cl.check_children()
        pids = [c.pid for c in cl.children]
    assert procs_gone(pids)
    assert not (run_dir / "cluster.json").exists()


@pytest.mark.timeout(120)
def test_a_server_dying_before_ready(run_dir):
    warned = []
    cl = Cluster(run_dir, servers=[{"name": "bad", "module": "translators.no_such_server",
                                    "args": [], "role": "server"}], warn=warned.append)
    with pytest.raises(ClusterError) as e:
        with cl:
            pass
    assert str(e.value) == "bad died before it was ready"
    bad = cl.child("bad")
    assert warned[0] == f"bad (pid {bad.pid}, server) died before it was ready: exit status 1"
    assert "No module named translators.no_such_server" in warned[1]
    assert procs_gone([cl.kernel.pid]) and not (run_dir / "cluster.json").exists()


@pytest.mark.timeout(120)
def test_a_server_not_ready_in_time(run_dir, monkeypatch):
    (run_dir / "sleepy_server.py").write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setenv("PYTHONPATH", str(run_dir))  # children find sleepy_server
    warned = []
    cl = Cluster(run_dir, servers=[{"name": "sleepy", "module": "sleepy_server", "args": [],
                                    "role": "server"}], warn=warned.append)
    start_group = cl.wait_ready

    def wait_ready(children):  # the kernel may be slow on a loaded machine; sleepy not
        cl.ready_timeout = 90 if children == [cl.kernel] else 1
        start_group(children)

    cl.wait_ready = wait_ready
    try:
        with pytest.raises(ClusterError) as e:
            cl.start()
    finally:
        cl.stop()
    assert str(e.value) == "not ready after 1s: sleepy"
    sleepy = cl.child("sleepy")
    assert warned == [f"sleepy (pid {sleepy.pid}) not ready after 1s; last output:\n(none)"]
    assert sleepy.poll() == -signal.SIGTERM


@pytest.mark.timeout(120)
def test_a_second_cluster_is_refused_and_signals_stop_supervision(run_dir):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    with Cluster(run_dir, servers=[]) as cl:
        with pytest.raises(ClusterError) as e:
            Cluster(run_dir, servers=[]).prepare()
        assert str(e.value) == f"a kernel is listening on {run_dir}/kernel.sock; stop it first"
        cl.install_signals()
        try:
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
            cl.supervise()  # returns on the signal
            assert cl.stop_signal == signal.SIGTERM
        finally:
            cl.restore_signals()
    assert signal.getsignal(signal.SIGTERM) is not cl._on_signal


def test_signal_handling_leaves_no_fds_behind(run_dir):
    """A Cluster owns no fd until it takes the signals, and gives back what it took."""
    before = len(os.listdir("/proc/self/fd"))
    cl = Cluster(run_dir, servers=[])
    assert len(os.listdir("/proc/self/fd")) == before
    old = signal.getsignal(signal.SIGTERM)
    cl.install_signals()
    assert len(os.listdir("/proc/self/fd")) == before + 2
    os.kill(os.getpid(), signal.SIGTERM)  # wakes wait_event through the wakeup fd
    cl.wait_event(30)
    assert cl.stop_signal == signal.SIGTERM
    cl.restore_signals()
    assert signal.getsignal(signal.SIGTERM) is old
    assert len(os.listdir("/proc/self/fd")) == before
    cl.wait_event(0)  # without signals it still waits (on nothing here)
