"""scripts/launch with real processes: cluster, status, stop, supervision, run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import psutil
import pytest

from lab.process import child_env
from tests.conftest import ROOT, wait_for

LAUNCH = str(ROOT / "scripts" / "launch")
HAVE_DEMO = (ROOT / "translators" / "demo.py").exists() or (
    ROOT / "translators" / "demo").is_dir()
HAVE_LOADGEN = (ROOT / "scripts" / "loadgen").exists()
needs_demo = pytest.mark.skipif(not HAVE_DEMO, reason="translators.demo not written yet")


def launch(*args, timeout=90):
    # child_env: this tree's lab first on PYTHONPATH (the shim imports lab.launch)
    return subprocess.run([sys.executable, LAUNCH, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=child_env())


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def procs_of(run_dir) -> list[int]:
    """Processes whose command line names the run directory (the cluster's children)."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if str(run_dir) in " ".join(p.info["cmdline"] or ()) and not gone(p.info["pid"]):
            out.append(p.info["pid"])
    return out


def start_cluster(procs, run_dir, *extra):
    lp = procs.python([LAUNCH, "cluster", "--run-dir", str(run_dir), *extra], name="launcher")
    cj = run_dir / "cluster.json"
    wait_for(lambda: cj.exists() or lp.p.poll() is not None, 120, what="cluster.json")
    assert lp.p.poll() is None, lp.output()
    return lp, json.loads(cj.read_text())


def status(run_dir, *extra) -> dict:
    r = launch("status", "--run-dir", str(run_dir), "--json", *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


@needs_demo
@pytest.mark.timeout(240)
def test_cluster_status_stop(run_dir, procs):
    lp, cluster = start_cluster(procs, run_dir)
    assert cluster["run_dir"] == str(run_dir)
    assert cluster["launcher_pid"] == lp.pid
    by_name = {p["name"]: p for p in cluster["processes"]}
    assert by_name["kernel"]["role"] == "kernel"
    assert by_name["kernel"]["pid"] == cluster["kernel"]["pid"]
    assert by_name["demo"]["role"] == "server"
    assert (run_dir / "launch.pid").read_text().strip() == str(lp.pid)
    assert "demo" in lp.output() and cluster["kernel"]["endpoint"] in lp.output()

    st = status(run_dir)
    demo_tasks = [t for t in st["tasks"] if t["name"] == "demo"]
    assert [t["pid"] for t in demo_tasks] == [by_name["demo"]["pid"]], st["tasks"]
    assert "demo" in st["kernel"]["netnames"]
    assert st["kernel"]["pid"] == cluster["kernel"]["pid"]
    procs_by_name = {p["name"]: p for p in st["processes"]}
    for name in ("kernel", "demo", "launch"):
        assert procs_by_name[name]["alive"], procs_by_name[name]
        assert procs_by_name[name]["threads"] >= 1 and procs_by_name[name]["rss"] > 0
    assert st["vm"]["policy"] == "classic" and st["vm"]["potentially_dirty"] == 0
    r = launch("status", "--run-dir", str(run_dir), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pageout policy classic: potentially dirty 0, writers sleeping" in r.stdout

    r = launch("stop", "--run-dir", str(run_dir), timeout=150)
    assert r.returncode == 0, r.stdout + r.stderr
    assert lp.p.wait(60) == 0, lp.output()
    pids = [p["pid"] for p in cluster["processes"]]
    wait_for(lambda: all(gone(pid) for pid in pids), 60, what="cluster processes gone")
    assert not (run_dir / "launch.pid").exists()
    assert not (run_dir / "cluster.json").exists()
    assert "cluster stopped" in lp.output()


@pytest.mark.timeout(180)
def test_kernel_only_config_sigint(run_dir, procs):
    """A config without servers; its [kernel] table reaches the kernel; Ctrl-C stops."""
    cfg = run_dir / "c.toml"
    cfg.write_text("server = []\n[kernel]\nqlimit_default = 7\n")
    lp, cluster = start_cluster(procs, run_dir, "--config", str(cfg))
    assert [p["name"] for p in cluster["processes"]] == ["kernel"]
    assert "qlimit_default = 7" in (run_dir / "kernel.toml").read_text()

    st = status(run_dir, "--all")
    # The status task's own reply port is made with the configured default queue limit.
    mine = [p for p in st["ports"] if p["task"] == "launch-status"]
    assert mine and all(p["qlimit"] == 7 for p in mine), st["ports"]
    assert st["stats"]["tasks_created"] >= 1

    kpid = cluster["kernel"]["pid"]
    lp.kill(signal.SIGINT)  # only the launcher: its children have their own sessions
    assert lp.p.wait(60) == 0, lp.output()
    wait_for(lambda: gone(kpid), 30, what="kernel gone")
    assert not (run_dir / "launch.pid").exists()
    assert "kernel stopping" in (run_dir / "kernel.log").read_text()  # SIGTERM, not SIGKILL


@needs_demo
@pytest.mark.timeout(240)
def test_server_death_is_reported_and_kernel_keeps_running(run_dir, procs):
    lp, cluster = start_cluster(procs, run_dir)
    demo = next(p for p in cluster["processes"] if p["name"] == "demo")
    psutil.Process(demo["pid"]).kill()
    wait_for(lambda: "demo (pid" in lp.output() and "died" in lp.output(), 60,
             what="launcher reports the death")
    assert not gone(cluster["kernel"]["pid"])
    st = status(run_dir)
    assert not [t for t in st["tasks"] if t["name"] == "demo"]
    assert not {p["name"]: p for p in st["processes"]}["demo"]["alive"]

    r = launch("stop", "--run-dir", str(run_dir), timeout=150)
    assert r.returncode == 0, r.stdout + r.stderr
    assert lp.p.wait(60) == 1, lp.output()  # a process died: the cluster failed
    wait_for(lambda: gone(cluster["kernel"]["pid"]), 30, what="kernel gone")


@pytest.mark.timeout(180)
def test_server_failing_to_start_stops_the_kernel(run_dir, procs):
    cfg = run_dir / "c.toml"
    cfg.write_text('[[server]]\nname = "bad"\nmodule = "translators.no_such_server"\n')
    lp = procs.python([LAUNCH, "cluster", "--run-dir", str(run_dir), "--config", str(cfg)],
                      name="launcher")
    assert lp.p.wait(120) == 1
    out = lp.output()
    assert "bad" in out and "No module named translators.no_such_server" in out, out
    assert not (run_dir / "cluster.json").exists()
    wait_for(lambda: not procs_of(run_dir), 30, what="no process of the run dir left")


def test_long_run_dir_refused(run_dir):
    long = run_dir / ("d" * 100)
    r = launch("cluster", "--run-dir", str(long))
    assert r.returncode == 2
    assert "too long" in r.stderr and "kernel.sock" in r.stderr
    assert not long.exists()


def test_status_and_stop_without_cluster(run_dir):
    r = launch("status", "--run-dir", str(run_dir))
    assert r.returncode == 1 and "no kernel" in r.stderr
    r = launch("stop", "--run-dir", str(run_dir))
    assert r.returncode == 1 and "no cluster" in r.stderr


@needs_demo
@pytest.mark.skipif(not HAVE_LOADGEN, reason="scripts/loadgen not written yet")
@pytest.mark.timeout(300)
def test_run_main_job(run_dir, procs):
    p = procs.python([LAUNCH, "run", "--run-dir", str(run_dir), "--duration", "2",
                      "--tasks", "2", "--no-experiment"], name="run")
    assert p.p.wait(240) == 0, p.output()
    out = p.output()
    assert "workload: exit status 0" in out and "cluster stopped" in out, out
    assert not (run_dir / "launch.pid").exists()
    wait_for(lambda: not procs_of(run_dir), 30, what="no process of the run dir left")


@pytest.mark.timeout(120)
def test_headline_experiment_is_run_and_its_status_returned(tmp_path, capsys):
    """run_headline calls scripts/experiment with --quick into RUN_DIR/experiment and
    returns its exit status: an unknown experiment is the experiment CLI's usage error
    (2), named on the way."""
    import argparse

    from lab.launch import run_headline

    code = run_headline(argparse.Namespace(experiment="E9", all_configurations=False),
                        tmp_path)
    out = capsys.readouterr()
    assert code == 2, out
    assert "experiment E9 (--quick)" in out.out + out.err
    assert str(tmp_path / "experiment") in out.out + out.err


def test_headline_runs_e1s_classic_and_advisory_unless_all_are_asked(tmp_path):
    """launch run's headline is E1 --quick with classic-page and advisory (issue 10), by
    name or alias, into RUN_DIR/experiment; --all-configurations, or an experiment
    without headline ones, runs them all (no --config)."""
    import argparse

    from lab.experiments.base import find
    from lab.launch import headline_argv

    def configs(name, every=False):
        argv = headline_argv(argparse.Namespace(experiment=name, all_configurations=every),
                             tmp_path)
        assert argv[2:6] == ["run", name, "--quick", "--out"], argv
        assert argv[6] == str(tmp_path / "experiment")
        return [argv[i + 1] for i, a in enumerate(argv) if a == "--config"]

    assert configs("storm") == ["classic-page", "advisory"]
    assert configs("e1") == ["classic-page", "advisory"]
    # names the experiment knows: a renamed configuration would make it exit 2
    assert set(configs("E1")) <= {c.name for c in find("storm").configurations}
    assert configs("E1", every=True) == []
    assert configs("fragmentation") == []  # no headline of its own: all of them
    assert configs("E9") == []


@pytest.mark.timeout(240)
def test_run_refuses_a_busy_run_dir_before_its_headline(run_dir, procs):
    """launch run on a run directory where a cluster runs exits 2 at once, before any
    experiment starts, and leaves that cluster running."""
    lp, cluster = start_cluster(procs, run_dir)
    r = launch("run", "--run-dir", str(run_dir), timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "already runs" in r.stderr, r.stderr
    assert "experiment storm" not in r.stdout + r.stderr
    assert not (run_dir / "experiment").exists()
    assert not gone(cluster["kernel"]["pid"])
    r = launch("stop", "--run-dir", str(run_dir), timeout=150)
    assert r.returncode == 0, r.stdout + r.stderr


def test_run_stops_after_an_interrupted_headline(tmp_path, monkeypatch):
    """Ctrl-C during the headline ends launch run with its status: the IPC and VM checks
    are not started after it (they are after a headline that merely failed)."""
    import argparse

    from lab import launch as L

    checks = []
    monkeypatch.setattr(L, "run_checks", lambda args, cl: checks.append(cl) or 0)
    args = argparse.Namespace(run_dir=str(tmp_path), config=None, threads=None,
                              experiment="storm", all_configurations=False)
    for headline, expected, ran in ((L.INTERRUPTED, L.INTERRUPTED, 0), (1, 1, 1)):
        monkeypatch.setattr(L, "run_headline", lambda a, d, code=headline: code)
        checks.clear()
        assert L.cmd_run(args) == expected
        assert len(checks) == ran
