"""rpctrace: the messages of a running cluster as the kernel routes them (kernel.ipc_trace),
printed the way the Hurd's utils/rpctrace prints a task's RPCs, then a summary per routine.

    rpctrace [--run-dir DIR] [--task T]... [--port P]... [--id RANGE]... [--duration S]
             [--ring N] [--json]

A line is ``TIME SENDER[THREAD] RECEIVER:NAME->routine (args) = reply  [latency]``:
the receiving task and the port's name in its space (``kernel(label)`` for a port the
kernel serves), the request's arguments as far as the kernel kept the body (...), and
the reply's RetCode and values, as rpctrace's ``task->routine (args) = reply``.  A
request whose reply has not come after HOLD_S is printed ending `` ...R`` (R the reply
port) and its reply later as ``R... = reply``.  Out-of-line data is shown as <N B>, a
port as ``port``.

TASK is a name, a task id or a pid (from machemu_kernel_info's task list); a message is
traced when the task sends or receives it.  PORT is a kernel port id (``port`` in
--json) or TASK:NAME, a name in that task's space.  RANGE is LO-HI, an id, a routine's
name or a subsystem's.  Tracing needs host_priv (the run directory's owner's secret).
The session ends when the tool does, also when it is killed (the kernel's no-senders
notification).  Exit status 0; 1 when the kernel cannot be reached, refuses or goes
away; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
from collections import deque

import msgpack

import protocol.defs  # noqa: F401  every subsystem: routine names and fields
from lab.bench.stats import percentile
from lab.client import ClusterClient, ClusterError, err_name
from lab.experiments.report import plain_table
from lab.loadgen.driver import setup_logs
from lab.rundir import RunDir, RunDirError
from lab.tools.common import FS_ERRNO_NAMES, ToolError, find_tasks
from protocol.defs import machemu as X
from protocol.defs.notify import MACH_NOTIFY_SEND_ONCE
from protocol.kern_return import KernReturn, MachError
from protocol.mig import REGISTRY

POLL_S = 0.1          # between reads when the last one emptied the ring
HOLD_S = 1.0          # how long a request waits for its reply before it is printed
CALL_TIMEOUT = 10.0   # seconds per RPC to the kernel
READ_BATCH = 512      # records asked per read (the kernel's READ_MAX)
MAX_HELD = 20000      # printed lines waiting for a reply, before the oldest is forced
MAX_OPEN = 20000      # requests printed with "..." still awaiting their reply
LAT_SAMPLES = 100000  # latencies kept per routine for the p99
EXIT_OK, EXIT_CLUSTER, EXIT_USAGE = 0, 1, 2


# Why machemu_trace_start may refuse, beyond host_priv.
REFUSALS = {
    KernReturn.KERN_INVALID_NAME: " (a --port TASK:NAME names no port in that task)",
    KernReturn.KERN_INVALID_TASK: " (a --port task is gone)",
    KernReturn.KERN_RESOURCE_SHORTAGE: " (the kernel already has its most trace sessions)",
    KernReturn.KERN_INVALID_ARGUMENT: " (the filter: too many tasks, ports or ranges?)",
}


class UsageError(Exception):
    """A bad argument found once the cluster was asked (an unknown task, say)."""


# ---------------------------------------------------------------- arguments

def _routines_by_name() -> tuple[dict, dict]:
    """{routine name: Routine}, {subsystem name: (first id, last id)}."""
    by_name, subs = {}, {}
    for rt in REGISTRY.values():
        by_name[rt.name] = rt
        lo, hi = subs.get(rt.subsystem.name, (rt.subsystem.base, rt.msgh_id))
        subs[rt.subsystem.name] = (lo, max(hi, rt.msgh_id))
    return by_name, subs


def parse_id_range(spec: str) -> tuple[int, int]:
    """--id: "LO-HI", "N", a routine's name (its id) or a subsystem's (its ids)."""
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", spec.strip())
    if m:
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if lo > hi or hi >= 2**31:
            raise argparse.ArgumentTypeError(f"bad id range {spec!r}")
        return lo, hi
    by_name, subs = _routines_by_name()
    if spec in by_name:
        return by_name[spec].msgh_id, by_name[spec].msgh_id
    if spec in subs:
        return subs[spec]
    raise argparse.ArgumentTypeError(
        f"{spec!r} is neither LO-HI, an id, a routine nor a subsystem "
        f"({', '.join(sorted(subs))})")


def _ring(v: str) -> int:
    n = int(v)
    if not 16 <= n <= 262144:
        raise argparse.ArgumentTypeError("--ring must be within 16..262144")
    return n


def _duration(v: str) -> float:
    s = float(v)
    if not s > 0:
        raise argparse.ArgumentTypeError("--duration must be positive")
    return s


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="rpctrace", description=__doc__.splitlines()[0],
                                 epilog="Exit status: 0; 1 kernel unreachable, refusing "
                                        "or gone; 2 bad arguments.")
    ap.add_argument("--run-dir", metavar="DIR",
                    help="the cluster's run directory (default $MACHEMU_RUN_DIR or ./run)")
    ap.add_argument("--task", action="append", default=[], metavar="T",
                    help="trace what task T (name, task id or pid) sends or receives; "
                         "repeatable")
    ap.add_argument("--port", action="append", default=[], metavar="P",
                    help="trace messages to port P (kernel port id, or TASK:NAME); "
                         "repeatable")
    ap.add_argument("--id", action="append", default=[], type=parse_id_range,
                    metavar="RANGE", help="trace msgh_ids in RANGE (LO-HI, N, a routine "
                    "or subsystem name); repeatable")
    ap.add_argument("--duration", type=_duration, metavar="S",
                    help="stop after S seconds (default: at Ctrl-C)")
    ap.add_argument("--ring", type=_ring, default=16384, metavar="N",
                    help="records the kernel keeps between reads (default 16384)")
    ap.add_argument("--json", action="store_true",
                    help="one JSON object per message, then one with the summary")
    return ap


def resolve_tasks(specs: list[str], tasks: list[dict], me: int) -> list[dict]:
    """The tasks named by ``specs`` among machemu_kernel_info's ``tasks``, not ``me``:
    every task of a name (lab.tools.common.find_tasks); UsageError for one that names
    none."""
    others = [t for t in tasks if t["id"] != me]
    out = []
    for spec in specs:
        try:
            hits = find_tasks(others, spec)
        except ToolError as e:
            raise UsageError(str(e)) from None
        out += [t for t in hits if t not in out]
    return out


def trace_filter(args, tasks: list[dict], me: int) -> dict:
    """machemu_trace_start's filter from the options."""
    f: dict = {"ring": args.ring}
    if args.task:
        f["tasks"] = [t["id"] for t in resolve_tasks(args.task, tasks, me)]
    ports, names = [], []
    for spec in args.port:
        task, sep, name = spec.rpartition(":")
        try:
            n = int(name, 0)
        except ValueError:
            raise UsageError(f"bad port {spec!r}: a kernel port id or TASK:NAME") from None
        if sep:
            ts = resolve_tasks([task], tasks, me)
            names += [[t["id"], n] for t in ts]
        else:
            ports.append(n)
    if ports:
        f["ports"] = ports
    if names:
        f["port_names"] = names
    if args.id:
        f["ids"] = [list(r) for r in args.id]
    return f


# ---------------------------------------------------------------- formatting

class _Missing:
    def __repr__(self):
        return "..."


MISSING = _Missing()


def decode_prefix(body: bytes) -> tuple[list, bool]:
    """The values of a msgpack array from the start of a body the kernel may have cut:
    (values decoded, whether all were)."""
    u = msgpack.Unpacker(raw=False, max_buffer_size=1 << 20)
    u.feed(body)
    try:
        n = u.read_array_header()
    except Exception:
        return [], False
    vals = []
    for _ in range(n):
        try:
            vals.append(u.unpack())
        except Exception:
            return vals, False
    return vals, True


def field_values(fields, vals: list, complete: bool, ool_bytes: int) -> list:
    """(name, value) per field of a request or reply: body fields from ``vals`` in
    order (MISSING past what the kernel kept), ("port", None) for a port,
    ("ool", size) for out-of-line data."""
    out, i = [], 0
    n_ool = sum(1 for f in fields if f.type.where == "ool")
    for f in fields:
        where = f.type.where
        if where == "body":
            out.append((f.name, vals[i] if i < len(vals) else MISSING))
            i += 1
        elif where == "port":
            out.append((f.name, ("port", None)))
        else:
            out.append((f.name, ("ool", ool_bytes if n_ool == 1 else None)))
    if not complete and i >= len(vals) and not any(v is MISSING for _, v in out):
        out.append(("", MISSING))
    return out


def text_value(v) -> str:
    if v is MISSING:
        return "..."
    if isinstance(v, tuple) and len(v) == 2 and v[0] in ("port", "ool"):
        if v[0] == "port":
            return "port"
        return f"<{v[1]} B>" if v[1] is not None else "<ool>"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, str):
        return json.dumps(v[:40]) + ("..." if len(v) > 40 else "")
    if isinstance(v, (bytes, bytearray)):
        return f"<{len(v)} B>"
    if isinstance(v, dict):
        return "{...}"
    if isinstance(v, list):
        return f"[{len(v)}]"
    return str(v)


def json_value(v):
    if v is MISSING:
        return "..."
    if isinstance(v, tuple) and len(v) == 2 and v[0] in ("port", "ool"):
        return {"port": True} if v[0] == "port" else {"ool_bytes": v[1]}
    if isinstance(v, (bytes, bytearray)):
        return {"bytes": len(v)}
    if isinstance(v, (dict, list)):
        return json.loads(json.dumps(v, default=lambda x: {"bytes": len(x)}))
    return v


def code_text(code) -> str:
    """A RetCode as rpctrace prints it: 0, or hex and name."""
    if code is None:
        return "?"
    if code == 0:
        return "0"
    name = FS_ERRNO_NAMES.get(code) or err_name(code)
    return f"{code & 0xFFFFFFFF:#x} ({name})"


class Entry:
    """A traced message on its way to being printed: its record, and for a request
    the reply once it came."""

    __slots__ = ("rec", "reply")

    def __init__(self, rec: dict):
        self.rec, self.reply = rec, None

    def request_fields(self):
        r = self.rec
        rt = REGISTRY.get(r["msgh_id"])
        vals, complete = decode_prefix(r["body"])
        if r["kind"] == "reply":  # its request came before the trace: values go after "="
            return []
        if rt is None:
            return [("", v) for v in vals] + ([] if complete else [("", MISSING)])
        return field_values(rt.request, vals, complete, r["ool_bytes"])

    def reply_fields(self):
        """(RetCode, [(name, value)]) of the reply, or (None, [])."""
        rep = self.reply or (self.rec if self.rec["kind"] == "reply" else None)
        if rep is None:
            return None, []
        vals, complete = decode_prefix(rep["body"])
        code = rep["code"]
        req = REGISTRY.get(self.rec["msgh_id"] if self.reply is not None
                           else rep["msgh_id"] - 100)
        if not vals or code != 0 or req is None or req.simple or \
                rep["msgh_id"] != req.reply_id:
            return code, []
        return code, field_values(req.reply, vals[1:], complete, rep["ool_bytes"])


def who(r: dict) -> str:
    return "kernel" if r["sender_id"] == 0 else f"{r['sender']}[{r['thread']}]"


def where(r: dict) -> str:
    if r["kind"] == "refused":
        return f"?{r['dest_name']}"
    if r["receiver_id"] == 0:
        return f"kernel({r['label']})" if r["label"] else "kernel"
    if r["receiver_id"] < 0:
        return f"(in transit {r['port']})"
    return f"{r['receiver']}:{r['recv_name']}"


def routine_of(r: dict) -> str:
    return r["routine"] or str(r["msgh_id"])


def text_line(e: Entry, t0: float, open_reply: bool = False) -> str:
    r = e.rec
    args = " ".join(text_value(v) for _, v in e.request_fields())
    line = f"{r['t'] + t0:11.6f} {who(r)} {where(r)}->{routine_of(r)}"
    if r["kind"] != "reply":
        line += f" ({args})"
    if r["kind"] == "refused":
        return line + f" = {code_text(r['code'])}"
    if open_reply:
        return line + f" ...{r['reply_port']}"
    return line + reply_text(e)


def reply_text(e: Entry) -> str:
    rep = e.reply or (e.rec if e.rec["kind"] == "reply" else None)
    if rep is None:
        return ""
    code, vals = e.reply_fields()
    mid = e.rec["msgh_id"]
    if e.reply is not None and rep["msgh_id"] != mid + 100:
        head = f" =({rep['msgh_id']} != {mid + 100} {routine_of(rep)}) "
    else:
        head = " = "
    out = head + code_text(code) + "".join(" " + text_value(v) for _, v in vals)
    if rep.get("latency") is not None:
        out += f"  [{rep['latency'] * 1e3:.3f} ms]"
    return out


def json_obj(e: Entry) -> dict:
    r = e.rec
    o = {k: r[k] for k in ("seq", "t", "sender", "sender_id", "thread", "receiver",
                           "receiver_id", "port", "recv_name", "dest_name", "label",
                           "msgh_id", "routine", "kind", "inline", "ool_bytes",
                           "ool_pages", "ports")}
    o["args"] = {n or f"_{i}": json_value(v) for i, (n, v) in enumerate(e.request_fields())}
    code, vals = e.reply_fields()
    rep = e.reply or (r if r["kind"] == "reply" else None)
    o["code"] = r["code"] if r["kind"] == "refused" else code
    if rep is not None:
        o["reply"] = {n: json_value(v) for n, v in vals}
        o["reply_id"] = rep["msgh_id"]
        o["latency_ms"] = None if rep["latency"] is None else rep["latency"] * 1e3
    elif r["kind"] == "request":
        o["reply"] = None  # none came while tracing
    return o


# ---------------------------------------------------------------- streaming

class Summary:
    """Per routine: messages, errors, latencies (bounded reservoir), bytes, OOL pages."""

    def __init__(self):
        self.rows: dict[str, dict] = {}
        self.messages = 0
        self.dropped = 0
        self._n = 0

    def add(self, e: Entry):
        r = e.rec
        s = self.rows.setdefault(routine_of(r), {"count": 0, "errors": 0, "answered": 0,
                                                 "lat": [], "seen": 0, "inline": 0,
                                                 "ool_pages": 0})
        s["count"] += 1
        s["inline"] += r["inline"]
        s["ool_pages"] += r["ool_pages"]
        self.messages += 1
        if r["kind"] == "refused":
            s["errors"] += 1
        if e.reply is not None:
            self.answer(routine_of(r), e.reply)

    def answer(self, name: str, rep: dict):
        s = self.rows.get(name)
        if s is None:
            return
        s["answered"] += 1
        if rep["code"] not in (0, None) or rep["msgh_id"] == MACH_NOTIFY_SEND_ONCE:
            s["errors"] += 1  # an error RetCode, or the server died (send-once notify)
        if rep["latency"] is not None:
            s["seen"] += 1
            lat = s["lat"]
            if len(lat) < LAT_SAMPLES:
                lat.append(rep["latency"])
            else:  # a reservoir: every latency is kept with equal chance
                self._n = (self._n * 1103515245 + 12345) % 2**31
                j = self._n % s["seen"]
                if j < LAT_SAMPLES:
                    lat[j] = rep["latency"]

    def table(self) -> list[dict]:
        out = []
        for name, s in sorted(self.rows.items(), key=lambda kv: -kv[1]["count"]):
            lat = sorted(s["lat"])
            out.append({"routine": name, "count": s["count"], "answered": s["answered"],
                        "errors": s["errors"],
                        "mean_ms": sum(lat) / len(lat) * 1e3 if lat else None,
                        "p99_ms": percentile(lat, 99) * 1e3 if lat else None,
                        "inline_bytes": s["inline"], "ool_pages": s["ool_pages"]})
        return out


class Printer:
    """Records in, lines out in the order of the requests; a request is held until its
    reply comes or HOLD_S passes (bounded by MAX_HELD)."""

    def __init__(self, out, as_json: bool, t0: float, summary: Summary):
        self.out, self.as_json, self.t0, self.summary = out, as_json, t0, summary
        self.held: deque[Entry] = deque()
        self.waiting: dict[int, Entry] = {}   # request seq -> held entry
        self.open: dict[int, Entry] = {}      # request seq -> printed with "..."

    def feed(self, rec: dict):
        if rec["kind"] == "reply" and rec["req_seq"] is not None:
            e = self.waiting.pop(rec["req_seq"], None)
            if e is not None:
                e.reply = rec
                return
            e = self.open.pop(rec["req_seq"], None)
            if e is not None:
                e.reply = rec
                self.summary.answer(routine_of(e.rec), rec)
                if not self.as_json:
                    self.write(f"{rec['t'] + self.t0:11.6f} {e.rec['reply_port']}..."
                               f"{reply_text(e)}")
                return
        e = Entry(rec)
        self.held.append(e)
        if rec["kind"] == "request":
            self.waiting[rec["seq"]] = e

    def flush(self, now: float, final: bool = False):
        """Print what no longer waits (everything when ``final``); ``now`` in trace
        seconds."""
        held = self.held
        while held:
            e = held[0]
            r = e.rec
            if (r["kind"] == "request" and e.reply is None and not final
                    and now - r["t"] < HOLD_S and len(held) < MAX_HELD):
                break
            held.popleft()
            self.waiting.pop(r["seq"], None)
            self.summary.add(e)
            pending = r["kind"] == "request" and e.reply is None
            if pending and not final:
                if len(self.open) >= MAX_OPEN:
                    del self.open[next(iter(self.open))]
                self.open[r["seq"]] = e
            if self.as_json:
                if not pending or final:
                    self.write(json.dumps(json_obj(e)))
            else:
                self.write(text_line(e, self.t0, open_reply=pending))
        if final and self.as_json:
            for e in self.open.values():
                self.write(json.dumps(json_obj(e)))
            self.open.clear()

    def lost(self, n: int):
        self.summary.dropped += n
        if not self.as_json:
            self.write(f"# {n} messages lost: the kernel's ring overflowed between reads")

    def write(self, line: str):
        self.out.write(line + "\n")


def print_summary(summary: Summary, secs: float, out, as_json: bool):
    rows = summary.table()
    if as_json:
        out.write(json.dumps({"summary": rows, "messages": summary.messages,
                              "dropped": summary.dropped, "seconds": round(secs, 3)}) + "\n")
        return
    def ms(v):
        return "-" if v is None else f"{v:.3f}"

    headers = ["routine", "count", "answered", "errors", "mean ms", "p99 ms", "ool pages"]
    table = [[r["routine"], str(r["count"]), str(r["answered"]), str(r["errors"]),
              ms(r["mean_ms"]), ms(r["p99_ms"]), str(r["ool_pages"])] for r in rows]
    out.write(f"\nrpctrace: {summary.messages} messages in {secs:.1f} s, "
              f"{summary.dropped} lost to the ring\n")
    if out.isatty():
        try:
            from rich.console import Console
            from rich.table import Table

            t = Table(*headers)
            for row in table:
                t.add_row(*row)
            Console(file=out).print(t)
            return
        except ImportError:
            pass
    out.write(plain_table(headers, table) + "\n")


# ---------------------------------------------------------------- main

def trace(client: ClusterClient, args, stop: threading.Event, out, err) -> int:
    """Open the session, stream until ``stop`` or the duration, stop, summarize."""
    rt = client.rt
    if rt.host_priv:
        info = client.kernel_info(timeout=CALL_TIMEOUT)
        if info is None:
            raise ClusterError("machemu_kernel_info: the kernel does not answer")
        filt = trace_filter(args, info["tasks"], rt.task_id)
    else:  # the kernel refuses the plain host port whatever the filter: say so
        filt = {"ring": args.ring}
    try:
        session, sinfo = X.machemu_trace_start(rt.host_priv or rt.host, filt,
                                                timeout=CALL_TIMEOUT, rt=rt)
    except MachError as e:
        hint = REFUSALS.get(e.code, "")
        if not rt.host_priv:
            hint = (" (tracing needs the privileged host port: run as the cluster's owner,"
                    f" with {client.run_dir.file('host_priv.secret')} readable)")
        err.write(f"rpctrace: machemu_trace_start refused: {err_name(e.code)}{hint}\n")
        bad_port = e.code in (KernReturn.KERN_INVALID_NAME, KernReturn.KERN_INVALID_TASK)
        return EXIT_USAGE if bad_port and rt.host_priv else EXIT_CLUSTER
    fields = sinfo["fields"]
    what = ", ".join(f"{k} {v}" for k, v in sinfo["filter"].items() if v is not None)
    err.write(f"rpctrace: tracing {what or 'every message'}; ring {sinfo['ring']}"
              f"{f'; {args.duration:g} s' if args.duration else '; Ctrl-C ends'}\n")
    err.flush()
    summary = Summary()
    printer = Printer(out, args.json, 0.0, summary)
    t_start = time.monotonic()
    end = t_start + args.duration if args.duration else None
    since, status = 0, EXIT_OK
    while True:
        last = stop.is_set() or (end is not None and time.monotonic() >= end)
        try:
            rows, since_next, dropped = X.machemu_trace_read(session, since, READ_BATCH,
                                                              timeout=CALL_TIMEOUT, rt=rt)
        except MachError as e:
            err.write(f"rpctrace: the trace ended: {err_name(e.code)}\n")
            status = EXIT_CLUSTER
            break
        since = since_next
        if dropped:
            printer.lost(dropped)
        for row in rows:
            printer.feed(dict(zip(fields, row)))
        printer.flush(time.monotonic() - t_start)
        out.flush()
        if last and len(rows) < READ_BATCH:
            break
        if len(rows) < READ_BATCH:
            stop.wait(POLL_S if end is None else max(0.0, min(POLL_S, end - time.monotonic())))
    if status == EXIT_OK:
        try:
            X.machemu_trace_stop(session, timeout=CALL_TIMEOUT, rt=rt)
        except MachError as e:
            err.write(f"rpctrace: machemu_trace_stop: {err_name(e.code)}\n")
    printer.flush(time.monotonic() - t_start, final=True)
    print_summary(summary, time.monotonic() - t_start, out, args.json)
    out.flush()
    return status


def main(argv: list[str] | None = None, out=None, err=None) -> int:
    """scripts/rpctrace: returns the exit status."""
    out, err = out or sys.stdout, err or sys.stderr
    args = build_parser().parse_args(argv)
    try:
        rd = RunDir.resolve(args.run_dir)
    except RunDirError as e:
        err.write(f"rpctrace: {e}\n")
        return EXIT_USAGE
    if not rd.path.is_dir():
        err.write(f"rpctrace: no run directory {rd.path}\n")
        return EXIT_CLUSTER
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    setup_logs("rpctrace", str(rd.path), "rpctrace.log")
    try:
        with ClusterClient(rd, name="rpctrace", role="tool") as client:
            client.connect()
            return trace(client, args, stop, out, err)
    except ClusterError as e:
        err.write(f"rpctrace: {e}\n")
        return EXIT_CLUSTER
    except UsageError as e:
        err.write(f"rpctrace: {e}\n")
        return EXIT_USAGE
    except MachError as e:
        err.write(f"rpctrace: the kernel went away: {e}\n")
        return EXIT_CLUSTER
    finally:
        for s, h in old.items():
            signal.signal(s, h)


if __name__ == "__main__":  # python -m lab.tools.rpctrace (as scripts/bench runs it)
    sys.exit(main())
