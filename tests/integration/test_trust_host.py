"""host_priv against a real kernel (DESIGN §8a): a plain task cannot stop the cluster,
become the default pager or read other tasks' kernel info, and everything goes on; the
owner's tools (the run directory's secret) still can; the secret file is the owner's
alone; a wrong secret earns nothing and is counted."""

from __future__ import annotations

import os
import stat

import pytest

from lab.client import ClusterClient
from lab.cluster import kernel_argv
from lab.rundir import RunDir
from lab.status import collect
from protocol import message as M
from protocol.defs import mach as V
from protocol.defs import mach_port as P
from protocol.defs import machemu as X
from protocol.defs import netname as NS
from protocol.host_secret import SECRET_FILE
from protocol.kern_return import KernReturn as K
from protocol.kern_return import MachError
from protocol.runtime import TaskRuntime
from tests.conftest import log_records, ready_or_fail, start_server

pytestmark = pytest.mark.timeout(120)
T = 30


def code_of(fn, *args, **kw):
    with pytest.raises(MachError) as e:
        fn(*args, timeout=T, **kw)
    return e.value.code


def test_secret_file_is_mode_0600(kernel):
    st = os.stat(kernel.run_dir / SECRET_FILE)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.getuid()


def test_kernel_started_alone_makes_its_secret_0600_and_refuses_a_public_one(run_dir, procs):
    old = os.umask(0o022)
    try:
        p = procs.start(kernel_argv(run_dir), name="kernel")
        ready_or_fail(p, 30)
    finally:
        os.umask(old)
    path = run_dir / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = RunDir(run_dir).host_secret()
    endpoint = RunDir(run_dir).kernel_endpoint()
    with TaskRuntime(endpoint, "owner", secret=secret) as rt:
        assert rt.host_priv
        X.machemu_shutdown(rt.host_priv, timeout=T, rt=rt)
    assert p.p.wait(30) == 0, p.output()
    # A secret file others may read is not trusted: the kernel will not start on it.
    path.chmod(0o644)
    p = procs.start(kernel_argv(run_dir), name="kernel2")
    assert p.p.wait(30) != 0
    assert "0600" in p.output()


def test_plain_task_gets_no_host_priv_and_a_wrong_secret_is_counted(kernel, tasks):
    plain = TaskRuntime(kernel, "plain")
    wrong = TaskRuntime(kernel, "wrong", secret=b"w" * 32)
    try:
        assert plain.host_priv == M.MACH_PORT_NULL and wrong.host_priv == M.MACH_PORT_NULL
        owner = tasks.new("owner")
        assert owner.host_priv not in (M.MACH_PORT_NULL, owner.host)
        info = X.machemu_kernel_info(owner.host_priv, timeout=T, rt=owner)
        assert info["stats"]["host_priv_refused"] == 1
        assert info["stats"]["host_priv_granted"] >= 1
        recs = log_records(kernel.run_dir / "kernel.log")
        assert [r for r in recs if r.get("event") == "wrong host secret: no host_priv"
                and r.get("task") == "wrong"]
    finally:
        plain.close()
        wrong.close()


def test_plain_task_cannot_stop_the_cluster_or_become_the_default_pager(kernel, tasks,
                                                                          procs, run_dir):
    start_server(procs, run_dir, "translators.defpager", "defpager", "--swap-size", "4")
    owner = tasks.new("owner")
    real = NS.netname_look_up(owner.name_server, "", "defpager", timeout=T, rt=owner)
    attacker = tasks.new("attacker", priv=False)
    assert attacker.host_priv == M.MACH_PORT_NULL
    assert code_of(X.machemu_shutdown, attacker.host, rt=attacker) == K.KERN_INVALID_HOST
    mine = P.mach_port_allocate(attacker.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=attacker)
    assert code_of(V.vm_set_default_memory_manager, attacker.host, mine,
                   rt=attacker) == K.KERN_INVALID_HOST
    assert code_of(V.vm_set_default_memory_manager, attacker.host, 0,
                   rt=attacker) == K.KERN_INVALID_HOST
    # The kernel runs on, the default pager is still the defpager's port.
    assert kernel.proc.p.poll() is None
    current = V.vm_set_default_memory_manager(owner.host_priv, 0, timeout=T, rt=owner)
    assert current == real
    info = X.machemu_kernel_info(owner.host_priv, timeout=T, rt=owner)
    assert info["stats"]["host_priv_denied"] == 3
    # The attacker's port got nothing from the kernel (no memory_object_create).
    with pytest.raises(MachError):
        attacker.receive(mine, timeout=0.5)
    # The owner still can stop it.
    X.machemu_shutdown(owner.host_priv, timeout=T, rt=owner)
    assert kernel.proc.p.wait(30) == 0


def test_kernel_info_on_the_host_port_shows_only_the_callers_task(kernel, tasks):
    a = tasks.new("a", priv=False)
    b = tasks.new("b", priv=False)
    P.mach_port_allocate(b.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=b)
    own = X.machemu_kernel_info(a.host, timeout=T, rt=a)
    assert [t["id"] for t in own["tasks"]] == [a.task_id]
    assert {p["task_id"] for p in own["ports"]} <= {a.task_id}
    assert own["stats"]["tasks_created"] >= 2 and own["vm"]
    assert own["kernel"]["pid"] == kernel.proc.pid
    owner = tasks.new("owner")
    full = X.machemu_kernel_info(owner.host_priv, timeout=T, rt=owner)
    assert {a.task_id, b.task_id, owner.task_id} <= {t["id"] for t in full["tasks"]}
    assert b.task_id in {p["task_id"] for p in full["ports"]}


def test_owner_tools_status_and_cluster_client_see_every_task(kernel, tasks):
    other = tasks.new("bystander", priv=False)
    status = collect(RunDir(kernel.run_dir))
    assert "bystander" in {t["name"] for t in status["tasks"]}
    with ClusterClient(kernel.run_dir, name="lab-tool") as cl:
        cl.connect()
        assert cl.rt.host_priv
        ki = cl.kernel_info()
        assert {"bystander", "lab-tool"} <= {t["name"] for t in ki["tasks"]}
    assert other.host_priv == M.MACH_PORT_NULL
