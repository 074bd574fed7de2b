"""scripts/rpctrace against real clusters: a kernel with little memory and ext2fs on a
fresh image under loadgen's seqwrite (the trace shows io_write and the pager's
memory_object traffic, and a summary per routine), --json, refusal without host_priv,
a killed tracer's session ended by the kernel, Ctrl-C, and bad arguments answered with a
message and a non-zero exit."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest

from lab.process import ROOT, child_env
from lab.rundir import RunDir
from protocol.defs import machemu as X
from protocol.kern_return import KernReturn, MachError
from protocol.runtime import TaskRuntime
from tests.conftest import start_kernel, start_server, wait_for

RPCTRACE = ROOT / "scripts" / "rpctrace"
LOADGEN = ROOT / "scripts" / "loadgen"


def rpctrace(run_dir, *args, timeout=90):
    return subprocess.run([sys.executable, str(RPCTRACE), "--run-dir", str(run_dir), *args],
                          capture_output=True, text=True, timeout=timeout, env=child_env(),
                          cwd=ROOT)


def owner(run_dir) -> TaskRuntime:
    """A task of the test holding host_priv (the run directory's secret)."""
    rd = RunDir(run_dir)
    return TaskRuntime(rd.kernel_endpoint(), "test-owner", secret=rd.host_secret())


def sessions(rt) -> list[dict]:
    return X.machemu_trace_sessions(rt.host_priv, timeout=10, rt=rt)


def task_names(rt) -> set[str]:
    info = X.machemu_kernel_info(rt.host_priv, timeout=10, rt=rt)
    return {t["name"] for t in info["tasks"]}


def summary_rows(text: str) -> dict[str, list[str]]:
    """The summary table's rows by routine (after the "rpctrace: N messages" line)."""
    tail = text[text.index("\nrpctrace: "):].splitlines()
    rows = {}
    for ln in tail[4:]:
        cells = ln.split()
        if len(cells) == 7:
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture
def ext2_cluster(run_dir, procs):
    """kernel (2048 pages: file data is paged out to ext2fs) and ext2fs."""
    start_kernel(run_dir, procs, physical_pages=2048, data_return_cluster=32)
    e = start_server(procs, run_dir, "translators.ext2fs", "ext2fs", "--size-mib", "128",
                     "--sync-interval", "0", "--stats-interval", "0")
    yield e
    assert e.p.poll() is None, f"ext2fs died during the test:\n{e.output()}"


@pytest.mark.timeout(300)
def test_trace_of_ext2fs_under_seqwrite_shows_its_rpcs_and_a_summary(run_dir, ext2_cluster):
    # 10x physical memory in all: the writes must outlast both traces (a quiet machine
    # wrote 2 x 12 MiB before the second began)
    rt = owner(run_dir)
    lg = subprocess.Popen(
        [sys.executable, str(LOADGEN), "--run-dir", str(run_dir), "seqwrite", "--tasks", "2",
         "--file-mib", "40", "--chunk-kib", "256", "--call-timeout", "120", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=ROOT)
    try:
        wait_for(lambda: any(n.startswith("loadgen.seqwrite") for n in task_names(rt)),
                 90, interval=0.1, what="loadgen's writers")
        r = rpctrace(run_dir, "--task", "ext2fs", "--duration", "3")
        assert r.returncode == 0, r.stderr
        assert "rpctrace: tracing tasks [" in r.stderr
        lines = r.stdout.splitlines()
        writes = [ln for ln in lines if "ext2fs:" in ln and "->io_write (" in ln]
        assert writes, r.stdout[-3000:]
        # a request line: time, sender[thread], ext2fs:NAME->io_write (<N B> offset) = 0 N
        assert any(re.match(r"\s*\d+\.\d{6} loadgen\.seqwrite\.\d+\[\d+\] ext2fs:\d+->"
                            r"io_write \(<262144 B> \d+\) = 0 262144  \[\d+\.\d{3} ms\]$",
                            ln) for ln in writes), writes[:5]
        # the kernel and ext2fs as each other's pager and client
        assert any(ln.split()[1] == "kernel" and "->memory_object_data_request (" in ln
                   for ln in lines), r.stdout[-3000:]
        assert any("kernel(control" in ln and "->memory_object_data_supply (" in ln
                   for ln in lines)
        # every line has ext2fs at one end (or is a late reply / a loss notice)
        for ln in lines[:len(lines) - len(summary_rows(r.stdout)) - 4]:
            if ln and not ln.startswith("#") and "..." not in ln.split()[1]:
                assert "ext2fs" in ln, ln
        rows = summary_rows(r.stdout)
        count, answered, errors, mean, p99, _ = rows["io_write"]
        assert int(count) >= 1 and int(answered) >= 1 and int(errors) == 0, rows
        assert 0 < float(mean) <= float(p99), rows
        assert int(rows["memory_object_data_request"][0]) >= 1
        m = re.search(r"rpctrace: (\d+) messages in ([\d.]+) s, (\d+) lost", r.stdout)
        assert m and int(m.group(1)) >= len(writes) and 3.0 <= float(m.group(2)) < 30
        # the kernel stopped the session when the tool ended
        assert sessions(rt) == []

        j = rpctrace(run_dir, "--json", "--id", "io_write", "--duration", "2")
        assert j.returncode == 0, j.stderr
        objs = [json.loads(ln) for ln in j.stdout.splitlines()]
        recs, summary = objs[:-1], objs[-1]
        assert recs and all(o["routine"] == "io_write" for o in recs), recs[:3]
        done = [o for o in recs if o["reply"] is not None]
        assert done and all(o["code"] == 0 and o["reply"] == {"amount": 262144}
                            and o["latency_ms"] > 0 and o["ool_pages"] == 64 for o in done)
        assert recs[0]["receiver"] == "ext2fs" and recs[0]["args"]["data"] == {
            "ool_bytes": 262144}
        assert [s["routine"] for s in summary["summary"]] == ["io_write"]
        assert summary["messages"] == len(recs) and summary["dropped"] == 0
    finally:
        out, err = lg.communicate(timeout=240)
        rt.close()
    assert lg.returncode == 0, (out[-2000:], err[-2000:])
    assert json.loads(out)["mismatches"] == 0


@pytest.mark.timeout(120)
def test_tracing_needs_host_priv(run_dir, kernel, tasks):
    plain = tasks.new("plain", priv=False)
    with pytest.raises(MachError) as e:
        X.machemu_trace_start(plain.host, {}, timeout=10, rt=plain)
    assert e.value.code == KernReturn.KERN_INVALID_HOST
    # the tool, given a run directory without the owner's secret (same kernel)
    other = run_dir / "other"
    other.mkdir()
    (other / "kernel.ready").write_text((run_dir / "kernel.ready").read_text())
    r = rpctrace(other, "--duration", "1")
    assert r.returncode == 1 and "KERN_INVALID_HOST" in r.stderr, r.stderr
    assert "privileged host port" in r.stderr
    assert sessions(tasks.new("owner")) == []


@pytest.mark.timeout(120)
def test_a_killed_tracer_leaves_no_tracing_on(run_dir, kernel, procs, tasks):
    rt = tasks.new("owner")
    p = procs.start([sys.executable, str(RPCTRACE), "--run-dir", str(run_dir)],
                    name="rpctrace")
    s = wait_for(lambda: sessions(rt), 60, interval=0.1, what="the trace session")
    assert s[0]["tracer_name"] == "rpctrace"
    p.kill(signal.SIGKILL)
    wait_for(lambda: sessions(rt) == [], 30, interval=0.1, what="the session to end")
    log = (run_dir / "kernel.log").read_text()
    assert "no senders: the tracer is gone" in log


@pytest.mark.timeout(120)
def test_ctrl_c_stops_the_trace_and_prints_the_summary(run_dir, kernel, procs, tasks):
    rt = tasks.new("owner")
    p = procs.start([sys.executable, str(RPCTRACE), "--run-dir", str(run_dir)],
                    name="rpctrace")
    wait_for(lambda: sessions(rt), 60, interval=0.1, what="the trace session")
    for _ in range(5):
        task_names(rt)  # traffic to trace: machemu_kernel_info from this task
    p.send_signal(signal.SIGINT, group=False)
    assert p.wait(30) == 0, p.output()
    out = p.output()
    assert re.search(r"rpctrace: \d+ messages in [\d.]+ s, 0 lost to the ring", out), out
    # its reply is longer than the body the kernel keeps: its value is "..."
    assert "->machemu_kernel_info () = 0 ...  [" in out and "machemu_kernel_info" in \
        summary_rows(out)
    assert sessions(rt) == []


@pytest.mark.timeout(120)
def test_bad_arguments_get_a_message_and_a_nonzero_exit(run_dir, kernel, tmp_path):
    cases = [
        (["--task", "nosuch", "--duration", "1"], 2, "no task 'nosuch'"),
        (["--port", "kernel:zz", "--duration", "1"], 2, "bad port 'kernel:zz'"),
        (["--id", "nonsense", "--duration", "1"], 2, "is neither LO-HI"),
        (["--id", "9-3"], 2, "bad id range"),
        (["--duration", "-1"], 2, "--duration must be positive"),
        (["--ring", "3"], 2, "--ring must be within"),
    ]
    for args, code, text in cases:
        r = rpctrace(run_dir, *args)
        assert r.returncode == code and text in r.stderr, (args, r.returncode, r.stderr)
    # a name that is not in the task's space: the kernel refuses the filter
    info_rt = owner(run_dir)
    try:
        me = next(t for t in X.machemu_kernel_info(info_rt.host_priv, timeout=10,
                                                   rt=info_rt)["tasks"])
        r = rpctrace(run_dir, "--port", f"{me['id']}:999999", "--duration", "1")
        assert r.returncode == 2 and "names no port in that task" in r.stderr, r.stderr
    finally:
        info_rt.close()
    dead = tmp_path / "dead"
    dead.mkdir()
    r = rpctrace(dead, "--duration", "1")
    assert r.returncode == 1 and "no kernel at" in r.stderr, r.stderr
    r = rpctrace(tmp_path / "missing", "--duration", "1")
    assert r.returncode == 1 and "no run directory" in r.stderr, r.stderr
