"""mach subsystem 2000 (GNU Mach include/mach/mach.defs): task VM calls and the
pager-to-kernel memory_object calls on a control port.

Ids are GNU Mach's (skips counted); see docs/mig-ids.md.  vm_statistics returns the
vm_statistics_data_t fields as a map, plus machemu's extra counters.
"""

from protocol.mig import (
                          OOL,
                          Blob,
                          Subsystem,
                          boolean_t,
                          integer_t,
                          kern_return_t,
                          mach_port_make_send_once_t,
                          mach_port_make_send_t,
                          mach_port_name_t,
                          mach_port_send_t,
                          natural_t,
                          vm_address_t,
                          vm_offset_t,
                          vm_size_t,
)

mach = Subsystem("mach", 2000)

# vm_prot_t bits and VM_PROT_NO_CHANGE (include/mach/vm_prot.h).
VM_PROT_NONE = 0
VM_PROT_READ = 1
VM_PROT_WRITE = 2
VM_PROT_EXECUTE = 4
VM_PROT_DEFAULT = VM_PROT_READ | VM_PROT_WRITE
VM_PROT_ALL = VM_PROT_READ | VM_PROT_WRITE | VM_PROT_EXECUTE
VM_PROT_NO_CHANGE = 8
# vm_inherit_t (include/mach/vm_inherit.h).
VM_INHERIT_SHARE = 0
VM_INHERIT_COPY = 1
VM_INHERIT_NONE = 2
VM_INHERIT_DEFAULT = VM_INHERIT_COPY
# memory_object copy strategies and lock_request should_return values.
MEMORY_OBJECT_COPY_NONE = 0
MEMORY_OBJECT_COPY_CALL = 1
MEMORY_OBJECT_COPY_DELAY = 2
MEMORY_OBJECT_COPY_TEMPORARY = 3
MEMORY_OBJECT_RETURN_NONE = 0
MEMORY_OBJECT_RETURN_DIRTY = 1
MEMORY_OBJECT_RETURN_ALL = 2

vm_prot_t = natural_t
vm_inherit_t = natural_t

vm_allocate = mach.routine(
    "vm_allocate", 21, [("address", vm_address_t), ("size", vm_size_t),
                        ("anywhere", boolean_t)], [("address", vm_address_t)])
RESERVED = (2022,)  # vm_allocate_with_pager
vm_deallocate = mach.routine(
    "vm_deallocate", 23, [("address", vm_address_t), ("size", vm_size_t)])
vm_protect = mach.routine(
    "vm_protect", 24, [("address", vm_address_t), ("size", vm_size_t),
                       ("set_maximum", boolean_t), ("new_protection", vm_prot_t)])
vm_inherit = mach.routine(
    "vm_inherit", 25, [("address", vm_address_t), ("size", vm_size_t),
                       ("new_inheritance", vm_inherit_t)])
vm_read = mach.routine(
    "vm_read", 26, [("address", vm_address_t), ("size", vm_size_t)], [("data", OOL())])
vm_write = mach.routine(
    "vm_write", 27, [("address", vm_address_t), ("data", OOL())])
vm_copy = mach.routine(
    "vm_copy", 28, [("source_address", vm_address_t), ("size", vm_size_t),
                    ("dest_address", vm_address_t)])
vm_region = mach.routine(
    "vm_region", 29, [("address", vm_address_t)],
    [("address", vm_address_t), ("size", vm_size_t), ("protection", vm_prot_t),
     ("max_protection", vm_prot_t), ("inheritance", vm_inherit_t), ("is_shared", boolean_t),
     ("object_name", mach_port_name_t), ("offset", vm_offset_t)])
vm_statistics = mach.routine("vm_statistics", 30, [], [("vm_stats", Blob())])
vm_map = mach.routine(
    "vm_map", 89,
    [("address", vm_address_t), ("size", vm_size_t), ("mask", vm_address_t),
     ("anywhere", boolean_t), ("memory_object", mach_port_send_t), ("offset", vm_offset_t),
     ("copy", boolean_t), ("cur_protection", vm_prot_t), ("max_protection", vm_prot_t),
     ("inheritance", vm_inherit_t)],
    [("address", vm_address_t)])

# Pager -> kernel, on a memory object control port.  All but get_attributes are
# simpleroutines; a reply_to port (make-send-once) asks for a *_completed message.
_reply_to = ("reply_to", mach_port_make_send_once_t)
memory_object_data_unavailable = mach.simpleroutine(
    "memory_object_data_unavailable", 39,
    [("offset", vm_offset_t), ("size", vm_size_t)])
memory_object_get_attributes = mach.routine(
    "memory_object_get_attributes", 40, [],
    [("object_ready", boolean_t), ("may_cache", boolean_t), ("copy_strategy", natural_t)])
# Request port: the host port.  The caller becomes the default pager (memory_object_create
# goes to the port it names); the previous default pager's port comes back.  A null port
# only asks who it is.
vm_set_default_memory_manager = mach.routine(
    "vm_set_default_memory_manager", 41, [("default_manager", mach_port_make_send_t)],
    [("default_manager", mach_port_send_t)])
memory_object_lock_request = mach.simpleroutine(
    "memory_object_lock_request", 44,
    [("offset", vm_offset_t), ("size", vm_size_t), ("should_return", integer_t),
     ("should_flush", boolean_t), ("lock_value", vm_prot_t), _reply_to])
memory_object_data_error = mach.simpleroutine(
    "memory_object_data_error", 90,
    [("offset", vm_offset_t), ("size", vm_size_t), ("error_value", kern_return_t)])
memory_object_destroy = mach.simpleroutine(
    "memory_object_destroy", 92, [("reason", kern_return_t)])
memory_object_data_supply = mach.simpleroutine(
    "memory_object_data_supply", 93,
    [("offset", vm_offset_t), ("data", OOL()), ("lock_value", vm_prot_t),
     ("precious", boolean_t), _reply_to])
memory_object_ready = mach.simpleroutine(
    "memory_object_ready", 94, [("may_cache", boolean_t), ("copy_strategy", natural_t)])
memory_object_change_attributes = mach.simpleroutine(
    "memory_object_change_attributes", 95,
    [("may_cache", boolean_t), ("copy_strategy", natural_t), _reply_to])
