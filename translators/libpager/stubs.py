"""The calls libpager makes to the kernel, in one small object (``KernelCalls``).

The default implementation sends the protocol.defs.mach stubs on the memory object's
control port (one-way simpleroutines) and the mach_port calls on the task port, with the
pager's task runtime.  Unit tests substitute an object with the same methods to record
the calls; every other code path is the real one.

``reply_to`` is a receive right name in this task (sent make-send-once) or 0 for none.
"""

from __future__ import annotations

from protocol import message as M
from protocol.defs import mach as V
from protocol.defs import mach_port as P
from translators.libports.stacks import VM_CALL_TIMEOUT


class KernelCalls:
    """Outbound calls of libpager.  ``rt`` is the task runtime (None: the process's)."""

    def __init__(self, rt=None):
        self.rt = rt

    # --- on the control port (pager -> kernel, memory_object_* of mach.defs)

    def ready(self, control: int, may_cache: bool, copy_strategy: int):
        """memory_object_ready."""
        V.memory_object_ready(control, may_cache, copy_strategy, rt=self.rt)

    def data_supply(self, control: int, offset: int, data, lock_value: int,
                    precious: bool, reply_to: int = M.MACH_PORT_NULL):
        """memory_object_data_supply (whole pages)."""
        V.memory_object_data_supply(control, offset, data, lock_value, precious, reply_to,
                                    rt=self.rt)

    def data_unavailable(self, control: int, offset: int, size: int):
        """memory_object_data_unavailable: the kernel zero-fills."""
        V.memory_object_data_unavailable(control, offset, size, rt=self.rt)

    def data_error(self, control: int, offset: int, size: int, error: int):
        """memory_object_data_error."""
        V.memory_object_data_error(control, offset, size, error, rt=self.rt)

    def lock_request(self, control: int, offset: int, size: int, should_return: int,
                     should_flush: bool, lock_value: int,
                     reply_to: int = M.MACH_PORT_NULL):
        """memory_object_lock_request; with ``reply_to`` the kernel answers
        memory_object_lock_completed there."""
        V.memory_object_lock_request(control, offset, size, should_return, should_flush,
                                     lock_value, reply_to, rt=self.rt)

    def change_attributes(self, control: int, may_cache: bool, copy_strategy: int,
                          reply_to: int = M.MACH_PORT_NULL):
        """memory_object_change_attributes."""
        V.memory_object_change_attributes(control, may_cache, copy_strategy, reply_to,
                                          rt=self.rt)

    def destroy_object(self, control: int, reason: int):
        """memory_object_destroy."""
        V.memory_object_destroy(control, reason, rt=self.rt)

    # --- our own address space

    def vm_deallocate(self, address: int, size: int):
        """vm_deallocate of a region of this task's map (a data_return's pages, once
        written: the munmap of data-return.c)."""
        rt = self._rt()
        V.vm_deallocate(rt.task_self, address, size, timeout=VM_CALL_TIMEOUT, rt=rt)

    # --- rights in our own space

    def deallocate(self, name: int):
        """mach_port_deallocate: drop one user reference (a send right a message gave)."""
        rt = self._rt()
        P.mach_port_deallocate(rt.task_self, name, rt=rt)

    def mod_refs(self, name: int, delta: int):
        """mach_port_mod_refs on the send right under ``name``."""
        rt = self._rt()
        P.mach_port_mod_refs(rt.task_self, name, M.MACH_PORT_RIGHT_SEND, delta, rt=rt)

    def destroy(self, name: int):
        """mach_port_destroy: every right under ``name`` (terminate's receive rights)."""
        rt = self._rt()
        P.mach_port_destroy(rt.task_self, name, rt=rt)

    def _rt(self):
        if self.rt is not None:
            return self.rt
        from protocol import runtime

        return runtime.current()
