"""The kernel as a client of pagers: the memory_object and memory_object_default messages
it sends (what MIG makes of GNU Mach's memory_object_user.cli and
memory_object_default.cli), and the replies to pagers' control-port calls.

Messages to pagers go with MACH_SEND_ALWAYS: nothing in IPC slows the kernel down when a
pager falls behind.  Each message is encoded by its routine's request encoder
(``protocol.mig``); port fields are (port, type) pairs whose rights the caller made.
"""

from __future__ import annotations

from kernel.ipc_kmsg import IPCKmsg
from kernel.ipc_port import ipc_port_copy_send, ipc_port_make_send
from kernel.ipc_right import PORT_RECEIVE, PORT_SEND, PORT_SEND_ONCE, release_right
from protocol.defs import memory_object as MO
from protocol.vm_param import PAGE_SIZE


def kernel_message(routine, dest, dest_type, values, reply=None, reply_type=0) -> IPCKmsg:
    """A kmsg for ``routine`` from the kernel to the right ``(dest, dest_type)``."""
    body, descs, ool = routine.encode_request(values, rights=True)
    return IPCKmsg(routine.msgh_id, dest, dest_type, reply, reply_type, descs, body, ool)


def _control(obj):
    ipc_port_make_send(obj.pager_request)
    return (obj.pager_request, PORT_SEND)


def send_to_pager(k, obj, routine, values, ool_objects=None):
    """memory_object_* to the object's pager (values after memory_control); with no
    pager, the message's out-of-line objects are discarded."""
    pager = obj.pager
    if pager is None:
        if ool_objects:
            for o in ool_objects:
                if o is not None:
                    k.vm_map_copy_discard(o)
        return
    ipc_port_copy_send(pager)
    kmsg = kernel_message(routine, pager, PORT_SEND, [_control(obj), *values])
    kmsg.ool_objects = ool_objects
    k.kernel_send(kmsg)
    k.vm.stats[routine.name] += 1


def memory_object_init(k, obj):
    """memory_object_init: the pager hears of the object (control and name ports)."""
    ipc_port_make_send(obj.pager_name)
    send_to_pager(k, obj, MO.memory_object_init, [(obj.pager_name, PORT_SEND), PAGE_SIZE])
    obj.pager_initialized = True


def memory_object_data_request(k, obj, offset, access):
    """memory_object_data_request: one page, for a fault."""
    send_to_pager(k, obj, MO.memory_object_data_request, [offset, PAGE_SIZE, access])


def memory_object_data_unlock(k, obj, offset, access, size=PAGE_SIZE):
    """memory_object_data_unlock: a fault wants ``access`` that page_lock forbids.
    ``size`` PAGE_SIZE + 1 is the advisory policy's hint to start writing back."""
    send_to_pager(k, obj, MO.memory_object_data_unlock, [offset, size, access])


def memory_object_data_return(k, obj, offset, data: bytes, dirty: bool, kernel_copy: bool,
                              laundry=None):
    """memory_object_data_return: a run of pages back to the pager.  ``laundry``: the
    object holding them; it goes with the message and ends up in the pager's address
    space until the pager deallocates it."""
    send_to_pager(k, obj, MO.memory_object_data_return, [offset, data, dirty, kernel_copy],
                  ool_objects=[laundry])
    k.vm.stats["data_return_pages"] += len(data) // PAGE_SIZE


def memory_object_terminate(k, obj):
    """memory_object_terminate: the object is gone; the pager receives the control and
    name ports' receive rights (or they die with the pager)."""
    pager = obj.pager
    ctl, name = obj.pager_request, obj.pager_name
    for p in (ctl, name):
        if p is not None:
            p.kobject, p.kotype, p.receiver = None, None, None
    if pager is not None and pager.active and ctl is not None:
        ipc_port_copy_send(pager)
        k.kernel_send(kernel_message(MO.memory_object_terminate, pager, PORT_SEND,
                                     [(ctl, PORT_RECEIVE), (name, PORT_RECEIVE)]))
    else:
        for p in (ctl, name):
            if p is not None:
                k.ipc_port_destroy(p)
    if pager is not None:
        release_right(k, pager, PORT_SEND)
    obj.pager = obj.pager_request = obj.pager_name = None


def memory_object_create(k, obj, default_pager, port):
    """memory_object_default's memory_object_create: ``port``'s receive right (the new
    pager port, see vm_object_pager_create) goes to the default pager."""
    ipc_port_copy_send(default_pager)
    ipc_port_make_send(obj.pager_name)
    k.kernel_send(kernel_message(
        MO.memory_object_create, default_pager, PORT_SEND,
        [(port, PORT_RECEIVE), obj.size, _control(obj), (obj.pager_name, PORT_SEND),
         PAGE_SIZE]))
    k.vm.stats["memory_object_create"] += 1


def memory_object_lock_completed(k, obj, reply_port, offset, size):
    """memory_object_lock_completed: the reply to memory_object_lock_request."""
    ipc_port_make_send(obj.pager_request)
    k.kernel_send(kernel_message(
        MO.memory_object_lock_completed, reply_port, PORT_SEND_ONCE,
        [(obj.pager_request, PORT_SEND), offset, size]))


def memory_object_supply_completed(k, obj, reply_port, offset, size, result, error_offset):
    """memory_object_supply_completed: the reply to memory_object_data_supply."""
    ipc_port_make_send(obj.pager_request)
    k.kernel_send(kernel_message(
        MO.memory_object_supply_completed, reply_port, PORT_SEND_ONCE,
        [(obj.pager_request, PORT_SEND), offset, size, result, error_offset]))


def memory_object_change_completed(k, reply_port, may_cache, copy_strategy):
    """memory_object_change_completed: the reply to memory_object_change_attributes."""
    k.kernel_send(kernel_message(MO.memory_object_change_completed, reply_port,
                                 PORT_SEND_ONCE, [may_cache, copy_strategy]))
