"""Server threads' stacks in the translator's own task map, as the Hurd's thread library
allocates them (libpthread pt-create.c / pt-stack-alloc.c: ``vm_allocate`` anywhere for
stack size plus guard size, then ``vm_protect`` of the lowest ``guardsize`` bytes to
VM_PROT_NONE; the stack is ``vm_deallocate``d when the thread is reaped).

The OS thread keeps the stack Python gives it (threading.stack_size); the region here
is the emulated task's view of that stack.  It is what makes a thread storm show up in
the task's map — two entries per thread (guard and stack, which never merge since their
protections differ) and the address space they take — as it does in the Hurd.

Every call is made by the thread that owns the stack, with its own reply port.  A
failure (KERN_NO_SPACE, the kernel gone, a timeout) never stops the thread: it is
logged, counted, and the thread runs without a Mach-side stack.
"""

from __future__ import annotations

import threading

import structlog

from protocol.defs import mach as MD
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE, round_page

log = structlog.get_logger("libports")

GUARD_SIZE = PAGE_SIZE  # libpthread's default guardsize: one page
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
                 guard_size: int = GUARD_SIZE, name: str = "ports"):
        if stack_size <= 0:
            raise ValueError("stack_size must be positive")
        self.rt = rt
        self.enabled = bool(enabled)
        self.stack_size = round_page(stack_size)
        self.guard_size = round_page(guard_size)
        self.size = self.stack_size + self.guard_size
        self.name = name
        self._lock = threading.Lock()
        self.allocated = 0
        self.freed = 0
        self.alloc_failures = 0
        self.free_failures = 0
        self.live = 0
        self.peak_live = 0

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
        return address

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
                    "stack_free_failures": self.free_failures}
