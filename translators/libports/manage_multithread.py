"""The Hurd's thread-per-request server loop until 2014 (libports/manage-multithread.c,
ports_manage_port_operations_multithread), with real OS threads.

Every thread runs ``mach_msg_server_timeout`` on the bucket's port set.  ``nreqthreads``
counts threads waiting to receive, ``totalthreads`` all server threads.  A thread that
takes a message while no other thread is waiting to receive (``nreqthreads`` drops to
zero) spawns a new thread first, so there is always one listener.  A thread whose
receive times out after ``thread_timeout`` exits unless it is the last listener; the
master (first) thread never exits on its own unless ``global_timeout`` passes with it
alone.  Nothing in this design bounds the thread count: a burst of requests whose
handlers block leaves one blocked thread per message.  That is the storm this module
exists to reproduce.

``max_threads`` is a safety bound of this emulator (default 4096), not a Hurd feature —
the real libports has no cap.  At the cap a thread takes its message without spawning;
the next message waits in the kernel queue until a thread is free.

``start_over``: when the global timeout passes with the master alone, the master calls
ports_manage_port_operations_multithread again instead of returning, as the Hurd's
callers do: libdiskfs's pager thread (disk-pager.c service_paging_requests, 2011:
``for (;;)``) and its server thread (init-first.c master_thread_function: again while
diskfs_shutdown fails, which it does while the file system is in use).

A message's out-of-line regions stay the serving thread's until its handler returned
(received with keep_ool, then rt.release_ool): a handler may take them over.
"""

from __future__ import annotations

import contextvars
import threading
import time

import structlog

from protocol import message as M
from protocol.kern_return import MachError, MachMsgReturn
from translators.libports.bucket import PortBucket
from translators.libports.demuxer import PortsDemuxer, is_send_error, reply_send_timeout
from translators.libports.stacks import ThreadStacks

log = structlog.get_logger("libports")

STACK_SIZE = 256 * 1024  # server threads' stacks; Python's default is the OS's 8 MiB
DEFAULT_MAX_THREADS = 4096

_stack_lock = threading.Lock()


def start_thread(target, name: str, stack_size: int | None, args=()) -> threading.Thread:
    """Start a daemon OS thread with a small stack (threading.stack_size is process
    global and read at start(); set it under a lock so concurrent starters agree).  The
    thread runs in a copy of the starter's context, so bound log fields carry over."""
    ctx = contextvars.copy_context()
    t = threading.Thread(target=ctx.run, name=name, args=(target, *args), daemon=True)
    with _stack_lock:
        if stack_size:
            threading.stack_size(stack_size)
        t.start()
    return t


class ThreadAccount:
    """nreqthreads / totalthreads bookkeeping of manage-multithread.c, without the
    threads: each method says what the calling thread must do."""

    def __init__(self, max_threads: int = DEFAULT_MAX_THREADS):
        self.lock = threading.Lock()
        self.max_threads = max_threads
        self.nreqthreads = 0
        self.totalthreads = 0
        self.peak = 0
        self.spawned = 0
        self.exited = 0
        self.capped = 0  # messages taken with no listener left, at the cap

    def begin(self):
        """The master thread starts: one thread, listening."""
        with self.lock:
            self.nreqthreads = 1
            self.totalthreads = 1
            self.peak = max(self.peak, 1)

    def on_request(self) -> bool:
        """internal_demuxer's entry: this thread stops listening.  True when it must
        spawn a new thread (already counted as total and listening)."""
        with self.lock:
            self.nreqthreads -= 1
            if self.nreqthreads != 0:
                return False
            if self.totalthreads >= self.max_threads:
                self.capped += 1
                return False
            self.totalthreads += 1
            self.nreqthreads += 1
            self.spawned += 1
            if self.totalthreads > self.peak:
                self.peak = self.totalthreads
            return True

    def spawn_failed(self):
        with self.lock:
            self.totalthreads -= 1
            self.nreqthreads -= 1
            self.spawned -= 1

    def on_reply(self):
        """internal_demuxer's exit: this thread listens again."""
        with self.lock:
            self.nreqthreads += 1

    def master_alone(self) -> bool:
        """Is the master the only server thread (its global timeout may end the loop)?"""
        with self.lock:
            return self.totalthreads == 1

    def on_timeout(self, master: bool) -> bool:
        """The receive timed out.  True when the thread must exit (and is uncounted)."""
        with self.lock:
            if master:
                if self.totalthreads != 1:
                    return False
                self.nreqthreads -= 1
                self.totalthreads -= 1
                self.exited += 1
                return True
            if self.nreqthreads == 1:
                return False  # the last listener stays
            self.nreqthreads -= 1
            self.totalthreads -= 1
            self.exited += 1
            return True

    def on_exit(self):
        """A listening thread leaves for good (server stopping, kernel gone)."""
        with self.lock:
            self.nreqthreads -= 1
            self.totalthreads -= 1
            self.exited += 1


class MultithreadServer:
    """ports_manage_port_operations_multithread over ``bucket`` with ``demuxer``.

    ``thread_timeout`` / ``global_timeout`` are seconds (None: never), ``hook`` runs at
    the start of every server thread.  ``start()`` runs the master thread in the
    background; ``run()`` runs it in the calling thread, as the Hurd does.

    ``vm_stacks`` (default on): every thread this server creates vm_allocates its stack
    (``stack_size``, or STACK_SIZE when that is None, plus a guard page) in the task's
    own map, touches its top ``stack_touch_pages`` pages and gives it back when it
    exits (see stacks.py).  The calling thread of ``run()`` is not created here: it has
    its stack already.  ``start_over``: see the module docstring.
    """

    def __init__(self, bucket: PortBucket, demuxer: PortsDemuxer,
                 thread_timeout: float | None = None, global_timeout: float | None = None,
                 hook=None, max_threads: int = DEFAULT_MAX_THREADS,
                 stack_size: int | None = STACK_SIZE, name: str = "ports",
                 vm_stacks: bool = True, start_over: bool = False,
                 stack_touch_pages: int = 0):
        if max_threads < 1:
            raise ValueError("max_threads must be at least 1")
        self.bucket, self.demuxer = bucket, demuxer
        self.rt = bucket.rt
        self.thread_timeout = thread_timeout or None
        self.global_timeout = global_timeout or None
        self.hook = hook
        self.stack_size = stack_size
        self.name = name
        self.stacks = ThreadStacks(self.rt, stack_size or STACK_SIZE, vm_stacks, name=name,
                                   touch_pages=stack_touch_pages)
        self.account = ThreadAccount(max_threads)
        self.start_over = start_over
        self.global_timeouts = 0  # times the master started over (start_over)
        self.stopping = False
        self.done = threading.Event()
        self.error: str | None = None
        self._threads: set[threading.Thread] = set()
        self._tlock = threading.Lock()
        self._seq = 0
        self.messages = 0
        self._mlock = threading.Lock()
        self.started = 0.0

    # ------------------------------------------------------------ control

    def start(self):
        self.started = time.monotonic()
        self.account.begin()
        self._spawn(master=True)
        return self

    def run(self):
        """Serve in the calling thread until stopped (or the global timeout)."""
        self.started = time.monotonic()
        self.account.begin()
        with self._tlock:
            self._threads.add(threading.current_thread())
        self._thread_function(True)

    def stop(self, timeout: float = 10.0):
        """Stop serving: destroy the bucket's port set so every listener returns, then
        wait for the threads (a thread in a handler finishes it first)."""
        from translators.libports.bucket import ports_destroy_bucket

        self.stopping = True
        ports_destroy_bucket(self.bucket)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._tlock:
                threads = [t for t in self._threads if t is not threading.current_thread()]
            if not threads:
                break
            threads[0].join(max(0.0, min(0.2, deadline - time.monotonic())))
        return not self.alive_threads()

    def alive_threads(self) -> int:
        with self._tlock:
            return sum(1 for t in self._threads if t.is_alive())

    def stats(self) -> dict:
        a = self.account
        with a.lock:
            d = {"model": "multithread", "threads": a.totalthreads, "peak_threads": a.peak,
                 "waiting": a.nreqthreads, "spawned": a.spawned, "exited": a.exited,
                 "capped": a.capped, "max_threads": a.max_threads}
        d.update(messages=self.messages, thread_timeout=self.thread_timeout,
                 global_timeout=self.global_timeout, global_timeouts=self.global_timeouts)
        d.update(self.stacks.stats())
        d.update({f"demux_{k}": v for k, v in self.demuxer.stats.items()})
        return d

    # ------------------------------------------------------------ threads

    def _spawn(self, master=False):
        with self._tlock:
            self._seq += 1
            n = self._seq
        try:
            t = start_thread(self._thread_main, f"{self.name}-{n}", self.stack_size,
                             (master,))
        except RuntimeError as e:  # the OS refused a thread
            log.error("cannot start server thread", error=str(e),
                      threads=self.account.totalthreads)
            self.account.spawn_failed()
            return
        with self._tlock:
            self._threads.add(t)

    def _thread_main(self, master: bool):
        try:
            self._thread_function(master, own_stack=True)
        finally:
            with self._tlock:
                self._threads.discard(threading.current_thread())

    def _thread_function(self, master: bool, own_stack: bool = False):
        timeout = self.global_timeout if master else self.thread_timeout
        # The thread library's part of starting a thread, done by the thread itself.
        stack = self.stacks.allocate() if own_stack else None
        try:
            if self.hook is not None:
                self.hook()
            while True:
                code = self._server_timeout(timeout)
                if code == MachMsgReturn.MACH_RCV_TIMED_OUT and not self.stopping:
                    if master and self.start_over and self.account.master_alone():
                        self.global_timeouts += 1  # ports_manage_* returned: call it again
                        continue
                    if self.account.on_timeout(master):
                        return
                    continue
                self.account.on_exit()
                if not self.stopping and code != MachMsgReturn.MACH_RCV_TIMED_OUT:
                    self.error = f"receive failed: {code:#x}"
                    log.error("server thread ends", code=code, master=master)
                return
        finally:
            self.stacks.deallocate(stack)
            if master:
                self.done.set()
            try:
                self.rt.thread_exit()
            except MachError:
                pass

    def _server_timeout(self, timeout: float | None) -> int:
        """mach_msg_server_timeout: send the last reply and receive the next request in
        one mach_msg; return the code that ended the loop (a receive error)."""
        rt, pset = self.rt, self.bucket.portset
        reply = None
        while True:
            if self.stopping and reply is None:
                return MachMsgReturn.MACH_RCV_PORT_DIED
            try:
                if reply is not None:
                    code, msg = rt.mach_msg(M.MACH_SEND_MSG | M.MACH_RCV_MSG, reply, pset,
                                            send_timeout=reply_send_timeout(reply),
                                            rcv_timeout=timeout, keep_ool=True)
                else:
                    code, msg = rt.mach_msg(M.MACH_RCV_MSG, None, pset, rcv_timeout=timeout,
                                            keep_ool=True)
            except MachError as e:  # the kernel is gone
                return e.code or MachMsgReturn.MACH_RCV_PORT_DIED
            if code:
                if is_send_error(code) and reply is not None:
                    # The reply could not be sent (client gone, its queue full): drop it
                    # and receive the next request.
                    log.debug("reply not sent", code=code, msgh_id=reply.msgh_id)
                    self.demuxer.discard_reply(reply)
                    reply = None
                    continue
                return code
            reply = None
            if self.account.on_request():
                self._spawn()
            try:
                reply = self.demuxer.serve(msg)
            finally:
                # The request's out-of-line regions are ours until the handler is done
                # with them (a handler may have taken them over: rt.take_ool).
                rt.release_ool(msg)
                with self._mlock:
                    self.messages += 1
                self.account.on_reply()


def ports_manage_port_operations_multithread(bucket: PortBucket, demuxer: PortsDemuxer,
                                             thread_timeout: float | None = None,
                                             global_timeout: float | None = None,
                                             hook=None, **kw):
    """ports_manage_port_operations_multithread: serve ``bucket`` in the calling thread
    (plus the threads it spawns) until the global timeout passes with nothing to do or
    the server is stopped."""
    server = MultithreadServer(bucket, demuxer, thread_timeout, global_timeout, hook, **kw)
    server.run()
    return server
