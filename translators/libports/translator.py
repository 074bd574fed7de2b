"""What every translator process of a machemu cluster does around its server loops
(the part of a Hurd translator's main() that trivfs_startup / ports_manage_* leave to
it): the common options, logs, SIGTERM/SIGINT, the connection to the kernel,
DIR/NAME.ready, the periodic statistics line and a clean shutdown.

    ap = translator_arg_parser("translators.demo", __doc__, "demo")  # + its own options
    args = ap.parse_args(argv)
    t = Translator(args, "demo server", log)
    rt = t.connect()                   # None: the kernel is unreachable (logged)
    if rt is None:
        return 1
    with t:                            # failures are logged as "demo server failed"
        t.add_server(make_server(...).start())
        t.check_in(root_send_right)   # netname_check_in, signed with a private port
        ...
        t.ready("demo server ready", model=args.threads)
        t.serve_until_stopped(stats)
    return t.code
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from protocol import logs, runtime
from protocol import message as M
from protocol.defs import mach_port as P
from protocol.defs import netname as NS
from protocol.host_secret import HostSecretError, read_host_secret
from protocol.kern_return import MachError
from translators.libports.workers import DEFAULT_WORKERS

THREAD_MODELS = ("multithread", "workers")


def add_common_args(ap: argparse.ArgumentParser, default_name: str, *,
                    thread_timeout: float = 1.0,
                    server_timeout: float | None = None) -> argparse.ArgumentParser:
    """The options every translator takes: --run-dir, --name, the thread model
    (--threads, --workers, --thread-timeout), --endpoint, --stats-interval, --log-level.
    ``thread_timeout`` is --thread-timeout's default; with ``server_timeout`` there is a
    --server-timeout too, of that default (a translator whose server loops use it: the
    libdiskfs ones, translators.fsserver.DISKFS_TIMEOUTS)."""
    ap.add_argument("--run-dir", default=os.environ.get("MACHEMU_RUN_DIR", "run"))
    ap.add_argument("--name", default=default_name)
    ap.add_argument("--threads", choices=THREAD_MODELS, default="multithread",
                    help="thread model (default multithread, the Hurd until 2014)")
    ap.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                    help="worker threads of the workers model")
    ap.add_argument("--thread-timeout", type=float, default=thread_timeout,
                    help="seconds an idle multithread server thread (not the first) waits "
                         f"for a message before it exits (default {thread_timeout:g}; "
                         "0 = never)")
    if server_timeout is not None:
        ap.add_argument("--server-timeout", type=float, default=server_timeout,
                        help="seconds the first thread of a multithread server waits for "
                             "a message before it starts over (its global timeout; "
                             f"default {server_timeout:g}; 0 = never)")
    ap.add_argument("--endpoint", help="kernel endpoint (default: $MACHEMU_KERNEL, else "
                                       "from the run directory)")
    ap.add_argument("--stats-interval", type=float, default=5.0,
                    help="seconds between statistics lines in the log (0 = never)")
    ap.add_argument("--log-level", default="info")
    return ap


def translator_arg_parser(module: str, doc: str, default_name: str,
                          **defaults) -> argparse.ArgumentParser:
    """``python -m MODULE``'s parser, described by DOC's first line, with the common
    options (add_common_args; ``defaults``: its thread_timeout / server_timeout)."""
    ap = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.splitlines()[0])
    return add_common_args(ap, default_name, **defaults)


class Translator:
    """One translator process's life: logs to DIR/NAME.log, a ``stop`` event set by
    SIGTERM/SIGINT, the task (``connect``), the server loops (``add_server``),
    DIR/NAME.ready (``ready``), the watch loop (``serve_until_stopped``) and, on leaving
    the ``with`` block, the shutdown: servers stopped (last added first), a
    "WHAT stopping" line, the ready file removed, the task closed.  ``what`` names the
    translator in its log events ("WHAT failed", "WHAT stopping")."""

    def __init__(self, args: argparse.Namespace, what: str, log=None, *,
                 always_log_stopping: bool = False):
        self.args = args
        self.what = what
        self.name = args.name
        self.run_dir = Path(args.run_dir).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        logs.setup(self.name, self.run_dir / f"{self.name}.log", args.log_level)
        self.log = log if log is not None else structlog.get_logger(self.name)
        self.ready_path = self.run_dir / f"{self.name}.ready"
        self.stop = threading.Event()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.endpoint = (args.endpoint or os.environ.get("MACHEMU_KERNEL")
                         or runtime.kernel_endpoint(self.run_dir))
        self.rt = None
        self.signature = 0  # the private port signing our name server entries
        self.servers: list = []
        self.code = 0
        # The "WHAT stopping" line's extra fields; the main sets it once its state exists.
        self.stopping_stats: Callable[[], dict] = dict
        # Without servers the stopping line is left out unless this is set.
        self.always_log_stopping = always_log_stopping

    def _on_signal(self, signum, frame):
        self.stop.set()

    def connect(self):
        """The process's task (runtime.connect, role "server"), shown the cluster owner's
        secret from the run directory (protocol.host_secret) if there is one there: the
        launcher gives its translators host_priv that way.  None, logged, when the kernel
        cannot be reached or the secret file must not be trusted."""
        try:
            secret = read_host_secret(self.run_dir)
        except HostSecretError as e:
            self.log.error("host secret not trusted", error=str(e))
            return None
        try:
            self.rt = runtime.connect(self.endpoint, name=self.name, role="server",
                                      secret=secret)
        except MachError as e:
            self.log.error("cannot connect to the kernel", endpoint=self.endpoint,
                           error=str(e))
            return None
        return self.rt

    def check_in(self, port: int, name: str | None = None):
        """netname_check_in ``port`` (a send right's name) under ``name`` (default this
        translator's), signed with a port only this task holds: a receive right made
        for the purpose, of which the name server alone gets a send right.  A client
        that looked the root port up thus cannot check the name in again or out."""
        rt = self.rt
        if not self.signature:
            sig = P.mach_port_allocate(rt.task_self, M.MACH_PORT_RIGHT_RECEIVE, rt=rt)
            P.mach_port_insert_right(rt.task_self, sig, (sig, M.MACH_MSG_TYPE_MAKE_SEND),
                                     rt=rt)
            self.signature = sig
        NS.netname_check_in(rt.name_server, name or self.name, self.signature, port, rt=rt)

    def add_server(self, server):
        """Watch ``server`` (a started libports server) and stop it at the end."""
        self.servers.append(server)
        return server

    def ready(self, event: str, **fields):
        """Write DIR/NAME.ready (the pid) atomically and log ``event``."""
        tmp = self.ready_path.with_suffix(".ready.tmp")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, self.ready_path)
        self.log.info(event, pid=os.getpid(), **fields)

    def serve_until_stopped(self, stats_fn: Callable[[], dict]) -> int:
        """Wait for a signal (or a server loop's end: code 1), logging ``stats_fn()``
        as a "stats" line every --stats-interval seconds."""
        interval = self.args.stats_interval
        next_stats = time.monotonic() + interval
        while not self.stop.is_set():
            if any(s.done.is_set() for s in self.servers):
                if len(self.servers) == 1:
                    self.log.error("server loop ended", error=self.servers[0].error)
                else:
                    self.log.error("server loop ended",
                                   errors=[s.error for s in self.servers])
                self.code = 1
                break
            self.stop.wait(0.25)
            if interval and time.monotonic() >= next_stats:
                self.log.info("stats", **{**stats_fn(), **self.refused_stats()})
                next_stats = time.monotonic() + interval
        return self.code

    def refused_stats(self) -> dict:
        """``not_from_kernel``: messages only the kernel may send (notifications,
        memory_object_*) that a task forged, refused by this translator's servers."""
        n = 0
        for s in self.servers:
            demuxer = getattr(s, "demuxer", None)
            if demuxer is not None:
                n += demuxer.stats.get("not_from_kernel", 0)
        return {"not_from_kernel": n}

    def close(self):
        """Stop the servers, log "WHAT stopping", remove the ready file, close the task."""
        self.stop.set()
        if self.servers or self.always_log_stopping:
            clean = True
            for s in reversed(self.servers):
                clean = s.stop(timeout=10) and clean
            self.log.info(f"{self.what} stopping", clean=clean,
                          **{**self.stopping_stats(), **self.refused_stats()})
        try:
            self.ready_path.unlink()
        except FileNotFoundError:
            pass
        runtime.disconnect()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        suppress = False
        if exc_type is not None and issubclass(exc_type, Exception):
            if isinstance(exc, MachError):
                self.log.error(f"{self.what} failed", error=str(exc))
            else:
                self.log.exception(f"{self.what} failed", exc_info=exc)
            self.code = 1
            suppress = True
        self.close()
        return suppress
