"""libports and the demo server against a real kernel: RPCs in both thread models, MIG
error replies, notifications, clean shutdown, and the acceptance test — under a flood of
blocking requests the multithread model grows OS threads and the workers model does not.
"""

from __future__ import annotations

import signal
import threading
import time

import psutil
import pytest

from protocol import message as M
from protocol.defs import demo as D
from protocol.defs import mach_port as P
from protocol.defs import machemu as X
from protocol.defs import netname as NS
from protocol.defs import notify as N
from protocol.kern_return import KernReturn, MachError, MigReturn
from tests.conftest import log_records, start_server, wait_for
from translators import libports as LP

MODELS = ["multithread", "workers"]


def start_demo(procs, run_dir, model, *extra, name="demo"):
    return start_server(procs, run_dir, "translators.demo", name, "--threads", model, *extra)


def look_up(rt, name="demo"):
    return NS.netname_look_up(rt.name_server, "", name, timeout=10, rt=rt)


def raw_rpc(rt, port, msgh_id, body=b"\x90"):
    msg = M.Message(msgh_id=msgh_id, remote_port=port,
                    remote_disp=M.MACH_MSG_TYPE_COPY_SEND, local_port=rt.reply_port(),
                    local_disp=M.MACH_MSG_TYPE_MAKE_SEND_ONCE, body=body)
    return rt.rpc(msg, timeout=10)


def stop_and_stats(p, run_dir, name="demo"):
    """SIGTERM the server; it must exit 0, remove its ready file and log its counters."""
    p.kill(signal.SIGTERM)
    assert p.p.wait(20) == 0, p.output()
    assert not (run_dir / f"{name}.ready").exists()
    recs = [r for r in log_records(run_dir / f"{name}.log")
            if r.get("event") == "demo server stopping"]
    assert recs and recs[-1]["clean"] is True
    return recs[-1]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("model", MODELS)
def test_demo_rpcs_and_mig_errors(kernel, tasks, procs, run_dir, model):
    p = start_demo(procs, run_dir, model, "--workers", "3")
    rt = tasks.new("client")
    port = look_up(rt)
    D.demo_null(port, timeout=10, rt=rt)
    data = bytes(range(256)) * 256  # 64 KiB out of line
    assert D.demo_echo(port, data, timeout=10, rt=rt) == data
    assert D.demo_echo(port, b"", timeout=10, rt=rt) == b""
    D.demo_sleep(port, 50, timeout=10, rt=rt)
    D.demo_send(port, b"one way", timeout=10, rt=rt)

    r = raw_rpc(rt, port, 50099)  # not a demo routine
    assert r.msgh_id == 50199
    assert M.unpackb(r.body) == [MigReturn.MIG_BAD_ID]

    r = raw_rpc(rt, port, D.demo_sleep.msgh_id, M.packb(["not a number"]))
    assert r.msgh_id == D.demo_sleep.reply_id
    assert M.unpackb(r.body) == [MigReturn.MIG_BAD_ARGUMENTS]
    with pytest.raises(MachError) as e:
        D.demo_sleep(port, 2**32, timeout=10, rt=rt)  # the stub does not check ranges
    assert e.value.code == MigReturn.MIG_BAD_ARGUMENTS

    # A request with no reply port is served and gets no reply.
    rt.send(D.demo_null.message(port, []), timeout=10)
    D.demo_null(port, timeout=10, rt=rt)

    stats = stop_and_stats(p, run_dir)
    served = 10
    assert stats["model"] == model
    assert stats["demux_served"] == served
    assert stats["demux_replies"] == served - 2  # demo_send and the reply-less demo_null
    assert stats["demux_bad_id"] == 1 and stats["demux_bad_args"] == 2
    assert stats["demux_handler_exceptions"] == 0
    assert not [r for r in log_records(run_dir / "demo.log") if r.get("level") == "error"]


@pytest.mark.timeout(60)
def test_workers_keep_the_order_of_one_object(kernel, tasks, procs, run_dir):
    p = start_demo(procs, run_dir, "workers", "--workers", "4", "--log-level", "debug")
    rt = tasks.new("client")
    port = look_up(rt)
    n = 150
    for i in range(n):
        D.demo_send(port, i.to_bytes(4, "big") + b"x" * (i % 5), timeout=10, rt=rt)
    # Same object, same worker queue: when this reply comes every send was served.
    D.demo_null(port, timeout=10, rt=rt)
    seen = [int(r["head"][:8], 16) for r in log_records(run_dir / "demo.log")
            if r.get("event") == "demo_send"]
    assert seen == list(range(n))
    stop_and_stats(p, run_dir)


# ---------------------------------------------------------------- flood: the acceptance test

class Flood:
    """Client threads in several tasks, each doing demo_sleep RPCs in a loop: every
    pending RPC is one message the server must take.  Bounded in time and count."""

    def __init__(self, tasks, ntasks, nthreads, msecs, max_rpcs=100_000, max_secs=60.0):
        self.rts = [tasks.new(f"flood{i}") for i in range(ntasks)]
        self.ports = [look_up(rt) for rt in self.rts]
        self.nthreads, self.msecs = nthreads, msecs
        self.max_rpcs, self.deadline = max_rpcs, time.monotonic() + max_secs
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.done = 0
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True)
                        for i in range(nthreads)]

    def _client(self, i):
        rt, port = self.rts[i % len(self.rts)], self.ports[i % len(self.ports)]
        try:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                with self.lock:
                    if self.done >= self.max_rpcs:
                        return
                D.demo_sleep(port, self.msecs, timeout=60, rt=rt)
                with self.lock:
                    self.done += 1
        except MachError as e:
            self.errors.append(str(e))
        finally:
            rt.thread_exit()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(90)
        assert not any(t.is_alive() for t in self.threads)


def server_threads(pid):
    return psutil.Process(pid).num_threads()


def demo_port_info(rt):
    info = X.machemu_kernel_info(rt.host_priv, timeout=10, rt=rt)
    return [p for p in info["ports"] if p["task"] == "demo" and p["in_set"]]


@pytest.mark.timeout(120)
def test_multithread_grows_threads_under_a_flood_and_shrinks_after(kernel, tasks, procs,
                                                                   run_dir):
    p = start_demo(procs, run_dir, "multithread", "--thread-timeout", "1")
    probe = tasks.new("probe")
    D.demo_null(look_up(probe), timeout=10, rt=probe)
    idle = server_threads(p.pid)
    peak = [idle]

    def grown():
        peak[0] = max(peak[0], server_threads(p.pid))
        return peak[0] > 20 and peak[0] > idle + 16

    with Flood(tasks, ntasks=3, nthreads=48, msecs=1000) as flood:
        wait_for(grown, 60, interval=0.05, what="multithread server threads > 20")
    assert not flood.errors, flood.errors[:3]
    assert flood.done > 0
    # Idle threads time out (1 s) and exit; the master and one listener stay.
    wait_for(lambda: server_threads(p.pid) <= idle + 1, 60, what="idle threads exit")
    stats = stop_and_stats(p, run_dir)
    assert stats["peak_threads"] > 20
    assert stats["spawned"] >= stats["peak_threads"] - 1
    assert stats["capped"] == 0


@pytest.mark.timeout(120)
def test_workers_do_not_grow_under_the_same_flood(kernel, tasks, procs, run_dir):
    nworkers = 4
    p = start_demo(procs, run_dir, "workers", "--workers", str(nworkers))
    probe = tasks.new("probe")
    D.demo_null(look_up(probe), timeout=10, rt=probe)
    idle = server_threads(p.pid)
    peak = [idle]
    pressure = [0]

    def flooded_for_a_while():
        peak[0] = max(peak[0], server_threads(p.pid))
        for port in demo_port_info(probe):
            pressure[0] = max(pressure[0], port["blocked_senders"])
        # The flood is real once senders block on the server's full queue.
        return pressure[0] >= 10 and flood.done >= 40

    with Flood(tasks, ntasks=3, nthreads=48, msecs=20) as flood:
        wait_for(flooded_for_a_while, 90, interval=0.05, what="a sustained flood")
        peak[0] = max(peak[0], server_threads(p.pid))
    assert not flood.errors, flood.errors[:3]
    assert peak[0] <= idle + 2, (idle, peak[0])
    stats = stop_and_stats(p, run_dir)
    assert stats["peak_threads"] == nworkers + 1
    assert stats["queue_put_blocked"] > 0
    assert stats["peak_busy"] == 1  # one object: its requests are served one at a time


@pytest.mark.timeout(90)
def test_unordered_workers_serve_one_object_in_parallel(kernel, tasks, procs, run_dir):
    p = start_demo(procs, run_dir, "workers", "--workers", "4", "--unordered")
    with Flood(tasks, ntasks=2, nthreads=8, msecs=200, max_rpcs=32) as flood:
        wait_for(lambda: flood.done >= 32, 60, what="32 demo_sleep RPCs")
    assert not flood.errors, flood.errors[:3]
    stats = stop_and_stats(p, run_dir)
    assert stats["ordered"] is False
    assert 2 <= stats["peak_busy"] <= 4


# ---------------------------------------------------------------- libports in this process

@pytest.fixture
def server_task(tasks):
    """This process as a libports server task (multithread model), stopped at teardown."""
    rt = tasks.new("libports")
    bucket = LP.ports_create_bucket(rt)
    made = []

    def serve(handlers, **kw):
        demuxer = LP.PortsDemuxer(bucket, handlers)
        s = LP.MultithreadServer(bucket, demuxer, stack_size=None, **kw).start()
        made.append(s)
        return s

    yield rt, bucket, serve
    for s in made:
        assert s.stop(timeout=20)


@pytest.mark.timeout(60)
def test_no_senders_notification_destroys_the_object(tasks, server_task):
    rt, bucket, serve = server_task
    cleaned = threading.Event()
    cls = LP.ports_create_class(clean_routine=lambda pi: cleaned.set(), name="obj")
    pi = LP.ports_create_port(cls, bucket, data="object")
    name = LP.ports_get_send_right(pi)
    LP.ports_port_deref(pi)
    assert pi.refcnt == 1 and pi.flags & LP.PORT_HAS_SENDRIGHTS
    calls = []
    serve({D.demo_null: lambda obj: calls.append(obj.data)}, thread_timeout=0.5)

    # Hand the only other send right to a client task through the name server.
    NS.netname_check_in(rt.name_server, "obj", rt.task_self, name, timeout=10, rt=rt)
    client = tasks.new("client")
    cport = look_up(client, "obj")
    NS.netname_check_out(rt.name_server, "obj", rt.task_self, timeout=10, rt=rt)
    P.mach_port_deallocate(rt.task_self, name, timeout=10, rt=rt)  # our own send right
    D.demo_null(cport, timeout=10, rt=client)
    assert calls == ["object"] and not cleaned.is_set()

    P.mach_port_deallocate(client.task_self, cport, timeout=10, rt=client)  # last sender
    wait_for(cleaned.is_set, 20, what="clean routine after no-senders")
    assert bucket.stats["no_senders"] == 1 and LP.ports_count_bucket(bucket) == 0
    with pytest.raises(MachError) as e:
        P.mach_port_type(rt.task_self, name, timeout=10, rt=rt)
    assert e.value.code == KernReturn.KERN_INVALID_NAME


@pytest.mark.timeout(60)
def test_send_right_made_after_no_senders_keeps_the_object(server_task):
    rt, bucket, serve = server_task
    cleaned = threading.Event()
    cls = LP.ports_create_class(clean_routine=lambda pi: cleaned.set(), name="obj")
    pi = LP.ports_create_port(cls, bucket)
    name = LP.ports_get_send_right(pi)
    LP.ports_port_deref(pi)
    # No server yet: the notification waits in the port's queue.
    P.mach_port_deallocate(rt.task_self, name, rt=rt)
    wait_for(lambda: P.mach_port_get_receive_status(rt.task_self, name, rt=rt)[4] == 1, 20,
             what="no-senders notification queued")
    assert LP.ports_get_send_right(pi) == name  # a new sender before it is handled
    serve({})
    wait_for(lambda: bucket.stats["no_senders"] == 1, 20, what="stale no-senders handled")
    assert not cleaned.is_set() and pi.flags & LP.PORT_HAS_SENDRIGHTS
    assert LP.ports_lookup_port(bucket, name) is pi
    LP.ports_port_deref(pi)
    P.mach_port_deallocate(rt.task_self, name, rt=rt)  # now the last sender goes
    wait_for(cleaned.is_set, 20, what="clean routine after the re-requested no-senders")
    assert bucket.stats["no_senders"] == 2 and LP.ports_count_bucket(bucket) == 0


@pytest.mark.timeout(60)
def test_dead_name_notification_gives_back_its_reference(tasks, server_task):
    rt, bucket, serve = server_task
    pi = LP.ports_create_port(LP.ports_create_class(name="notify"), bucket)
    serve({})
    other = tasks.new("other")
    bport = P.mach_port_allocate(other.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=other)
    P.mach_port_insert_right(other.task_self, bport, (bport, M.MACH_MSG_TYPE_MAKE_SEND),
                             rt=other)
    NS.netname_check_in(other.name_server, "b", other.task_self, bport, rt=other)
    aname = look_up(rt, "b")
    prev = P.mach_port_request_notification(rt.task_self, aname, N.MACH_NOTIFY_DEAD_NAME,
                                            0, pi.port_right, rt=rt)
    assert prev == 0
    P.mach_port_destroy(other.task_self, bport, rt=other)  # the port dies
    wait_for(lambda: bucket.stats["dead_names"] == 1, 20, what="dead-name notification")
    # The notification's reference was given back: the original one is left.
    assert P.mach_port_get_refs(rt.task_self, aname, M.MACH_PORT_RIGHT_DEAD_NAME,
                                rt=rt) == 1
    P.mach_port_deallocate(rt.task_self, aname, rt=rt)
    with pytest.raises(MachError):
        P.mach_port_type(rt.task_self, aname, rt=rt)


@pytest.mark.timeout(60)
def test_master_returns_after_the_global_timeout(tasks):
    rt = tasks.new("libports")
    bucket = LP.ports_create_bucket(rt)
    pi = LP.ports_create_port(LP.ports_create_class(), bucket)
    name = LP.ports_get_send_right(pi)
    demuxer = LP.PortsDemuxer(bucket, {D.demo_sleep: lambda obj, ms: time.sleep(ms / 1000)})
    result = []
    t = threading.Thread(target=lambda: result.append(
        LP.ports_manage_port_operations_multithread(bucket, demuxer, thread_timeout=0.2,
                                                    global_timeout=0.5, stack_size=None)))
    t.start()
    rpcs = [threading.Thread(target=D.demo_sleep, args=(name, 300),
                             kwargs={"timeout": 10, "rt": rt}) for _ in range(3)]
    for r in rpcs:
        r.start()
    for r in rpcs:
        r.join(20)
    t.join(30)
    assert not t.is_alive()
    server = result[0]
    st = server.stats()
    assert st["threads"] == 0 and st["messages"] == 3 and st["peak_threads"] >= 2
    assert server.alive_threads() == 0


@pytest.mark.timeout(60)
def test_with_start_over_the_master_serves_on_after_the_global_timeout(tasks):
    """start_over (libdiskfs's loops): the global timeout passing with the master alone
    makes it start over, counted, and it serves the next request."""
    rt = tasks.new("libports")
    bucket = LP.ports_create_bucket(rt)
    pi = LP.ports_create_port(LP.ports_create_class(), bucket)
    name = LP.ports_get_send_right(pi)
    calls = []
    demuxer = LP.PortsDemuxer(bucket, {D.demo_null: lambda obj: calls.append(1)})
    server = LP.MultithreadServer(bucket, demuxer, thread_timeout=0.2, global_timeout=0.3,
                                  stack_size=None, start_over=True).start()
    try:
        D.demo_null(name, timeout=10, rt=rt)
        wait_for(lambda: server.stats()["global_timeouts"] >= 2, 30,
                 what="the master starting over")
        assert not server.done.is_set() and server.stats()["threads"] == 1
        D.demo_null(name, timeout=10, rt=rt)
        assert calls == [1, 1]
    finally:
        assert server.stop(timeout=20)
