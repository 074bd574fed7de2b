"""Forgeries against real translators (DESIGN §8a): what only the kernel may send
(notifications, memory_object_*) sent by a task instead is refused and counted
(``not_from_kernel`` in the translator's stats line) and bystanders are still served;
a client cannot take over or remove a translator's name-server entry."""

from __future__ import annotations

import pytest

from protocol import message as M
from protocol.defs import fs as F
from protocol.defs import mach as VM
from protocol.defs import mach_port as P
from protocol.defs import memory_object as MO
from protocol.defs import netname as NS
from protocol.defs import notify as N
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE
from tests.conftest import log_records, start_server, wait_for

pytestmark = pytest.mark.timeout(120)
T = 30
NETNAME_NOT_YOUR_ENTRY = 2801
RW_CREAT = F.O_READ | F.O_WRITE | F.O_CREAT
COPY_SEND = M.MACH_MSG_TYPE_COPY_SEND
SERVERS = {"ext2fs": "translators.ext2fs", "memfs": "translators.memfs"}
FIRST_NAME = 0x101  # the kernel's first port name


def start(procs, run_dir, name):
    return start_server(procs, run_dir, SERVERS[name], name, "--stats-interval", "0.2")


def refused(run_dir, name) -> int:
    """The translator's latest count of refused forgeries (its stats line)."""
    recs = [r for r in log_records(run_dir / f"{name}.log") if r.get("event") == "stats"]
    return recs[-1].get("not_from_kernel", 0) if recs else 0


def wait_refused(run_dir, name, n):
    wait_for(lambda: refused(run_dir, name) >= n, 60, what=f"{name} refusing {n} forgeries")


def open_file(rt, root, path):
    retry, _, port = F.dir_lookup(root, path, RW_CREAT, 0o644, timeout=T, rt=rt)
    assert retry == F.FS_RETRY_NORMAL and port
    return port


def bystander_is_served(rt, name, path="bystander", data=b"still served\n"):
    """A fresh client: look the server up, create, write, read back."""
    root = NS.netname_look_up(rt.name_server, "", name, timeout=T, rt=rt)
    f = open_file(rt, root, path)
    assert F.io_write(f, data, 0, timeout=T, rt=rt) == len(data)
    assert F.io_read(f, 0, len(data), timeout=T, rt=rt) == data
    return root


def new_port(rt, send=True):
    n = P.mach_port_allocate(rt.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=rt)
    if send:
        P.mach_port_insert_right(rt.task_self, n, (n, M.MACH_MSG_TYPE_MAKE_SEND), rt=rt)
    return n


# ---------------------------------------------------------------- the name server

@pytest.mark.parametrize("name", ["ext2fs", "memfs"])
def test_client_cannot_hijack_or_check_out_a_translators_name(kernel, tasks, procs, run_dir,
                                                              name):
    p = start(procs, run_dir, name)
    attacker = tasks.new("attacker", priv=False)
    root = NS.netname_look_up(attacker.name_server, "", name, timeout=T, rt=attacker)
    mine = new_port(attacker)
    with pytest.raises(MachError) as e:  # signed with the root port it was given
        NS.netname_check_in(attacker.name_server, name, root, mine, timeout=T, rt=attacker)
    assert e.value.code == NETNAME_NOT_YOUR_ENTRY
    for sig in (root, 0, mine):
        with pytest.raises(MachError) as e:
            NS.netname_check_out(attacker.name_server, name, sig, timeout=T, rt=attacker)
        assert e.value.code == NETNAME_NOT_YOUR_ENTRY
    # A bystander's look-up reaches the real server, not the attacker.
    bystander_is_served(tasks.new("bystander", priv=False), name)
    with pytest.raises(MachError):
        attacker.receive(mine, timeout=0.5)
    assert p.alive()


def test_null_signature_entry_is_nobodys(kernel, tasks):
    a = tasks.new("a", priv=False)
    b = tasks.new("b", priv=False)
    pa = new_port(a)
    NS.netname_check_in(a.name_server, "unsigned", 0, pa, timeout=T, rt=a)
    pb = new_port(b)
    with pytest.raises(MachError) as e:
        NS.netname_check_in(b.name_server, "unsigned", 0, pb, timeout=T, rt=b)
    assert e.value.code == NETNAME_NOT_YOUR_ENTRY
    with pytest.raises(MachError) as e:
        NS.netname_check_out(b.name_server, "unsigned", 0, timeout=T, rt=b)
    assert e.value.code == NETNAME_NOT_YOUR_ENTRY
    got = NS.netname_look_up(b.name_server, "", "unsigned", timeout=T, rt=b)
    b.send(M.Message(4321, got, COPY_SEND), timeout=T)
    assert a.receive(pa, timeout=T).msgh_id == 4321


# ---------------------------------------------------------------- forged notifications

def forge(kind, rt, root) -> int:
    """Send forged notifications of ``kind`` to ``root``; returns how many."""
    if kind == "no_senders":  # would destroy the root port
        for mscount in (0, 1, 2, 1000):
            N.mach_notify_no_senders(root, mscount, dest_disp=COPY_SEND, timeout=T, rt=rt)
        return 4
    if kind == "port_destroyed":  # hands over a receive right, as if ours came back
        N.mach_notify_port_destroyed(root, new_port(rt, send=False), dest_disp=COPY_SEND,
                                     timeout=T, rt=rt)
        return 1
    # dead-name naming the server's own rights: names are handed out in order, so the
    # server's are all below the attacker's first one
    victims = range(FIRST_NAME, rt.task_self)
    for victim in victims:
        N.mach_notify_dead_name(root, victim, dest_disp=COPY_SEND, timeout=T, rt=rt)
    return len(victims)


@pytest.mark.parametrize("kind", ["no_senders", "port_destroyed", "dead_name"])
@pytest.mark.parametrize("name", ["ext2fs", "memfs"])
def test_forged_notifications_to_a_root_port_are_refused(kernel, tasks, procs, run_dir,
                                                        name, kind):
    p = start(procs, run_dir, name)
    early = tasks.new("early", priv=False)  # holds the root port from before
    eroot = NS.netname_look_up(early.name_server, "", name, timeout=T, rt=early)
    attacker = tasks.new("attacker", priv=False)
    root = NS.netname_look_up(attacker.name_server, "", name, timeout=T, rt=attacker)
    wait_refused(run_dir, name, forge(kind, attacker, root))
    bystander_is_served(tasks.new("bystander", priv=False), name)
    f = open_file(early, eroot, "early")
    assert F.io_read(f, 0, 10, timeout=T, rt=early) == b""
    assert p.alive()
    # The kernel's own notifications are still believed: a protid whose last send right
    # goes away is freed (no-senders, sender 0).
    P.mach_port_deallocate(early.task_self, f, rt=early)
    wait_for(lambda: (last := [r for r in log_records(run_dir / f"{name}.log")
                               if r.get("event") == "stats"])
             and last[-1].get("protids_freed", 0) >= 1, 60, what="protids freed")


def test_runtime_message_sender_is_the_kernels_trailer(kernel, tasks):
    a = tasks.new("a", priv=False)
    b = tasks.new("b", priv=False)
    pb = new_port(b)
    NS.netname_check_in(b.name_server, "b", b.task_self, pb, timeout=T, rt=b)
    to_b = NS.netname_look_up(a.name_server, "", "b", timeout=T, rt=a)
    a.send(M.Message(4242, to_b, COPY_SEND), timeout=T)
    m = b.receive(pb, timeout=T)
    assert m.msgh_id == 4242 and m.sender == a.task_id != M.KERNEL_SENDER
    # a no-senders notification is the kernel's: sender 0
    P.mach_port_request_notification(b.task_self, pb, N.MACH_NOTIFY_NO_SENDERS, 0, pb,
                                     timeout=T, rt=b)
    NS.netname_check_out(b.name_server, "b", b.task_self, timeout=T, rt=b)
    P.mach_port_deallocate(a.task_self, to_b, rt=a)
    P.mach_port_mod_refs(b.task_self, pb, M.MACH_PORT_RIGHT_SEND, -1, rt=b)
    m = b.receive(pb, timeout=T)
    assert m.msgh_id == N.MACH_NOTIFY_NO_SENDERS and m.sender == M.KERNEL_SENDER


# ---------------------------------------------------------------- forged pager messages

@pytest.mark.parametrize("name", ["ext2fs", "memfs"])
def test_forged_memory_object_messages_to_a_pager_are_refused(kernel, tasks, procs,
                                                             run_dir, name):
    start(procs, run_dir, name)
    attacker = tasks.new("attacker", priv=False)
    aroot = NS.netname_look_up(attacker.name_server, "", name, timeout=T, rt=attacker)
    # A new file's pager, not yet initialized by the kernel: a forged init would make
    # the attacker its kernel (memory_object_ready to the attacker's control port).
    af = open_file(attacker, aroot, "fresh")
    rd, wt = F.io_map(af, timeout=T, rt=attacker)
    obj = rd or wt
    assert obj
    control, oname = new_port(attacker), new_port(attacker)
    MO.memory_object_init(obj, control, oname, PAGE_SIZE, timeout=T, rt=attacker)
    MO.memory_object_data_request(obj, control, 0, PAGE_SIZE, VM.VM_PROT_READ, timeout=T,
                                  rt=attacker)
    MO.memory_object_data_unlock(obj, control, 0, PAGE_SIZE, VM.VM_PROT_WRITE, timeout=T,
                                 rt=attacker)
    MO.memory_object_data_return(obj, control, 0, b"\xee" * PAGE_SIZE, True, False,
                                 timeout=T, rt=attacker)
    MO.memory_object_lock_completed(obj, control, 0, PAGE_SIZE, dest_disp=COPY_SEND,
                                    timeout=T, rt=attacker)
    MO.memory_object_terminate(obj, new_port(attacker, send=False),
                               new_port(attacker, send=False), timeout=T, rt=attacker)
    wait_refused(run_dir, name, 6)
    # Nothing (memory_object_ready, data_supply) came to the forged control port.
    with pytest.raises(MachError):
        attacker.receive(control, timeout=0.5)
    # The file is served to a bystander: io_write, io_read and a mapping.
    reader = tasks.new("reader", priv=False)
    rroot = NS.netname_look_up(reader.name_server, "", name, timeout=T, rt=reader)
    rf = open_file(reader, rroot, "fresh")
    data = bytes(range(256)) * (2 * PAGE_SIZE // 256)
    assert F.io_write(rf, data, 0, timeout=T, rt=reader) == len(data)
    assert F.io_read(rf, 0, len(data), timeout=T, rt=reader) == data
    rrd, _ = F.io_map(rf, timeout=T, rt=reader)
    addr = VM.vm_map(reader.task_self, 0, len(data), 0, True, rrd, 0, False, VM.VM_PROT_READ,
                     VM.VM_PROT_READ, VM.VM_INHERIT_NONE, timeout=T, rt=reader)
    assert VM.vm_read(reader.task_self, addr, len(data), timeout=T, rt=reader) == data


def test_forged_memory_object_create_to_the_default_pager_is_refused(kernel, tasks, procs,
                                                                     run_dir):
    start_server(procs, run_dir, "translators.defpager", "defpager", "--swap-size", "4",
                 "--stats-interval", "0.2")
    attacker = tasks.new("attacker", priv=False)
    dp = NS.netname_look_up(attacker.name_server, "", "defpager", timeout=T, rt=attacker)
    obj, control, oname = (new_port(attacker, send=False), new_port(attacker),
                           new_port(attacker))
    MO.memory_object_create(dp, obj, 16 * PAGE_SIZE, control, oname, PAGE_SIZE, timeout=T,
                            rt=attacker)
    wait_refused(run_dir, "defpager", 1)
    last = [r for r in log_records(run_dir / "defpager.log") if r.get("event") == "stats"]
    assert last[-1]["objects_created"] == 0
    with pytest.raises(MachError):
        attacker.receive(control, timeout=0.5)
    owner = tasks.new("owner")
    assert VM.vm_set_default_memory_manager(owner.host_priv, 0, timeout=T, rt=owner)
