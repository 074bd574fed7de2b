"""The calibration an invocation's report states, so that its numbers can be read
against the machine they came from (DESIGN section 9):

- measured once at the start, with lab.bench's own roles in OUT/calibration: the
  transport floor (two bare processes exchanging msgpack-encoded 4 KiB pages over
  ZeroMQ, the round trip in two halves around the kernel's) and the kernel's null RPC
  (demo_null through a real kernel to a bare server task: two hops), as the bench
  measures them, with fewer rounds (a few seconds in all);
- per run, the disk as that run's ext2fs saw it: its device's statistics
  (translators/ext2fs/store.py, the "stats" or "stopping" record of its log, as the
  load generator reads them): writes, time in the device and waiting for it per write;
- the physical memory: the emulated kernel's page frames (each run's [kernel] table)
  and the host's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import psutil

from lab.bench import rows
from lab.bench.orchestrator import SERVER_NAME, STOP_TIMEOUT, Bench, BenchError
from lab.loadgen.logstats import server_stats
from lab.process import ProcessError, stop_all
from lab.rundir import RunDir

ROUNDS = 400         # timed round trips of the floor (two halves) and of each RPC
STREAM = 1000        # pages the floor streams (two halves; its rate is reported too)
TIMEOUT = 60.0       # seconds any one calibration process may take
DISK_KEYS = ("disk_writes", "disk_busy_s", "disk_wait_s", "disk_waits",
             "disk_write_avg_bytes", "disk_latency_ms", "disk_queue_depth",
             "disk_max_queued")


def us(lat: dict) -> dict:
    """{p50, p99} in microseconds of a lab.bench latency."""
    return {"p50": round(lat["p50_us"], 1), "p99": round(lat["p99_us"], 1)}


def host() -> dict:
    """The host: cores and physical memory."""
    return {"cores": os.cpu_count() or 1, "memory_bytes": psutil.virtual_memory().total}


def measure(dir: Path, say=None, rounds: int = ROUNDS) -> dict:
    """Floor round trip and kernel null RPC measured in ``dir`` (a short path: the
    kernel's socket is there): ``floor_rtt_us``, ``floor_rate_msg_s``,
    ``null_rpc_us``, ``kobject_rpc_us`` (mach_port_type on the task port: one hop),
    ``null_rpc_floor_ratio`` (p50 over p50), ``host``, ``wall_s``; ``error`` instead
    of the measurements if a process failed.  Every process is stopped on the way
    out."""
    say = say or (lambda text: None)
    t0 = time.monotonic()
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    rd = RunDir(dir)
    bench = Bench(SimpleNamespace(rounds=rounds, messages=STREAM, timeout=TIMEOUT),
                  lambda text: say(f"calibration: {text}"), rd)
    out = {"host": host()}
    try:
        rd.check_socket_path()
        fs = bench.role("floor-server", "floor-server", bench.floor_endpoint,
                        rd.ready_file("floor-server"))
        bench.ready(fs, rd, "floor-server", TIMEOUT)
        floor = [bench.floor_half(0)]
        say(f"calibration: kernel null RPC, {rounds} round trips")
        bench.kernel("kernel", rd, TIMEOUT)
        server = bench.role("server", "server", rd.path, SERVER_NAME, 1, 0)
        bench.ready(server, rd, SERVER_NAME, TIMEOUT)
        res = rd.file("client.json")
        kern = bench.result(bench.role("client", "client", rd.path, "client", SERVER_NAME,
                                       rounds, res), res, TIMEOUT)
        floor.append(bench.floor_half(1))
    except (BenchError, ProcessError, OSError, ValueError, KeyError) as e:
        out["error"] = f"{type(e).__name__}: {e.args[0] if e.args else e}"
        return out
    finally:
        stop_all(bench.children, STOP_TIMEOUT, STOP_TIMEOUT)
        out["wall_s"] = round(time.monotonic() - t0, 2)
    fr, rate = rows.floor_summary(floor)
    out.update(floor_rtt_us=us(fr), floor_rate_msg_s=round(rate), null_rpc_us=us(kern["null"]),
               kobject_rpc_us=us(kern["kobject"]),
               null_rpc_floor_ratio=round(kern["null"]["p50_us"] / fr["p50_us"], 2),
               rounds=rounds)
    return out


def disk(run_dir: Path, server: str) -> dict | None:
    """The disk of one run as its ``server`` (ext2fs) counted it, from the last
    statistics record of its log: ``writes``, ``ms_per_write`` (in the device: the
    write and the emulated latency), ``wait_ms_per_write`` (queued for it),
    ``avg_write_bytes``, ``latency_ms`` (the emulated latency asked for),
    ``max_queued``; None if the server keeps no disk statistics."""
    s = server_stats(str(run_dir), server, DISK_KEYS)
    if not s or "disk_writes" not in s:
        return None
    n = s["disk_writes"]

    def per(key):
        return round(1000.0 * s.get(key, 0.0) / n, 3) if n else None

    return {"writes": n, "ms_per_write": per("disk_busy_s"),
            "wait_ms_per_write": per("disk_wait_s"),
            "avg_write_bytes": s.get("disk_write_avg_bytes"),
            "latency_ms": s.get("disk_latency_ms"), "queue_depth": s.get("disk_queue_depth"),
            "max_queued": s.get("disk_max_queued"), "fresh": s.get("fresh")}
