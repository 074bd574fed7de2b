"""lab.process with real child processes (``python -c``): output, ready files, deaths,
stop escalation, process groups, the parent-death signal."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import psutil
import pytest

from lab.process import (
    ROOT,
    Child,
    ProcessError,
    child_env,
    describe_exit,
    gone,
    python_argv,
    stop_all,
    tail,
    wait_exit,
    wait_gone,
    wait_ready,
)
from tests.conftest import wait_for

# A child that ignores SIGTERM, then says so with its ready file.
STUBBORN = ("import signal, sys, time, pathlib; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            " pathlib.Path(sys.argv[1]).write_text('1'); time.sleep(60)")


def py(code, *args):
    return [sys.executable, "-c", code, *map(str, args)]


@pytest.fixture
def children():
    """Children of a test, SIGKILLed (group) at teardown whatever the test did."""
    made: list[Child] = []
    yield made
    for c in made:
        c.send_signal(signal.SIGKILL, group=True)
        c.wait(5)
        c.close()


def start(children, name, argv, run_dir, **kw) -> Child:
    c = Child(name, argv, run_dir, **kw)
    children.append(c)
    return c


def test_output_goes_to_name_out_and_is_appended(run_dir, children):
    c = start(children, "hello", py("import sys; print('out'); print('err', file=sys.stderr)"),
              run_dir, role="task")
    assert c.wait(30) == 0 and c.poll() == 0 and not c.alive()
    assert c.out == run_dir / "hello.out" and c.log == run_dir / "hello.log"
    assert c.ready_file == run_dir / "hello.ready" and c.role == "task"
    assert sorted(c.output().split()) == ["err", "out"]
    again = start(children, "hello", py("print('second')"), run_dir)
    assert again.wait(30) == 0
    assert again.output().split()[-1] == "second" and "out" in again.output()
    assert again.output(lines=1) == "second"
    assert "hello" in repr(again) and "exit status 0" in repr(again)


def test_exit_status_described(run_dir, children):
    c = start(children, "three", py("raise SystemExit(3)"), run_dir)
    assert c.wait(30) == 3 and describe_exit(c.poll()) == "exit status 3"
    assert describe_exit(None) == "running"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(-200) == "killed by signal 200"


def test_inherit_and_pipe(run_dir, children):
    c = start(children, "piped", py("print('through the pipe')"), run_dir,
              stdout=subprocess.PIPE)
    assert c.popen.stdout.read().decode().strip() == "through the pipe"
    assert c.wait(30) == 0
    c.close()
    assert c.popen.stdout.closed
    i = start(children, "inh", py("pass"), run_dir, out="inherit")
    assert i.out is None and i.output() == "" and i.wait(30) == 0


def test_environment_and_cwd(run_dir, children, monkeypatch):
    monkeypatch.setenv("MACHEMU_KERNEL", "ipc://elsewhere")
    e = child_env(run_dir, extra={"X_TEST": "1"})
    assert e["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)
    assert e["MACHEMU_RUN_DIR"] == str(run_dir) and e["PYTHONUNBUFFERED"] == "1"
    assert "MACHEMU_KERNEL" not in e and e["X_TEST"] == "1"
    assert child_env(endpoint="ipc://here")["MACHEMU_KERNEL"] == "ipc://here"
    c = start(children, "env", py("import os; print(os.getcwd(), os.environ['MACHEMU_RUN_DIR'])"),
              run_dir)
    assert c.wait(30) == 0
    assert c.output().split() == [str(ROOT), str(run_dir)]
    assert python_argv("kernel", "--run-dir", run_dir) == [
        sys.executable, "-m", "kernel", "--run-dir", str(run_dir)]


def test_a_ready_file_appearing(run_dir, children):
    code = "import sys, time, pathlib; time.sleep(0.3); pathlib.Path(sys.argv[1]).write_text('x')"
    a = start(children, "a", py(code, run_dir / "a.ready"), run_dir)
    b = start(children, "b", py(code, run_dir / "b.ready"), run_dir)
    seen = []
    t0 = time.monotonic()
    wait_ready([a, b], 30, on_ready=lambda c: seen.append(c.name))
    assert sorted(seen) == ["a", "b"] and time.monotonic() - t0 >= 0.25


def test_a_child_dying_before_ready_is_named(run_dir, children):
    ok = start(children, "sleeper", py("import time; time.sleep(60)"), run_dir)
    bad = start(children, "bad", py("raise SystemExit(4)"), run_dir)
    with pytest.raises(ProcessError) as e:
        wait_ready([ok, bad], 30)
    assert str(e.value) == "bad died before it was ready (exit status 4)"
    assert e.value.child is bad


def test_not_ready_by_the_deadline(run_dir, children):
    a = start(children, "slow1", py("import time; time.sleep(60)"), run_dir)
    b = start(children, "slow2", py("import time; time.sleep(60)"), run_dir)
    t0 = time.monotonic()
    with pytest.raises(ProcessError) as e:
        wait_ready([a, b], 0.5)
    assert str(e.value) == "not ready after 0s: slow1, slow2" and e.value.child is a
    assert 0.4 < time.monotonic() - t0 < 10


def test_interrupted_and_custom_readiness(run_dir, children):
    c = start(children, "w", py("import time; time.sleep(60)"), run_dir)
    with pytest.raises(ProcessError) as e:
        wait_ready([c], 30, interrupted=lambda: "stop asked")
    assert str(e.value) == "stop asked" and e.value.child is None
    wait_ready([c], 30, ready=lambda ch: ch.alive())


def test_stop_escalates_to_sigkill_for_a_child_ignoring_sigterm(run_dir, children):
    c = start(children, "stubborn", py(STUBBORN, run_dir / "stubborn.ready"), run_dir)
    wait_ready([c], 30)
    t0 = time.monotonic()
    assert c.stop(timeout=0.5, kill_timeout=10) == -signal.SIGKILL
    assert time.monotonic() - t0 >= 0.5
    assert c.expected_exit and c.pidfd is None


def test_stop_of_a_child_that_obeys(run_dir, children):
    c = start(children, "obedient", py("import time; time.sleep(60)"), run_dir)
    t0 = time.monotonic()
    assert c.stop(timeout=20) == -signal.SIGTERM
    assert time.monotonic() - t0 < 10
    assert c.stop() == -signal.SIGTERM  # again: nothing to do


def test_stop_all_last_started_first(run_dir, children):
    a = start(children, "a", py("import time; time.sleep(60)"), run_dir)
    b = start(children, "b", py(STUBBORN, run_dir / "b.ready"), run_dir)
    c = start(children, "c", py("import time; time.sleep(60)"), run_dir)
    wait_ready([b], 30)
    killed, stopped = [], []
    left = stop_all([a, b, c], timeout=0.5, kill_timeout=10, on_kill=lambda x: killed.append(x),
                    on_stopped=lambda x: stopped.append(x.name))
    assert left == [] and killed == [b] and stopped == ["c", "b", "a"]
    assert (a.poll(), b.poll(), c.poll()) == (-signal.SIGTERM, -signal.SIGKILL, -signal.SIGTERM)
    assert all(x.expected_exit and x.pidfd is None for x in (a, b, c))


GRANDPARENT = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c',"
               " 'import time; time.sleep(60)']); print(p.pid, flush=True); time.sleep(60)")


def grandchild_of(c: Child) -> psutil.Process:
    pid = wait_for(lambda: c.output().split()[:1], 30, what="grandchild pid")[0]
    return psutil.Process(int(pid))


def test_signals_reach_the_whole_group(run_dir, children):
    c = start(children, "leader", py(GRANDPARENT), run_dir)
    g = grandchild_of(c)
    assert os.getpgid(g.pid) == c.pid  # the child leads its own group (and session)
    assert os.getsid(c.pid) == c.pid
    c.send_signal(signal.SIGKILL)
    assert wait_gone([g], 20) == []
    assert c.wait(20) == -signal.SIGKILL


def test_signal_to_the_pid_only(run_dir, children):
    c = start(children, "leader", py(GRANDPARENT), run_dir, group=False)
    g = grandchild_of(c)
    c.stop(timeout=20)
    assert c.poll() == -signal.SIGTERM
    assert not gone(g)
    g.kill()
    assert wait_gone([g], 20) == []


# A process that starts a lab Child and exits at once without stopping it.
ORPHANER = ("import sys, time; from lab.process import Child;"
            " c = Child('orphan', [sys.executable, '-c', 'import time; time.sleep(60)'],"
            " sys.argv[1], pdeathsig=None if sys.argv[2] == 'none' else 15);"
            " print(c.pid, flush=True); time.sleep(0.3)")


@pytest.mark.parametrize("pdeathsig", ["term", "none"])
def test_parent_death_signal(run_dir, children, pdeathsig):
    c = start(children, "orphaner", py(ORPHANER, run_dir, pdeathsig), run_dir)
    orphan = grandchild_of(c)
    assert c.wait(30) == 0
    if pdeathsig == "term":
        assert wait_gone([orphan], 20) == []  # the parent died: SIGTERM came
    else:
        assert wait_gone([orphan], 1) == [orphan]
        orphan.kill()
        assert wait_gone([orphan], 20) == []


def test_wait_exit_wakes_on_an_exit_and_on_extra_fds(run_dir, children):
    c = start(children, "quick", py("import time; time.sleep(0.2)"), run_dir)
    t0 = time.monotonic()
    while c.alive() and time.monotonic() - t0 < 20:
        assert wait_exit([c], 20) == []
    assert not c.alive() and time.monotonic() - t0 < 10
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        assert wait_exit([], 5, [r]) == [r]
        os.read(r, 1)
        assert wait_exit([], 0.05, [r]) == []
        assert not select.select([r], [], [], 0)[0]
    finally:
        os.close(r)
        os.close(w)


def test_tail(run_dir):
    f = run_dir / "f.log"
    f.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(f, 2) == "line 98\nline 99"
    assert tail(run_dir / "missing") == ""
