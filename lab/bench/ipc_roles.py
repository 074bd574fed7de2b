"""The bench's IPC roles: a bare Mach server task, a client timing RPCs, and senders
streaming one-way messages through the kernel.  Each runs as its own process
(``python -m lab.bench.role server|client|sender ...``)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import structlog

from lab.bench.pages import page
from lab.bench.stats import latency, time_calls
from lab.bench.task import connect, look_up
from lab.rundir import RunDir, write_atomic
from protocol import message as M
from protocol.defs.demo import demo_echo, demo_null, demo_send
from protocol.defs.mach_port import (
    mach_port_allocate,
    mach_port_insert_right,
    mach_port_set_qlimit,
    mach_port_type,
)
from protocol.defs.netname import netname_check_in
from protocol.kern_return import MachError
from protocol.mig import Demux, bad_id_reply_id


def server(run_dir: str, name: str, threads: int, qlimit: int):
    """A bare server task: demo_null, demo_echo, demo_send on one receive right checked in
    as ``name``, served by ``threads`` threads each looping mach_msg(MACH_SEND_MSG |
    MACH_RCV_MSG), as a MIG server loop (mach_msg_server) does.  DIR/NAME.ready holds
    its pid once every thread serves."""
    rt = connect(run_dir, name, "server")
    log = structlog.get_logger(name)
    try:
        port = mach_port_allocate(rt.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=rt)
        mach_port_insert_right(rt.task_self, port, (port, M.MACH_MSG_TYPE_MAKE_SEND), rt=rt)
        if qlimit:
            mach_port_set_qlimit(rt.task_self, port, qlimit, rt=rt)
        netname_check_in(rt.name_server, name, rt.task_self, port, rt=rt)
        demux = Demux({demo_null: lambda obj: None,
                       demo_echo: lambda obj, data: data,
                       demo_send: lambda obj, data: None})

        def serve():
            reply = None
            while True:
                if reply is None:
                    code, msg = rt.mach_msg(M.MACH_RCV_MSG, None, port)
                else:
                    code, msg = rt.mach_msg(M.MACH_SEND_MSG | M.MACH_RCV_MSG, reply, port)
                reply = None
                if code:
                    if rt.dead or rt._closed:
                        return
                    log.warning("mach_msg failed", code=code)
                    continue
                routine, rc, vals = demux.dispatch(None, msg.msgh_id, msg.body,
                                                   [d[0] for d in msg.descs], msg.ool)
                if not msg.remote_port or rc == Demux.NO_REPLY:
                    continue
                if routine is not None and routine.simple:
                    continue
                if routine is None:
                    body, descs, ool = M.packb([int(rc)]), [], []
                    rid = bad_id_reply_id(msg.msgh_id)
                else:
                    body, descs, ool = routine.encode_reply(rc, vals)
                    rid = routine.reply_id
                reply = M.Message(msgh_id=rid, remote_port=msg.remote_port,
                                  remote_disp=msg.remote_disp, local_port=0, local_disp=0,
                                  descs=descs, body=body, ool=ool)

        def guarded():
            try:
                serve()
            except MachError as e:
                if not (rt.dead or rt._closed):
                    log.warning("server thread ends", code=e.code)

        workers = [threading.Thread(target=guarded, name=f"serve-{i}", daemon=True)
                   for i in range(threads)]
        for w in workers:
            w.start()
        write_atomic(RunDir(run_dir).ready_file(name), str(os.getpid()))
        log.info("bench server ready", port=port, threads=threads, qlimit=qlimit)
        while any(w.is_alive() for w in workers):
            for w in workers:
                w.join(timeout=1.0)
    finally:
        rt.close()


def client(run_dir: str, name: str, server: str, rounds: int, out: str):
    """Latency of RPCs through the kernel (two hops: demo_null, demo_echo of 4 KiB) and to
    the kernel (one hop: mach_port_type on its task port); writes ``{"null", "echo",
    "kobject"}``, each ``latency()`` of ``rounds`` calls, to ``out``."""
    rt = connect(run_dir, name, "client")
    try:
        port = look_up(rt, server)
        pg = page()

        def echo():
            if demo_echo(port, pg, timeout=30, rt=rt) != pg:
                raise SystemExit("demo_echo: page corrupted")

        res = {
            "null": latency(time_calls(lambda: demo_null(port, timeout=30, rt=rt), rounds)),
            "echo": latency(time_calls(echo, rounds)),
            "kobject": latency(time_calls(lambda: mach_port_type(
                rt.task_self, rt.task_self, timeout=30, rt=rt), rounds)),
        }
        rt.thread_exit()
        write_atomic(Path(out), json.dumps(res))
    finally:
        rt.close()


def sender(run_dir: str, name: str, server: str, count: int, threads: int):
    """One-way demo_send of ``count`` 4 KiB pages from ``threads`` threads.  Prints
    "ready", waits for "go" on stdin, then prints {"end": monotonic time when the server
    has dequeued them all, "sent": n, "cpu": seconds of CPU this process used meanwhile}."""
    rt = connect(run_dir, name, "client")
    try:
        port = look_up(rt, server)
        pg = page()
        for _ in range(20):
            demo_send(port, pg, timeout=30, rt=rt)
        demo_null(port, timeout=30, rt=rt)
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return
        cpu0 = time.process_time()
        per = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]
        errors = []

        def send(n):
            try:
                for _ in range(n):
                    demo_send(port, pg, timeout=60, rt=rt)
            except BaseException as e:  # reported by the main thread
                errors.append(repr(e))

        ts = [threading.Thread(target=send, args=(n,), daemon=True) for n in per]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if errors:
            raise SystemExit(f"sender failed: {errors[0]}")
        # One queue, FIFO: when this RPC is answered, every message sent before it has
        # been taken off the server's queue, i.e. routed.
        demo_null(port, timeout=60, rt=rt)
        end = time.monotonic()
        rt.thread_exit()
        print(json.dumps({"end": end, "sent": count, "cpu": time.process_time() - cpu0}),
              flush=True)
    finally:
        rt.close()
