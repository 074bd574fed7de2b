"""The kernel side of the external pager protocol (GNU Mach vm/memory_object.c and the
memory_object_* senders of vm/vm_object.c, vm/vm_pageout.c).

Messages to pagers go with MACH_SEND_ALWAYS: nothing in IPC slows the kernel down when a
pager falls behind.  Calls from pagers arrive on an object's control port.
"""

from __future__ import annotations

from kernel.ipc_kmsg import IPCKmsg
from kernel.ipc_right import (
    PORT_RECEIVE,
    PORT_SEND,
    PORT_SEND_ONCE,
    ipc_port_copy_send,
    ipc_port_make_send,
    release_right,
)
from protocol import message as M
from protocol.defs import mach as MD
from protocol.defs import memory_object as MO
from protocol.kern_return import KernReturn as K
from protocol.kern_return import MachError
from protocol.mig import Demux
from protocol.vm_param import PAGE_SIZE

DATA_WRITE_MAX = 32  # pages in one data_return (vm_pageout.c)


def kernel_message(k, routine, dest, dest_type, values, reply=None, reply_type=0):
    """Build a kmsg for ``routine`` from the kernel: port fields are (port, type) pairs
    whose rights the caller has made."""
    bidx, pidx, oidx = routine._req
    body = M.packb([values[i] for i in bidx])
    descs = [values[i] for i in pidx]
    ool = [values[i] for i in oidx]
    return IPCKmsg(routine.msgh_id, dest, dest_type, reply, reply_type, descs, body, ool)


def _control(obj):
    ipc_port_make_send(obj.pager_request)
    return (obj.pager_request, PORT_SEND)


def send_to_pager(k, obj, routine, values, ool_objects=None):
    """memory_object_* to the object's pager; values start after memory_control."""
    pager = obj.pager
    if pager is None:
        if ool_objects:
            for o in ool_objects:
                if o is not None:
                    k.vm.object_deallocate(o)
        return
    ipc_port_copy_send(pager)
    kmsg = kernel_message(k, routine, pager, PORT_SEND, [_control(obj), *values])
    kmsg.ool_objects = ool_objects
    k.kernel_send(kmsg)
    k.vm.stats[routine.name] += 1


def memory_object_init(k, obj):
    ipc_port_make_send(obj.pager_name)
    send_to_pager(k, obj, MO.memory_object_init, [(obj.pager_name, PORT_SEND), PAGE_SIZE])
    obj.pager_initialized = True


def memory_object_data_request(k, obj, offset, access):
    send_to_pager(k, obj, MO.memory_object_data_request, [offset, PAGE_SIZE, access])


def memory_object_data_unlock(k, obj, offset, access):
    send_to_pager(k, obj, MO.memory_object_data_unlock, [offset, PAGE_SIZE, access])


def memory_object_data_return(k, obj, offset, data: bytes, dirty: bool, kernel_copy: bool,
                              laundry=None):
    """``laundry``: the object holding the returned pages; it goes with the message and
    ends up in the pager's address space until the pager deallocates it."""
    send_to_pager(k, obj, MO.memory_object_data_return, [offset, data, dirty, kernel_copy],
                  ool_objects=[laundry])
    k.vm.stats["data_return_pages"] += len(data) // PAGE_SIZE


def memory_object_terminate(k, obj):
    """The object is gone: the pager receives the control and name ports' receive rights."""
    pager = obj.pager
    ctl, name = obj.pager_request, obj.pager_name
    for p in (ctl, name):
        if p is not None:
            p.kobject, p.kotype, p.receiver = None, None, None
    if pager is not None and pager.active and ctl is not None:
        ipc_port_copy_send(pager)
        k.kernel_send(kernel_message(k, MO.memory_object_terminate, pager, PORT_SEND,
                                     [(ctl, PORT_RECEIVE), (name, PORT_RECEIVE)]))
    else:
        for p in (ctl, name):
            if p is not None:
                k.ipc_port_destroy(p)
    if pager is not None:
        release_right(k, pager, PORT_SEND)
    obj.pager = obj.pager_request = obj.pager_name = None


def memory_object_create(k, obj, default_pager):
    """vm_object_pager_create: an anonymous object's first pageout makes the default
    pager its pager.  The kernel makes the pager port and gives its receive right away."""
    from kernel.ipc_port import IPCPort
    from kernel.vm_object import make_control_ports

    port = IPCPort(receiver=None, qlimit=k.config.qlimit_default, label=f"anon {obj.id}")
    make_control_ports(obj)
    ipc_port_make_send(port)
    obj.pager = port
    obj.pager_created = obj.pager_initialized = obj.pager_ready = True
    k.vm.pager_objects[port.id] = obj
    ipc_port_copy_send(default_pager)
    ipc_port_make_send(obj.pager_name)
    k.kernel_send(kernel_message(
        k, MO.memory_object_create, default_pager, PORT_SEND,
        [(port, PORT_RECEIVE), obj.size, _control(obj), (obj.pager_name, PORT_SEND),
         PAGE_SIZE]))
    k.vm.stats["memory_object_create"] += 1


def _reply_port(reply_to):
    port, typ = reply_to
    return port if port is not None and typ == PORT_SEND_ONCE else None


# ---------------------------------------------------------------- control port calls

def make_handlers(k) -> Demux:
    vm = k.vm

    def ready(obj, may_cache, copy_strategy):
        obj.can_persist = may_cache
        obj.copy_strategy = copy_strategy
        obj.pager_ready = True
        k.sched.thread_wakeup(obj)

    def change_attributes(obj, may_cache, copy_strategy, reply_to):
        obj.can_persist = may_cache
        obj.copy_strategy = copy_strategy
        rp = _reply_port(reply_to)
        if rp is not None:
            k.kernel_send(kernel_message(k, MO.memory_object_change_completed, rp,
                                         PORT_SEND_ONCE, [may_cache, copy_strategy]))

    def data_supply(obj, offset, data, lock_value, precious, reply_to):
        if offset % PAGE_SIZE or len(data) % PAGE_SIZE or not len(data):
            rp = _reply_port(reply_to)
            if rp is not None:
                release_right(k, rp, PORT_SEND_ONCE)
            raise MachError(K.KERN_INVALID_ARGUMENT)
        result, error_offset = K.KERN_SUCCESS, 0
        for i in range(0, len(data), PAGE_SIZE):
            code = vm.supply_page(obj, offset + i, data[i:i + PAGE_SIZE], lock_value,
                                  precious)
            if code and not result:
                result, error_offset = code, offset + i
        rp = _reply_port(reply_to)
        if rp is not None:
            ipc_port_make_send(obj.pager_request)
            k.kernel_send(kernel_message(
                k, MO.memory_object_supply_completed, rp, PORT_SEND_ONCE,
                [(obj.pager_request, PORT_SEND), offset, len(data), result, error_offset]))

    def data_unavailable(obj, offset, size):
        for off in range(offset - offset % PAGE_SIZE, offset + size, PAGE_SIZE):
            vm.page_unavailable(obj, off)

    def data_error(obj, offset, size, error_value):
        for off in range(offset - offset % PAGE_SIZE, offset + size, PAGE_SIZE):
            vm.page_error(obj, off)

    def lock_request(obj, offset, size, should_return, should_flush, lock_value, reply_to):
        if should_return not in (0, 1, 2) or size > (1 << 40):
            raise MachError(K.KERN_INVALID_ARGUMENT)
        k.sched.spawn(vm.lock_request_thread(obj, offset, size, should_return, should_flush,
                                             lock_value, _reply_port(reply_to)),
                      "lock_request")

    def destroy(obj, reason):
        vm.object_destroy(obj)

    def get_attributes(obj):
        return obj.pager_ready, obj.can_persist, obj.copy_strategy

    return Demux({
        MD.memory_object_ready: ready,
        MD.memory_object_change_attributes: change_attributes,
        MD.memory_object_data_supply: data_supply,
        MD.memory_object_data_unavailable: data_unavailable,
        MD.memory_object_data_error: data_error,
        MD.memory_object_lock_request: lock_request,
        MD.memory_object_destroy: destroy,
        MD.memory_object_get_attributes: get_attributes,
    })
