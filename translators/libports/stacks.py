"""Server threads' stacks in the translator's own task map, as the Hurd's thread library
allocates them (libpthread pt-create.c / pt-stack-alloc.c: ``vm_allocate`` anywhere for
stack size plus guard size, then ``vm_protect`` of the lowest ``guardsize`` bytes to
VM_PROT_NONE; the stack is ``vm_deallocate``d when the thread is reaped).

The OS thread keeps the stack Python gives it (threading.stack_size); the region here
is the emulated task's view of that stack.  It is what makes a thread storm show up in
the task's map — two entries per thread (guard and stack, which never merge since their
protections differ) and the address space they take — as it does in the Hurd.

A new stack is touched, so that a thread costs physical memory as it did: cthreads
(the Hurd's libthreads until 2012; stack.c setup_stack, cprocs.c cthread_fork,
i386/thread.c cproc_setup) wrote the new thread's cproc pointer in the top word of its
stack, the Hurd's per-thread variables just below it and the thread's first call frame
(argument, fake return address) under those: its top page, one zero-filled frame of the
task's memory faulted in before the thread ran.  (cthreads probed nothing further; a
thread then faults in what its own calls use.)  Here the thread vm_writes those bytes at
the top of its stack (``touch_pages`` = TOUCH_PAGES = 1; more pages get one word each),
so the kernel takes a real page fault and a physical frame for each thread, dirty
anonymous memory the pageout daemon must send to the default pager under pressure,
freed with the stack.  A server asks for it (``stack_touch_pages``; the file systems'
diskfs_startup does).  The default pager does not: the Hurd's wires all its memory
(mach-defpager wire_all_memory) so that it never pages itself, and machemu has no
vm_wire — its touched stacks would be paged out to itself.
cthreads' stacks were 16 pages at increasing fixed addresses, never freed and without a
red zone (RED_ZONE was off); the layout here stays libpthread's.

Every call is made by the thread that owns the stack, with its own reply port.  A
failure (KERN_NO_SPACE, the kernel gone, a timeout) never stops the thread: it is
logged, counted, and the thread runs without a Mach-side stack (or untouched).
"""

from __future__ import annotations

import struct
import threading

import structlog

from protocol.defs import mach as MD
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE, round_page

log = structlog.get_logger("libports")

GUARD_SIZE = PAGE_SIZE  # libpthread's default guardsize: one page
TOUCH_PAGES = 1  # top pages of a new stack written before the thread runs (cthreads: 1)
# What cthreads wrote at the top of a new stack (i386, 4-byte words): the cproc pointer,
# the Hurd's per-thread variables (__hurd_threadvar_max of them, about 10 in 2011) and
# the first frame (argument, return address).
_TOP_WORDS = 1 + 10 + 2
VM_CALL_TIMEOUT = 30.0  # seconds; only a wedged kernel takes this long
_LOG_FIRST = 10  # failures logged one by one, then every _LOG_EVERY-th
_LOG_EVERY = 1000


class ThreadStacks:
    """The stacks of one server's threads in ``rt``'s task map.

    ``allocate()`` (at a thread's start) returns the region's address or None;
    ``deallocate(address)`` (before the thread's ``rt.thread_exit()``) gives it back.
    With ``enabled=False`` both do nothing (the opt-out).
    """

    def __init__(self, rt, stack_size: int, enabled: bool = True,
                 guard_size: int = GUARD_SIZE, name: str = "ports",
                 touch_pages: int = 0):
        if stack_size <= 0:
            raise ValueError("stack_size must be positive")
        if touch_pages < 0:
            raise ValueError("touch_pages must not be negative")
        self.rt = rt
        self.enabled = bool(enabled)
        self.stack_size = round_page(stack_size)
        self.guard_size = round_page(guard_size)
        self.size = self.stack_size + self.guard_size
        self.touch_pages = min(touch_pages, self.stack_size // PAGE_SIZE)
        self.name = name
        self._lock = threading.Lock()
        self.allocated = 0
        self.freed = 0
        self.alloc_failures = 0
        self.free_failures = 0
        self.live = 0
        self.peak_live = 0
        self.pages_touched = 0
        self.touch_failures = 0

    def allocate(self) -> int | None:
        """__pthread_stack_alloc plus the guard's vm_protect, for the calling thread."""
        if not self.enabled:
            return None
        rt = self.rt
        try:
            address = MD.vm_allocate(rt.task_self, 0, self.size, True,
                                     timeout=VM_CALL_TIMEOUT, rt=rt)
        except Exception as e:  # noqa: BLE001 - never fatal to the thread
            self._failed("vm_allocate", e)
            return None
        if self.guard_size:
            try:
                # Stacks grow down: the guard is the lowest page.
                MD.vm_protect(rt.task_self, address, self.guard_size, False,
                              MD.VM_PROT_NONE, timeout=VM_CALL_TIMEOUT, rt=rt)
            except Exception as e:  # noqa: BLE001
                self._failed("vm_protect", e)
                self._release(address)
                return None
        with self._lock:
            self.allocated += 1
            self.live += 1
            if self.live > self.peak_live:
                self.peak_live = self.live
        self._touch(address)
        return address

    def _touch(self, address: int):
        """What cthreads wrote into a new stack before the thread ran (the module
        docstring): the top words of the top page, one word atop each further page."""
        rt, top = self.rt, address + self.size
        me = threading.get_ident() & 0xFFFFFFFF
        for i in range(self.touch_pages):
            if i == 0:
                words = [me] + [0] * (_TOP_WORDS - 1)
                data = struct.pack(f"<{len(words)}I", *words)
            else:
                data = bytes(4)
            at = top - i * PAGE_SIZE - len(data)
            try:
                MD.vm_write(rt.task_self, at, data, timeout=VM_CALL_TIMEOUT, rt=rt)
            except Exception as e:  # noqa: BLE001 - never fatal to the thread
                with self._lock:
                    self.touch_failures += 1
                    n = self.touch_failures
                if n <= _LOG_FIRST or n % _LOG_EVERY == 0:
                    log.warning("thread stack not touched", server=self.name, address=at,
                                error=str(e), failures=n)
                return
            with self._lock:
                self.pages_touched += 1

    def deallocate(self, address: int | None):
        """vm_deallocate of a stack this thread allocated (None: nothing to do)."""
        if address is None:
            return
        ok = self._release(address)
        with self._lock:
            self.live -= 1
            if ok:
                self.freed += 1
            else:
                self.free_failures += 1

    def _release(self, address: int) -> bool:
        try:
            MD.vm_deallocate(self.rt.task_self, address, self.size,
                             timeout=VM_CALL_TIMEOUT, rt=self.rt)
            return True
        except MachError as e:  # the kernel is gone: the map went with the task
            log.debug("thread stack not deallocated", server=self.name, address=address,
                      code=e.code)
        except Exception:  # noqa: BLE001
            log.exception("thread stack not deallocated", server=self.name,
                          address=address)
        return False

    def _failed(self, call: str, e: Exception):
        with self._lock:
            self.alloc_failures += 1
            n = self.alloc_failures
        if n <= _LOG_FIRST or n % _LOG_EVERY == 0:
            code = e.code if isinstance(e, MachError) else None
            log.warning("thread runs without a vm stack", server=self.name, call=call,
                        code=code, error=str(e), failures=n, size=self.size)

    def stats(self) -> dict:
        with self._lock:
            return {"vm_stacks": self.enabled, "stacks_allocated": self.allocated,
                    "stacks_freed": self.freed, "stacks_live": self.live,
                    "stacks_peak": self.peak_live,
                    "stack_alloc_failures": self.alloc_failures,
                    "stack_free_failures": self.free_failures,
                    "stack_touch_pages": self.touch_pages,
                    "stack_pages_touched": self.pages_touched,
                    "stack_touch_failures": self.touch_failures}
