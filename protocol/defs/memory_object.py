"""memory_object subsystem 2200 and memory_object_default 2250 (GNU Mach
include/mach/memory_object.defs, memory_object_default.defs): what the kernel sends to a
pager.  All are simpleroutines; the control and name ports travel as port rights, so a
pager deallocates the extra user reference each message gives it, as libpager does.

2205 (the old memory_object_data_write) and 2252 (data_terminate) stay reserved.
"""

from protocol import message as M
from protocol.mig import (
                          OOL,
                          Subsystem,
                          boolean_t,
                          kern_return_t,
                          mach_port_move_receive_t,
                          mach_port_send_t,
                          natural_t,
                          vm_offset_t,
                          vm_size_t,
)

memory_object = Subsystem("memory_object", 2200)
memory_object_default = Subsystem("memory_object_default", 2250)
RESERVED = (2205, 2252)

_so = {"dest_disp": M.MACH_MSG_TYPE_MOVE_SEND_ONCE}
_control = ("memory_control", mach_port_send_t)

memory_object_init = memory_object.simpleroutine(
    "memory_object_init", 0,
    [_control, ("memory_object_name", mach_port_send_t),
     ("memory_object_page_size", vm_size_t)])
memory_object_terminate = memory_object.simpleroutine(
    "memory_object_terminate", 1,
    [("memory_control", mach_port_move_receive_t),
     ("memory_object_name", mach_port_move_receive_t)])
memory_object_copy = memory_object.simpleroutine(
    "memory_object_copy", 2,
    [_control, ("offset", vm_offset_t), ("length", vm_size_t),
     ("new_memory_object", mach_port_send_t)])
memory_object_data_request = memory_object.simpleroutine(
    "memory_object_data_request", 3,
    [_control, ("offset", vm_offset_t), ("length", vm_size_t),
     ("desired_access", natural_t)])
memory_object_data_unlock = memory_object.simpleroutine(
    "memory_object_data_unlock", 4,
    [_control, ("offset", vm_offset_t), ("length", vm_size_t),
     ("desired_access", natural_t)])
memory_object_lock_completed = memory_object.simpleroutine(
    "memory_object_lock_completed", 6,
    [_control, ("offset", vm_offset_t), ("length", vm_size_t)], **_so)
memory_object_supply_completed = memory_object.simpleroutine(
    "memory_object_supply_completed", 7,
    [_control, ("offset", vm_offset_t), ("length", vm_size_t), ("result", kern_return_t),
     ("error_offset", vm_offset_t)], **_so)
memory_object_data_return = memory_object.simpleroutine(
    "memory_object_data_return", 8,
    [_control, ("offset", vm_offset_t), ("data", OOL()), ("dirty", boolean_t),
     ("kernel_copy", boolean_t)])
memory_object_change_completed = memory_object.simpleroutine(
    "memory_object_change_completed", 9,
    [("may_cache", boolean_t), ("copy_strategy", natural_t)], **_so)

memory_object_create = memory_object_default.simpleroutine(
    "memory_object_create", 0,
    [("new_memory_object", mach_port_move_receive_t), ("new_object_size", vm_size_t),
     ("new_control_port", mach_port_send_t), ("new_name", mach_port_send_t),
     ("new_page_size", vm_size_t)])
memory_object_data_initialize = memory_object_default.simpleroutine(
    "memory_object_data_initialize", 1,
    [_control, ("offset", vm_offset_t), ("data", OOL())])
