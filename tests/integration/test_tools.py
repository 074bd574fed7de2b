"""The inspection tools against real kernels and translators: scripts/vmstat, vminfo,
portinfo, mach and ``launch status --watch``, each run as a command (its own task) and
its output checked against what the kernel itself reports; and bad arguments (no run
directory, a dead one, an unknown task, no host_priv) answered with a clear message and
a non-zero exit status."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from lab.process import child_env
from protocol import message as M
from protocol.defs import mach as V
from protocol.defs import mach_port as P
from protocol.defs import netname as NS
from protocol.defs import notify as N
from protocol.vm_param import PAGE_SIZE
from tests.conftest import ROOT, start_server, wait_for
from tests.integration.test_launch import start_cluster

REGION = re.compile(r"^ *0x[0-9a-f]+\[0x[0-9a-f]+\] \(prot=[0RWX]+[^)]*\)$")


def tool(name, run_dir, *args, timeout=120, input=None, binary=False):
    """scripts/NAME --run-dir DIR ARGS: the CompletedProcess (stdout bytes if
    ``binary``)."""
    argv = [sys.executable, str(ROOT / "scripts" / name)]
    if name == "launch":
        argv += [args[0], "--run-dir", str(run_dir), *args[1:]]
    else:
        argv += ["--run-dir", str(run_dir), *args]
    return subprocess.run(argv, capture_output=True, text=not binary, timeout=timeout,
                          input=input, env=child_env(), cwd=ROOT)


def ok_json(name, run_dir, *args, **kw):
    r = tool(name, run_dir, *args, "--json", **kw)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def kernel_tasks(run_dir) -> dict:
    """The kernel's own task rows (launch status --json), by name."""
    return {t["name"]: t for t in ok_json("launch", run_dir, "status", "--all")["tasks"]}


def kernel_receive_rights(run_dir, task) -> set[int]:
    st = ok_json("launch", run_dir, "status", "--all")
    return {p["name"] for p in st["ports"] if p["task"] == task}


# ---------------------------------------------------------------- a cluster under load

@pytest.mark.timeout(420)
def test_tools_on_a_cluster_under_a_storm(run_dir, procs):
    cfg = run_dir / "cluster.toml"
    cfg.write_text("[kernel]\nphysical_pages = 2048\ndata_return_cluster = 32\n")
    start_cluster(procs, run_dir, "--config", str(cfg))
    err_path = run_dir / "storm.err"
    errf = open(err_path, "w")
    storm = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "loadgen"), "--run-dir", str(run_dir),
         "--json", "storm", "--tasks", "4", "--threads", "8", "--factor", "2"], stdout=subprocess.PIPE, stderr=errf,
        text=True, env=child_env(), cwd=ROOT)
    try:
        # during the storm: ext2fs holds pagers, whose ports portinfo names as such
        def pager_port_seen():
            if storm.poll() is not None:
                raise AssertionError("the storm ended before ext2fs had a pager port: "
                                     + err_path.read_text()[-2000:])
            rows = ok_json("portinfo", run_dir, "ext2fs")["names"]
            return [r for r in rows if "receive" in r["rights"]
                    and (r["identity"] or {}).get("object")]
        pagers = wait_for(pager_port_seen, 200, interval=0.5, what="a pager port in ext2fs")
        assert all(r["receive"]["qlimit"] >= 0 and r["receive"]["msgcount"] >= 0
                   for r in pagers)
        r = tool("vmstat", run_dir, "0.5", "3", "--json")
        assert r.returncode == 0, r.stderr
        lines = [json.loads(ln) for ln in r.stdout.splitlines()]
        assert len(lines) == 3 and "delta" not in lines[0]
        for ln in lines[1:]:
            assert ln["delta"] and all(v >= 0 for v in ln["delta"].values()), ln["delta"]
        for key in ("dirty", "laundry", "data_returns in flight", "potentially dirty",
                    "writers sleeping", "paused allocations", "free", "swap size"):
            assert key in lines[-1]["values"], key
        r = tool("launch", run_dir, "status", "--watch", "--json", "--count", "2",
                 "--interval", "0.5")
        assert r.returncode == 0, r.stderr
        frames = [json.loads(ln) for ln in r.stdout.splitlines()]
        assert len(frames) == 2 and frames[1]["rates"]
        ext2 = [t for t in frames[-1]["tasks"] if t["name"] == "ext2fs"]
        assert ext2 and ext2[0]["threads"] >= 1 and ext2[0]["rss"] > 0
        assert ext2[0]["map_entries"] >= 1
        out, _ = storm.communicate(timeout=300)
    finally:
        if storm.poll() is None:
            storm.kill()
            storm.wait()
        errf.close()
    assert storm.returncode == 0, err_path.read_text()[-2000:]
    summary = json.loads(out.splitlines()[-1])
    assert summary["mismatches"] == 0

    vm = ok_json("vmstat", run_dir)
    assert vm["values"]["pageouts"] > 0 and vm["values"]["data_returns"] > 0
    assert vm["vm_statistics"]["pageouts"] * PAGE_SIZE == vm["values"]["pageouts"]
    plain = tool("vmstat", run_dir)
    assert plain.returncode == 0 and re.search(r"^pageouts: +\S+$", plain.stdout, re.M)

    # vminfo: a line per entry of the kernel's map (the map quiet between the looks)
    def same_count():
        r = tool("vminfo", run_dir, "ext2fs")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        n = kernel_tasks(run_dir)["ext2fs"]["map_entries"]
        return (lines, r.stderr) if len(lines) == n else None
    lines, err = wait_for(same_count, 120, interval=0.5, what="vminfo lines == map entries")
    assert all(REGION.match(ln) for ln in lines), [ln for ln in lines if not REGION.match(ln)]
    assert f"# entries: {len(lines)} " in err and "# lookup: tree" in err
    assert re.search(r"# merges, clips: \d+ merges, \d+ clips", err), err
    j = ok_json("vminfo", run_dir, "ext2fs")
    regions = j["regions"]
    assert all(a["address"] + a["size"] <= b["address"] for a, b in zip(regions, regions[1:]))
    kinds = {o["id"]: o["kind"] for o in j["objects"]}
    assert "internal" in kinds.values()  # the threads' stacks
    holes = tool("vminfo", run_dir, "ext2fs", "--holes", "--no-summary")
    assert "(hole)" in holes.stdout and holes.stderr == ""

    # portinfo: the receive rights the kernel says ext2fs holds
    def same_rights():
        rows = ok_json("portinfo", run_dir, "ext2fs", "--receive")["names"]
        mine = {r["name"] for r in rows}
        return rows if mine == kernel_receive_rights(run_dir, "ext2fs") else None
    rows = wait_for(same_rights, 120, interval=0.5, what="portinfo receive rights")
    assert rows and all(r["receive"]["qlimit"] >= 1 for r in rows)
    v = tool("portinfo", run_dir, "-v", "ext2fs")
    assert v.returncode == 0
    assert re.search(r"^ +\d+: send \(refs: \d+\) \{-> kernel, port \d+, host\}$",
                     v.stdout, re.M), v.stdout
    assert re.search(r"^ +\d+: port-set \(", v.stdout, re.M), v.stdout


# ---------------------------------------------------------------- exact content

@pytest.mark.timeout(120)
def test_portinfo_and_vminfo_show_exactly_a_tasks_rights_and_map(kernel, tasks):
    run_dir = kernel.run_dir
    probe, other = tasks.new("probe", priv=False), tasks.new("other", priv=False)
    me = probe.task_self
    recv = P.mach_port_allocate(me, M.MACH_PORT_RIGHT_RECEIVE, rt=probe)
    P.mach_port_insert_right(me, recv, (recv, M.MACH_MSG_TYPE_MAKE_SEND), rt=probe)
    P.mach_port_mod_refs(me, recv, M.MACH_PORT_RIGHT_SEND, 2, rt=probe)
    P.mach_port_set_qlimit(me, recv, 7, rt=probe)
    for i in range(2):
        probe.send(M.Message(1000 + i, recv, M.MACH_MSG_TYPE_COPY_SEND), timeout=5)
    notify = P.mach_port_allocate(me, M.MACH_PORT_RIGHT_RECEIVE, rt=probe)
    P.mach_port_request_notification(me, recv, N.MACH_NOTIFY_NO_SENDERS, 1, notify, rt=probe)
    member = P.mach_port_allocate(me, M.MACH_PORT_RIGHT_RECEIVE, rt=probe)
    pset = P.mach_port_allocate(me, M.MACH_PORT_RIGHT_PORT_SET, rt=probe)
    P.mach_port_move_member(me, member, pset, rt=probe)
    dead = P.mach_port_allocate(me, M.MACH_PORT_RIGHT_DEAD_NAME, rt=probe)
    P.mach_port_mod_refs(me, dead, M.MACH_PORT_RIGHT_DEAD_NAME, 1, rt=probe)
    # other gets a send right to recv (through the name server) and asks for its death
    NS.netname_check_in(probe.name_server, "probe-port", recv, recv, rt=probe)
    theirs = NS.netname_look_up(other.name_server, "", "probe-port", rt=other)
    onotify = P.mach_port_allocate(other.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=other)
    P.mach_port_request_notification(other.task_self, theirs, N.MACH_NOTIFY_DEAD_NAME, 1,
                                     onotify, rt=other)

    j = ok_json("portinfo", run_dir, f"id:{probe.task_id}")
    assert j["task"]["name"] == "probe"
    rows = {r["name"]: r for r in j["names"]}
    assert set(rows) == set(P.mach_port_names(me, rt=probe)[0])
    r = rows[recv]
    assert r["rights"] == ["receive", "send"] and r["refs"] == {"send": 3}
    st = r["receive"]
    assert st["qlimit"] == 7 and st["msgcount"] == 2 and st["nsrequest"] == 1
    # send rights: ours, other's, the name server's two (port and signature) and the
    # destination right each of the two queued messages holds
    assert st["dnrequests"] == 1 and st["send_rights"] == 6
    assert rows[pset]["members"] == [member] and rows[member]["receive"]["pset"] == pset
    assert rows[dead]["rights"] == ["dead-name"] and rows[dead]["refs"] == {"dead-name": 2}
    assert rows[me]["identity"]["kotype"] == "task"
    text = tool("portinfo", run_dir, "-v", f"id:{probe.task_id}", str(recv)).stdout
    assert text == (f"{recv:6d}: receive, send (seqno: 0, ms-count: 1, qlimit: 7, msgs: 2, "
                    f"send-rights, ns-req) (refs: 3) {{2/7 queued, 1 dead-name requests}}\n")
    # --translate: recv in probe is `theirs` in other; our kernel ports map too
    x = ok_json("portinfo", run_dir, f"id:{probe.task_id}", "-t", f"id:{other.task_id}")
    pairs = {r["from_name"]: r["name"] for r in x["names"]}
    assert pairs[recv] == theirs and pairs[probe.host] == other.host
    assert x["translate"]["name"] == "other"
    row = [r for r in x["names"] if r["from_name"] == recv][0]
    assert row["dnrequest"] and row["rights"] == ["send"]
    plain = tool("portinfo", run_dir, f"id:{probe.task_id}", "-t", f"id:{other.task_id}")
    assert f"{recv:6d} => {theirs:6d}: send\n" in plain.stdout

    # vminfo: three regions, the middle one clipped by a guard page
    base = V.vm_allocate(me, 0, 8 * PAGE_SIZE, True, rt=probe)
    V.vm_protect(me, base + 2 * PAGE_SIZE, PAGE_SIZE, False, V.VM_PROT_NONE, rt=probe)
    V.vm_write(me, base, b"x" * PAGE_SIZE, rt=probe)
    r = tool("vminfo", run_dir, f"id:{probe.task_id}")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # the object is made at the first fault (vm_write), of the first entry only; the
    # clipped ones keep their offsets into the range
    assert re.fullmatch(rf"{base:#10x}\[0x2000\] \(prot=RW, max_prot=RWX, mem_obj=\d+\)",
                        lines[0]), lines
    assert lines[1:] == [f"{base + 0x2000:#10x}[0x1000] (prot=0, max_prot=RWX, offs=0x2000)",
                         f"{base + 0x3000:#10x}[0x5000] (prot=RW, max_prot=RWX, offs=0x3000)"]
    assert "# entries: 3 (vm_region listed 3)" in r.stderr
    one = tool("vminfo", run_dir, f"id:{probe.task_id}", hex(base + 2 * PAGE_SIZE + 5))
    assert one.stdout.splitlines() == [lines[1]]


# ---------------------------------------------------------------- the file client

@pytest.fixture
def fs_cluster(run_dir, procs):
    """A kernel with ext2fs (fresh 32 MiB image) and memfs."""
    from tests.conftest import start_kernel

    start_kernel(run_dir, procs)
    start_server(procs, run_dir, "translators.ext2fs", "ext2fs", "--size-mib", "32",
                 "--sync-interval", "0")
    start_server(procs, run_dir, "translators.memfs", "memfs")
    return run_dir


@pytest.mark.timeout(240)
@pytest.mark.parametrize("server", ["ext2fs", "memfs"])
def test_mach_put_cat_ls_stat_rm_mkdir_sync(fs_cluster, server, tmp_path):
    run_dir = fs_cluster
    data = os.urandom(2_500_000)  # more than one io_write / io_read
    src = tmp_path / "src.bin"
    src.write_bytes(data)

    def mach(*args, **kw):
        r = tool("mach", run_dir, *args, **kw)
        assert r.returncode == 0, (args, r.stderr)
        return r

    mach("mkdir", f"{server}:/d")
    mach("put", str(src), f"{server}:/d/f")
    got = tool("mach", run_dir, "cat", f"{server}:/d/f", binary=True)
    assert got.returncode == 0 and got.stdout == data
    mach("put", "-", f"{server}:/d/small", input="hello\n")
    assert mach("cat", f"{server}:/d/small").stdout == "hello\n"
    assert mach("ls", f"{server}:/d").stdout.split() == ["f", "small"]
    long = mach("ls", "-l", f"{server}:/d").stdout.splitlines()
    assert long[0].startswith("-rw-r--r--") and f" {len(data)} " in long[0]
    st = json.loads(mach("stat", f"{server}:/d/f", "--json").stdout)
    assert st["st_size"] == len(data)
    entries = json.loads(mach("ls", f"{server}:/d", "--json").stdout)
    assert {e["name"]: e["stat"]["st_size"] for e in entries} == {"f": len(data), "small": 6}
    mach("sync", server)
    mach("sync", f"{server}:/d/f")
    r = tool("mach", run_dir, "rm", f"{server}:/d")
    assert r.returncode != 0 and "ENOTEMPTY" in r.stderr
    mach("rm", f"{server}:/d/f")
    mach("rm", f"{server}:/d/small")
    mach("rm", f"{server}:/d")
    assert "d" not in mach("ls", f"{server}:/").stdout.split()
    r = tool("mach", run_dir, "cat", f"{server}:/d/f")
    assert r.returncode != 0 and "ENOENT" in r.stderr


# ---------------------------------------------------------------- bad arguments

@pytest.mark.timeout(180)
def test_bad_arguments_get_a_clear_message_and_a_failure(run_dir, kernel, tmp_path):
    missing = tmp_path / "nope"
    dead = tmp_path / "dead"
    dead.mkdir()
    (dead / "kernel.sock").write_bytes(b"")  # a socket file nobody listens on
    for name, args in (("vmstat", ()), ("vminfo", ("ext2fs",)), ("portinfo", ("ext2fs",)),
                       ("mach", ("ls", "ext2fs:/"))):
        r = tool(name, missing, *args)
        assert r.returncode != 0 and f"{name}: no run directory {missing}" in r.stderr
        r = tool(name, dead, *args)
        assert r.returncode != 0 and "no kernel listening" in r.stderr, r.stderr
    r = tool("launch", dead, "status", "--watch")
    assert r.returncode != 0 and "no kernel listening" in r.stderr
    for name in ("vminfo", "portinfo"):
        r = tool(name, run_dir, "nosuch")
        assert r.returncode != 0 and f"{name}: no task 'nosuch' in the kernel" in r.stderr
    r = tool("portinfo", run_dir, "nosuch", "-t", "also")
    assert r.returncode != 0 and "no task" in r.stderr
    r = tool("mach", run_dir, "ls", "nosuch:/")
    assert r.returncode != 0 and "not found in the name server" in r.stderr
    r = tool("mach", run_dir, "ls", "ext2fs")
    assert r.returncode != 0 and "expected SERVER:/PATH" in r.stderr
    r = tool("vmstat", run_dir, "-1")
    assert r.returncode != 0
    r = tool("vminfo", run_dir, "1", "zz")
    assert r.returncode != 0 and "invalid address" in r.stderr
    # without the owner's secret: no host_priv, said so; vmstat needs none
    secret = run_dir / "host_priv.secret"
    secret.rename(run_dir / "kept.secret")
    try:
        for name in ("vminfo", "portinfo"):
            r = tool(name, run_dir, "1")
            assert r.returncode != 0 and "needs the privileged host port" in r.stderr
            assert "host_priv.secret does not exist" in r.stderr
        r = tool("launch", run_dir, "status", "--watch", "--count", "1")
        assert r.returncode != 0 and "privileged host port" in r.stderr
        assert tool("vmstat", run_dir).returncode == 0
    finally:
        (run_dir / "kept.secret").rename(secret)
