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

import sys
import threading

import structlog

from protocol.defs import demo as D
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
    ap = LP.translator_arg_parser("translators.demo", __doc__, "demo")
    ap.add_argument("--unordered", action="store_true",
                    help="workers model: let any worker take any request (the Hurd keeps "
                         "each object's requests in order, so one busy object is served "
                         "by one worker at a time)")
    ap.add_argument("--max-threads", type=int, default=LP.DEFAULT_MAX_THREADS,
                    help="safety cap on multithread server threads (the Hurd has none)")
    ap.add_argument("--no-vm-stacks", dest="vm_stacks", action="store_false",
                    help="do not vm_allocate server threads' stacks (with a guard page) "
                         "in the task's own map")
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
    t = LP.Translator(args, "demo server", log)
    rt = t.connect()
    if rt is None:
        return 1
    with t:
        demo = DemoServer(t.stop)
        bucket = LP.ports_create_bucket(rt)
        root_class = LP.ports_create_class(name="demo-root")
        root = LP.ports_create_port(root_class, bucket, data=demo)
        send = LP.ports_get_send_right(root)
        LP.ports_port_deref(root)  # the send rights keep it now
        demuxer = LP.PortsDemuxer(bucket, demo.handlers())
        server = t.add_server(LP.make_server(args.threads, bucket, demuxer,
                                             thread_timeout=args.thread_timeout or None,
                                             workers=args.workers, ordered=not args.unordered,
                                             max_threads=args.max_threads,
                                             name=args.name, vm_stacks=args.vm_stacks))
        t.stopping_stats = server.stats
        server.start()
        t.check_in(send)
        t.ready("demo server ready", model=args.threads,
                workers=args.workers if args.threads == "workers" else None,
                thread_timeout=args.thread_timeout, vm_stacks=args.vm_stacks, port=send,
                endpoint=t.endpoint)
        t.serve_until_stopped(server.stats)
    return t.code


if __name__ == "__main__":
    sys.exit(main())
