"""libports: port buckets, port classes, port objects and the server loops (thread
models) of the Hurd, over machemu's Mach IPC.

Thread models:
  ``multithread`` — MultithreadServer (ports_manage_port_operations_multithread, the
  Hurd until 2014: a new thread whenever a message arrives and no thread waits).
  ``workers`` — WorkersServer (the Hurd since 2014: one receiver, N workers, requests
  for one object kept in order).
Each server thread vm_allocates its stack, with a guard page, in the task's own map
(stacks.py; ``vm_stacks=False`` opts out).
"""

from translators.libports.bucket import (
    PORT_HAS_SENDRIGHTS,
    PortBucket,
    PortClass,
    PortInfo,
    ports_count_bucket,
    ports_create_bucket,
    ports_create_class,
    ports_create_port,
    ports_destroy_bucket,
    ports_destroy_right,
    ports_get_right,
    ports_get_send_right,
    ports_lookup_port,
    ports_no_senders,
    ports_port_deref,
    ports_port_ref,
)
from translators.libports.demuxer import EOPNOTSUPP, PortsDemuxer, mig_reply
from translators.libports.manage_multithread import (
    DEFAULT_MAX_THREADS,
    STACK_SIZE,
    MultithreadServer,
    ThreadAccount,
    ports_manage_port_operations_multithread,
)
from translators.libports.stacks import GUARD_SIZE, TOUCH_PAGES, ThreadStacks
from translators.libports.translator import (
    THREAD_MODELS,
    Translator,
    add_common_args,
    translator_arg_parser,
)
from translators.libports.workers import DEFAULT_WORKERS, WorkersServer, WorkQueue


def make_server(model: str, bucket: PortBucket, demuxer: PortsDemuxer, *,
                thread_timeout: float | None = None, workers: int = DEFAULT_WORKERS,
                ordered: bool = True,
                max_threads: int = DEFAULT_MAX_THREADS, stack_size: int | None = STACK_SIZE,
                hook=None, name: str = "ports", vm_stacks: bool = True,
                global_timeout: float | None = None, start_over: bool = False,
                stack_touch_pages: int = 0):
    """A server of the named thread model (not started).  ``vm_stacks``: each server
    thread's stack is vm_allocated (with a guard page) in the task's own map and its top
    ``stack_touch_pages`` pages touched.  ``thread_timeout``, ``global_timeout`` and
    ``start_over`` are the multithread model's (MultithreadServer)."""
    if model == "multithread":
        return MultithreadServer(bucket, demuxer, thread_timeout=thread_timeout,
                                 global_timeout=global_timeout, hook=hook,
                                 max_threads=max_threads, stack_size=stack_size, name=name,
                                 vm_stacks=vm_stacks, start_over=start_over,
                                 stack_touch_pages=stack_touch_pages)
    if model == "workers":
        return WorkersServer(bucket, demuxer, nworkers=workers, ordered=ordered, hook=hook,
                             stack_size=stack_size, name=name, vm_stacks=vm_stacks,
                             stack_touch_pages=stack_touch_pages)
    raise ValueError(f"unknown thread model {model!r} (one of {', '.join(THREAD_MODELS)})")


__all__ = [
    "PORT_HAS_SENDRIGHTS", "PortBucket", "PortClass", "PortInfo", "ports_count_bucket",
    "ports_create_bucket", "ports_create_class", "ports_create_port", "ports_destroy_bucket",
    "ports_destroy_right", "ports_get_right", "ports_get_send_right", "ports_lookup_port",
    "ports_no_senders", "ports_port_deref", "ports_port_ref", "EOPNOTSUPP", "PortsDemuxer",
    "mig_reply", "DEFAULT_MAX_THREADS", "STACK_SIZE", "MultithreadServer", "ThreadAccount",
    "ports_manage_port_operations_multithread", "DEFAULT_WORKERS", "WorkersServer",
    "WorkQueue", "THREAD_MODELS", "make_server", "GUARD_SIZE", "TOUCH_PAGES", "ThreadStacks",
    "Translator", "add_common_args", "translator_arg_parser",
]
