"""IPC workloads: flood, RPCs to a server (translators.demo) as fast as clients send them."""

from __future__ import annotations

import os
import struct

from lab.loadgen.table import dash, fmt_mib
from lab.loadgen.workload import VerifyError, Workload, positive_float, task_look_up, workload
from protocol.defs.demo import demo_echo, demo_null, demo_sleep
from protocol.vm_param import PAGE_SIZE

_STAMP = struct.Struct("<IIQ")  # task, thread, sequence: makes every echoed page distinct


@workload
class Flood(Workload):
    """RPCs to a server as fast as the clients can send them: each client thread waits for
    its reply before the next call (mach_msg with MACH_SEND_MSG|MACH_RCV_MSG), so the
    server sees tasks x threads requests outstanding at most."""

    name = "flood"
    help = "flood a server with RPCs (demo_null, demo_echo of a 4 KiB page, demo_sleep)"
    unit = "calls"

    def add_arguments(self, p):
        g = p.add_argument_group("flood")
        g.add_argument("--server", default="demo", metavar="NAME",
                       help="server to look up in the name server (default demo)")
        g.add_argument("--rpc", choices=("null", "echo", "sleep"), default="null",
                       help="demo_null, demo_echo (a 4 KiB page, verified) or demo_sleep")
        g.add_argument("--sleep-ms", type=int, default=10, metavar="M",
                       help="milliseconds each demo_sleep holds a server thread (default 10)")
        g.add_argument("--call-timeout", type=positive_float, default=10.0, metavar="S",
                       help="send and receive timeout of each call (default 10)")

    def check_args(self, args, parser):
        if not 0 <= args.sleep_ms <= 0xFFFFFFFF:
            parser.error("--sleep-ms out of range")

    def prepare(self, cluster, args):
        cluster.look_up(args.server)  # fails early, with a clear message, if not there
        return {"server_pid": cluster.process_pid(args.server)}

    def watch(self, cluster, args, prepared):
        return {"server": prepared["server_pid"]}

    def task_setup(self, rt, args, index, prepared):
        return task_look_up(rt, args.server, args.call_timeout)

    def make_op(self, rt, args, port, task, thread):
        timeout = args.call_timeout
        if args.rpc == "null":
            def op(seq):
                demo_null(port, timeout=timeout, rt=rt)
        elif args.rpc == "sleep":
            msecs = args.sleep_ms

            def op(seq):
                demo_sleep(port, msecs, timeout=timeout, rt=rt)
        else:
            page = bytearray(os.urandom(PAGE_SIZE))

            def op(seq):
                _STAMP.pack_into(page, 0, task, thread, seq)
                sent = bytes(page)
                got = demo_echo(port, sent, timeout=timeout, rt=rt)
                if got != sent:
                    raise VerifyError(f"echo {task}.{thread}.{seq}: {len(got)} bytes back")
                return True
        return op

    def summarize(self, s, args, prepared):
        s["server_name"] = args.server
        s["rpc"] = args.rpc
        if args.rpc == "sleep":
            s["sleep_ms"] = args.sleep_ms
        s["call_timeout"] = args.call_timeout
        s.setdefault("server", {})

    def table(self, s):
        srv = s.get("server") or {}
        rows = [("rpc", s["rpc"] + (f" ({s['sleep_ms']} ms)" if s["rpc"] == "sleep" else ""))]
        if s["rpc"] == "echo":
            rows.append(("verified", f"{s['verified']} pages, {s['mismatches']} mismatches"))
        if srv.get("pid") is None:
            rows.append((f"server {s['server_name']}", "pid unknown: not sampled"))
        else:
            rows += [
                (f"server {s['server_name']}", f"pid {srv['pid']}"
                 + (" (exited)" if srv.get("exited") else "")),
                ("server threads", f"peak {dash(srv['threads_peak'])}, "
                                   f"final {dash(srv['threads_final'])}"),
                ("server RSS", f"peak {fmt_mib(srv['rss_peak'])}, "
                               f"final {fmt_mib(srv['rss_final'])}"),
            ]
        return rows
