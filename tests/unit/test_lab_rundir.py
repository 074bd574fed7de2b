"""lab.rundir: the run directory's files."""

from __future__ import annotations

import json
import os
import socket

import pytest

from lab.rundir import (
    SUN_PATH_LIMIT,
    RunDir,
    RunDirError,
    read_pid,
    toml_value,
    unix_listening,
    write_atomic,
)


def test_resolve_refuses_a_socket_path_too_long(run_dir):
    long = run_dir / ("d" * 100)
    with pytest.raises(RunDirError) as e:
        RunDir.resolve(long)
    msg = str(e.value)
    assert "too long" in msg and f"{long}/kernel.sock" in msg and f"about {SUN_PATH_LIMIT}" in msg
    assert not long.exists()  # refused before anything is made
    assert RunDir.resolve(long, check=False).path == long


def test_resolve_argument_environment_default(run_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("MACHEMU_RUN_DIR", str(run_dir))
    assert RunDir.resolve().path == run_dir.resolve()
    assert RunDir.resolve(run_dir / "x").path == run_dir / "x"
    monkeypatch.delenv("MACHEMU_RUN_DIR")
    monkeypatch.chdir(tmp_path)
    assert RunDir.resolve(check=False).path == tmp_path.resolve() / "run"


def test_paths(run_dir):
    rd = RunDir(run_dir)
    assert os.fspath(rd) == str(run_dir) == str(rd)
    assert rd.socket == run_dir / "kernel.sock"
    assert rd.ready_file("demo") == run_dir / "demo.ready"
    assert rd.log_file("demo") == run_dir / "demo.log"
    assert rd.out_file("demo") == run_dir / "demo.out"


def test_prepare_fresh_removes_only_logs_and_state(run_dir):
    keep = ["ext2fs.img", "swap", "notes.txt", "c.toml"]
    gone = ["kernel.log", "demo.out", "demo.ready", "cluster.json", "launch.pid",
            "kernel.toml", "kernel.sock", "host_priv.secret"]
    for f in keep + gone:
        (run_dir / f).write_text("x")
    (run_dir / "sub").mkdir()
    (run_dir / "sub" / "a.log").write_text("x")
    RunDir(run_dir).prepare(["kernel", "demo"], fresh=True)
    # a fresh run gets a new host secret in place of the old one
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(keep + ["sub",
                                                                      "host_priv.secret"])
    assert (run_dir / "sub" / "a.log").exists()
    assert RunDir(run_dir).host_secret() is not None
    assert (run_dir / "host_priv.secret").stat().st_mode & 0o777 == 0o600


def test_prepare_not_fresh_keeps_logs(run_dir):
    for f in ("kernel.log", "demo.out", "demo.ready", "other.ready", "cluster.json",
              "launch.pid", "kernel.toml"):
        (run_dir / f).write_text("x")
    RunDir(run_dir).prepare(["kernel", "demo"])
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "demo.out", "host_priv.secret", "kernel.log", "kernel.toml", "other.ready"]


def test_prepare_makes_the_directory(run_dir):
    d = run_dir / "a" / "b"
    RunDir(d).prepare(["kernel"], fresh=True)
    assert d.is_dir()


def test_cluster_json_write_read_mark_exit(run_dir):
    rd = RunDir(run_dir)
    assert rd.read_cluster() is None
    (run_dir / "cluster.json").write_text("{not json")
    assert rd.read_cluster() is None
    desc = {"kernel": {"endpoint": "ipc://x", "pid": 1},
            "processes": [{"name": "kernel", "pid": 1}, {"name": "demo", "pid": 2}]}
    rd.write_cluster(desc)
    assert rd.read_cluster() == desc
    rd.mark_exit(2, -9)
    assert rd.read_cluster()["processes"][1] == {"name": "demo", "pid": 2, "exit": -9}
    assert "exit" not in rd.read_cluster()["processes"][0]
    assert [p.name for p in run_dir.iterdir()] == ["cluster.json"]  # no temp file left


def test_mark_exit_without_cluster_json(run_dir):
    RunDir(run_dir).mark_exit(2, 1)
    assert not (run_dir / "cluster.json").exists()


def test_launcher_pid_and_removal(run_dir):
    rd = RunDir(run_dir)
    assert rd.launcher_pid() is None
    rd.write_launcher_pid()
    assert rd.launcher_pid() == os.getpid()
    rd.write_cluster({})
    rd.remove_cluster_files(launcher_pid=os.getpid() + 1)  # another launcher's stays
    assert not (run_dir / "cluster.json").exists() and rd.launcher_pid() == os.getpid()
    rd.remove_cluster_files(launcher_pid=os.getpid())
    assert rd.launcher_pid() is None
    rd.write_launcher_pid(12345)
    rd.remove_cluster_files()
    assert not (run_dir / "launch.pid").exists()


def test_ready_pid_and_read_pid(run_dir):
    rd = RunDir(run_dir)
    assert rd.ready_pid("demo") is None
    rd.ready_file("demo").write_text("4242\n")
    assert rd.ready_pid("demo") == 4242
    (run_dir / "bad").write_text("x y")
    assert read_pid(run_dir / "bad") is None
    (run_dir / "empty").write_text("")
    assert read_pid(run_dir / "empty") is None


def test_kernel_endpoint(run_dir, monkeypatch):
    monkeypatch.delenv("MACHEMU_KERNEL", raising=False)
    rd = RunDir(run_dir)
    assert rd.kernel_endpoint() == f"ipc://{run_dir}/kernel.sock"
    rd.ready_file("kernel").write_text("tcp://127.0.0.1:5555\n")
    assert rd.kernel_endpoint() == "tcp://127.0.0.1:5555"


def test_unix_listening(run_dir):
    path = run_dir / "s.sock"
    assert not unix_listening(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(str(path))
        assert not unix_listening(path)  # bound, not listening
        s.listen(1)
        assert unix_listening(path)
    finally:
        s.close()
    assert not unix_listening(path)  # a stale socket file


def test_write_atomic_replaces(run_dir):
    f = run_dir / "f"
    write_atomic(f, "one")
    write_atomic(f, "two")
    assert f.read_text() == "two" and [p.name for p in run_dir.iterdir()] == ["f"]


def test_write_kernel_toml_checked_by_kernel_config(run_dir):
    rd = RunDir(run_dir)
    path = rd.write_kernel_toml({"qlimit_default": 7, "map_lookup": "list",
                                 "deactivate_on_cache": False, "heartbeat_timeout": 2.5})
    from kernel.config import KernelConfig

    cfg = KernelConfig.load(path)
    assert (cfg.qlimit_default, cfg.map_lookup, cfg.deactivate_on_cache,
            cfg.heartbeat_timeout) == (7, "list", False, 2.5)


@pytest.mark.parametrize("table,message", [
    ({"bogus": 1}, "[kernel]: unknown kernel setting 'bogus'"),
    ({"qlimit_default": 99}, "[kernel]: qlimit_default must be within 0..16"),
    ({"deactivate_on_cache": 1}, "[kernel]: deactivate_on_cache must be true or false"),
    ({"x": {"a": 1}}, "[kernel]: nested table 'x' is not a kernel setting"),
    ({"x": None}, "[kernel]: cannot pass value None on to the kernel"),
])
def test_write_kernel_toml_refuses(run_dir, table, message):
    with pytest.raises(ValueError) as e:
        RunDir(run_dir).write_kernel_toml(table)
    assert str(e.value).startswith(message)


def test_toml_value():
    assert toml_value(True) == "true" and toml_value(False) == "false"
    assert toml_value(3) == "3" and toml_value(2.5) == "2.5"
    assert toml_value('a"b') == json.dumps('a"b')
    assert toml_value([1, "x"]) == '[1, "x"]'
