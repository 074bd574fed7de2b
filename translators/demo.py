"""The demo server: serves the demo subsystem (protocol.defs.demo) with libports.

    python -m translators.demo --run-dir DIR [--name demo]
        [--threads multithread|workers] [--workers N] [--thread-timeout S]
        [--unordered] [--max-threads N] [--no-vm-stacks] [--log-level L]

demo_null does nothing, demo_echo returns its data, demo_sleep blocks the serving thread
for msecs (how a thread model's growth under a flood is made visible), demo_send is
one-way.  The root port is checked in with the name server under NAME; DIR/NAME.ready
holds the pid once the server is serving; JSON logs go to DIR/NAME.log.  SIGTERM or
SIGINT stops the threads and closes the task.  Each server thread's stack is vm_allocated
(with a guard page) in the server's task map unless --no-vm-stacks.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

import structlog

from protocol import logs, runtime
from protocol.defs import demo as D
from protocol.defs import netname as NS
from protocol.kern_return import MachError
from translators import libports as LP

log = structlog.get_logger("demo")

MAX_SLEEP_MS = 600_000


class DemoServer:
    """The demo subsystem's handlers on one root port."""

    def __init__(self, stop: threading.Event):
        self.stop = stop
        self.sent_bytes = 0
        self._lock = threading.Lock()

    def handlers(self) -> dict:
        return {D.demo_null: self.demo_null, D.demo_echo: self.demo_echo,
                D.demo_sleep: self.demo_sleep, D.demo_send: self.demo_send}

    def demo_null(self, pi):
        return None

    def demo_echo(self, pi, data):
        return bytes(data)

    def demo_sleep(self, pi, msecs):
        # Blocks this server thread; a stopping server cuts the wait short.
        self.stop.wait(min(msecs, MAX_SLEEP_MS) / 1000.0)

    def demo_send(self, pi, data):
        with self._lock:
            self.sent_bytes += len(data)
        log.debug("demo_send", nbytes=len(data), head=bytes(data[:8]).hex())


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m translators.demo",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default=os.environ.get("MACHEMU_RUN_DIR", "run"))
    ap.add_argument("--name", default="demo")
    ap.add_argument("--threads", choices=LP.THREAD_MODELS, default="multithread",
                    help="thread model (default multithread, the Hurd until 2014)")
    ap.add_argument("--workers", type=int, default=LP.DEFAULT_WORKERS,
                    help="worker threads of the workers model")
    ap.add_argument("--unordered", action="store_true",
                    help="workers model: let any worker take any request (the Hurd keeps "
                         "each object's requests in order, so one busy object is served "
                         "by one worker at a time)")
    ap.add_argument("--thread-timeout", type=float, default=1.0,
                    help="seconds an idle multithread server thread waits before exiting "
                         "(Hurd file pagers: 1 s; 0 = never)")
    ap.add_argument("--max-threads", type=int, default=LP.DEFAULT_MAX_THREADS,
                    help="safety cap on multithread server threads (the Hurd has none)")
    ap.add_argument("--no-vm-stacks", dest="vm_stacks", action="store_false",
                    help="do not vm_allocate server threads' stacks (with a guard page) "
                         "in the task's own map")
    ap.add_argument("--endpoint", help="kernel endpoint (default: $MACHEMU_KERNEL, else "
                                       "from the run directory)")
    ap.add_argument("--stats-interval", type=float, default=5.0,
                    help="seconds between statistics lines in the log (0 = never)")
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    if args.max_threads < 1:
        ap.error("--max-threads must be at least 1")
    if args.thread_timeout < 0:
        ap.error("--thread-timeout must not be negative")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    run_dir = Path(args.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    name = args.name
    logs.setup(name, run_dir / f"{name}.log", args.log_level)
    ready = run_dir / f"{name}.ready"
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    endpoint = args.endpoint or os.environ.get("MACHEMU_KERNEL") or runtime.kernel_endpoint(
        run_dir)
    try:
        rt = runtime.connect(endpoint, name=name, role="server")
    except MachError as e:
        log.error("cannot connect to the kernel", endpoint=endpoint, error=str(e))
        return 1
    server = None
    code = 0
    try:
        demo = DemoServer(stop)
        bucket = LP.ports_create_bucket(rt)
        root_class = LP.ports_create_class(name="demo-root")
        root = LP.ports_create_port(root_class, bucket, data=demo)
        send = LP.ports_get_send_right(root)
        LP.ports_port_deref(root)  # the send rights keep it now
        demuxer = LP.PortsDemuxer(bucket, demo.handlers())
        server = LP.make_server(args.threads, bucket, demuxer,
                                thread_timeout=args.thread_timeout or None,
                                workers=args.workers, ordered=not args.unordered,
                                max_threads=args.max_threads,
                                name=name, vm_stacks=args.vm_stacks)
        server.start()
        NS.netname_check_in(rt.name_server, name, send, send, rt=rt)
        tmp = ready.with_suffix(".ready.tmp")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, ready)
        log.info("demo server ready", pid=os.getpid(), model=args.threads,
                 workers=args.workers if args.threads == "workers" else None,
                 thread_timeout=args.thread_timeout, vm_stacks=args.vm_stacks, port=send, endpoint=endpoint)
        next_stats = time.monotonic() + args.stats_interval
        while not stop.is_set():
            if server.done.is_set():
                log.error("server loop ended", error=server.error)
                code = 1
                break
            stop.wait(0.25)
            if args.stats_interval and time.monotonic() >= next_stats:
                log.info("stats", **server.stats())
                next_stats = time.monotonic() + args.stats_interval
    except MachError as e:
        log.error("demo server failed", error=str(e))
        code = 1
    except Exception:
        log.exception("demo server failed")
        code = 1
    finally:
        stop.set()
        if server is not None:
            clean = server.stop(timeout=10)
            log.info("demo server stopping", clean=clean, **server.stats())
        try:
            ready.unlink()
        except FileNotFoundError:
            pass
        runtime.disconnect()
    return code


if __name__ == "__main__":
    sys.exit(main())
