"""host_priv and the sender trailer, in-process: the owner's secret file
(protocol.host_secret), the OP_HELLO that shows it, the host routines on each host port,
and the K_MSG sender field (the kernel's, 0, or the sending task's id), through a real
``kernel.main.Kernel`` fed wire frames (tests.unit.test_kernel_ipc's RecordingKernel)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import uuid

import pytest

from protocol import host_secret as HS
from protocol import message as M
from protocol.defs import mach as MD
from protocol.defs import mach_port as P
from protocol.defs import machemu as X
from protocol.defs import netname as NS
from protocol.defs import notify as N
from protocol.kern_return import KernReturn as K
from protocol.kern_return import MachMsgReturn as R
from tests.unit.test_kernel_ipc import KTask, RecordingKernel, got, msg

pytestmark = pytest.mark.timeout(30)

SECRET = b"s" * 32


class SecretKernel(RecordingKernel):
    def __init__(self, endpoint):
        super().__init__(endpoint)
        self.host_secret = SECRET


class HelloTask(KTask):
    """A task whose hello carries ``secret`` (none: a plain hello)."""

    def __init__(self, k, name, *secret):
        self.k, self.ident, self.name = k, b"t" + uuid.uuid4().bytes, name
        self.seq = 0
        self.hello = self._op([M.OP_HELLO, 1, 0, os.getpid(), name, "task", *secret])
        if self.hello is None:  # disconnected (sent at once, not through emit)
            return
        self.task_self, self.host, self.name_server, self.task_id = (
            self.hello[M.A_TASK_SELF], self.hello[M.A_HOST], self.hello[M.A_NAME_SERVER],
            self.hello[M.A_TASK_ID])
        self.host_priv = self.hello[M.A_HOST_PRIV]
        self.task = k.tasks[self.ident]
        self._reply = 0


@pytest.fixture
def k():
    d = tempfile.mkdtemp(prefix="mk", dir="/tmp")
    kern = SecretKernel(f"ipc://{d}/k.sock")
    yield kern
    for t in list(kern.tasks.values()):
        kern.task_destroy(t, "test over")
    kern.close()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="hs", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- the secret file

def test_secret_file_is_made_0600_whatever_the_umask_and_kept(tmp):
    old = os.umask(0)
    try:
        s = HS.make_host_secret(tmp)
    finally:
        os.umask(old)
    st = os.stat(HS.secret_path(tmp))
    assert stat.S_IMODE(st.st_mode) == 0o600 and len(s) == HS.SECRET_BYTES
    assert HS.read_host_secret(tmp) == s == HS.make_host_secret(tmp)
    assert sorted(os.listdir(tmp)) == [HS.SECRET_FILE]  # no temporary left behind


def test_secret_file_readable_by_others_or_malformed_is_not_trusted(tmp):
    assert HS.read_host_secret(tmp) is None
    path = HS.secret_path(tmp)
    HS.make_host_secret(tmp)
    os.chmod(path, 0o644)
    with pytest.raises(HS.HostSecretError, match="0600"):
        HS.read_host_secret(tmp)
    with pytest.raises(HS.HostSecretError):
        HS.make_host_secret(tmp)  # not silently replaced either
    os.chmod(path, 0o600)
    path.write_text("not hex\n")
    with pytest.raises(HS.HostSecretError, match="hex"):
        HS.read_host_secret(tmp)
    path.write_text("abcd\n")
    with pytest.raises(HS.HostSecretError, match="bytes"):
        HS.read_host_secret(tmp)


def test_secret_matches_only_the_same_bytes():
    assert HS.secret_matches(SECRET, SECRET)
    assert not HS.secret_matches(b"t" * 32, SECRET)
    assert not HS.secret_matches(SECRET[:-1], SECRET)
    assert not HS.secret_matches(SECRET.hex(), SECRET)  # str, not bytes
    assert not HS.secret_matches(SECRET, None)  # a kernel without a secret grants none


# ---------------------------------------------------------------- hello

def test_hello_with_the_secret_gets_host_priv_others_do_not(k):
    plain = HelloTask(k, "plain")
    owner = HelloTask(k, "owner", SECRET)
    wrong = HelloTask(k, "wrong", b"x" * 32)
    assert plain.host_priv == M.MACH_PORT_NULL and wrong.host_priv == M.MACH_PORT_NULL
    assert owner.host_priv not in (M.MACH_PORT_NULL, owner.host)
    assert owner.space.lookup(owner.host_priv).object is k.host_priv_port
    assert plain.space.name_of(k.host_priv_port) is None
    assert wrong.space.name_of(k.host_priv_port) is None
    assert k.stats["host_priv_granted"] == 1 and k.stats["host_priv_refused"] == 1
    assert 0 not in (plain.task_id, owner.task_id, wrong.task_id)  # 0 is the kernel's


@pytest.mark.parametrize("bad", [123, "s" * 32, None, b"s" * (HS.MAX_SECRET_BYTES + 1)])
def test_malformed_secret_in_hello_disconnects_that_peer(k, bad):
    t = HelloTask(k, "bad", bad)
    assert t.hello is None and t.ident not in k.tasks
    assert k.stats["peers_disconnected"] == 1
    assert HelloTask(k, "next", SECRET).host_priv  # the kernel goes on


def test_no_kernel_secret_means_no_host_priv(k):
    k.host_secret = None
    assert HelloTask(k, "owner?", SECRET).host_priv == M.MACH_PORT_NULL


# ---------------------------------------------------------------- host routines

def test_host_priv_routines_on_the_plain_host_port_get_kern_invalid_host(k):
    plain = HelloTask(k, "plain")
    port = plain.port()
    plain.ok(P.mach_port_insert_right, port, (port, M.MACH_MSG_TYPE_MAKE_SEND))
    assert plain.err(X.machemu_shutdown, dest=plain.host) == K.KERN_INVALID_HOST
    assert k.running
    code = plain.err(MD.vm_set_default_memory_manager, port,
                     dest=plain.host)
    assert code == K.KERN_INVALID_HOST and k.vm.default_pager is None
    assert plain.err(MD.vm_set_default_memory_manager, 0, dest=plain.host) == \
        K.KERN_INVALID_HOST
    assert k.stats["host_priv_denied"] == 3
    # the right the refused call carried came back to nobody: only ours is left
    assert plain.refs(port) == 1


def test_host_priv_serves_them(k):
    owner = HelloTask(k, "owner", SECRET)
    port = owner.port()
    owner.ok(P.mach_port_insert_right, port, (port, M.MACH_MSG_TYPE_MAKE_SEND))
    assert not owner.ok(MD.vm_set_default_memory_manager, port, dest=owner.host_priv)
    assert k.vm.default_pager is not None
    assert owner.ok(MD.vm_set_default_memory_manager, 0, dest=owner.host_priv)
    assert owner.ok(X.machemu_shutdown, dest=owner.host_priv) is None
    assert not k.running


def test_kernel_info_on_the_plain_host_port_tells_only_the_callers_task(k):
    a = HelloTask(k, "a")
    b = HelloTask(k, "b")
    owner = HelloTask(k, "owner", SECRET)
    b.port()
    a.port()
    mine = a.ok(X.machemu_kernel_info, dest=a.host)
    assert [t["id"] for t in mine["tasks"]] == [a.task_id]
    assert mine["ports"] and {p["task_id"] for p in mine["ports"]} == {a.task_id}
    assert "stats" in mine and "vm" in mine and mine["kernel"]["pid"] == os.getpid()
    full = owner.ok(X.machemu_kernel_info, dest=owner.host_priv)
    assert {t["id"] for t in full["tasks"]} == {a.task_id, b.task_id, owner.task_id}
    assert {p["task_id"] for p in full["ports"]} >= {a.task_id, b.task_id}
    # host_priv is a host port too: the plain routine works on both
    assert owner.ok(X.machemu_kernel_info, dest=owner.host)["tasks"][0]["id"] == \
        owner.task_id


# ---------------------------------------------------------------- the sender trailer

def test_k_msg_carries_the_senders_task_id(k):
    a, b = HelloTask(k, "a"), HelloTask(k, "b")
    port = b.port()
    b.ok(P.mach_port_insert_right, port, (port, M.MACH_MSG_TYPE_MAKE_SEND))
    b.ok(NS.netname_check_in, "b-port", port, port, dest=b.name_server)
    to_b = a.ok(NS.netname_look_up, "", "b-port", dest=a.name_server)
    assert a.send(msg(to_b, msgh_id=4242)) == 0
    hdr = got(b.receive(port), 4242)
    assert hdr[M.A_SENDER] == a.task_id != 0
    assert b.send(msg(port, msgh_id=4243)) == 0
    assert got(b.receive(port), 4243)[M.A_SENDER] == b.task_id
    # a message the kernel sends (a no-senders notification) carries 0
    n = b.port()
    b.notify_request(port, N.MACH_NOTIFY_NO_SENDERS, n)
    a.ok(P.mach_port_deallocate, to_b)
    b.ok(NS.netname_check_out, "b-port", port, dest=b.name_server)
    b.ok(P.mach_port_mod_refs, port, M.MACH_PORT_RIGHT_SEND, -1)
    hdr = got(b.receive(n), N.MACH_NOTIFY_NO_SENDERS)
    assert hdr[M.A_SENDER] == M.KERNEL_SENDER == 0
    # and a kernel routine's reply too
    assert b.call(P.mach_port_type, b.task_self, port)[0] == 0
    reply = [f for f in b.answers(1) if f[0][M.A_KIND] == M.K_MSG][-1][0]
    assert reply[M.A_ID] == P.mach_port_type.reply_id and reply[M.A_SENDER] == 0


def test_a_message_does_not_choose_its_trailer(k):
    """The header a task sends has no sender field: one more field is a bad header,
    never a trailer."""
    a = HelloTask(k, "a")
    port = a.port()
    hdr = [M.OP_MSG, 1, 99, M.MACH_SEND_MSG, -1, 0, -1, 1000, port, 20, 0, 0, [], [], 0]
    a.k.handle([a.ident, M.packb(hdr), M.packb([])])
    assert a.frames()[-1][0][M.A_CODE] == R.MACH_SEND_INVALID_HEADER
