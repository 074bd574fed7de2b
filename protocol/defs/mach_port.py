"""mach_port subsystem 3200 (GNU Mach include/mach/mach_port.defs).

Every routine's request port is a task port; names are in that task's IPC space.
3209 (the old get_receive_status) and 3219-3220 (migrating threads) are reserved.
"""

from protocol.mig import (
                          Array,
                          Subsystem,
                          integer_t,
                          mach_port_make_send_once_t,
                          mach_port_name_t,
                          mach_port_poly_t,
                          natural_t,
)

mach_port = Subsystem("mach_port", 3200)
RESERVED = (3209, 3219, 3220)

mach_port_names = mach_port.routine(
    "mach_port_names", 0, [],
    [("names", Array(mach_port_name_t, 1 << 16)), ("types", Array(natural_t, 1 << 16))])
mach_port_type = mach_port.routine(
    "mach_port_type", 1, [("name", mach_port_name_t)], [("ptype", natural_t)])
mach_port_rename = mach_port.routine(
    "mach_port_rename", 2, [("old_name", mach_port_name_t), ("new_name", mach_port_name_t)])
mach_port_allocate_name = mach_port.routine(
    "mach_port_allocate_name", 3, [("right", natural_t), ("name", mach_port_name_t)])
mach_port_allocate = mach_port.routine(
    "mach_port_allocate", 4, [("right", natural_t)], [("name", mach_port_name_t)])
mach_port_destroy = mach_port.routine(
    "mach_port_destroy", 5, [("name", mach_port_name_t)])
mach_port_deallocate = mach_port.routine(
    "mach_port_deallocate", 6, [("name", mach_port_name_t)])
mach_port_get_refs = mach_port.routine(
    "mach_port_get_refs", 7, [("name", mach_port_name_t), ("right", natural_t)],
    [("refs", natural_t)])
mach_port_mod_refs = mach_port.routine(
    "mach_port_mod_refs", 8,
    [("name", mach_port_name_t), ("right", natural_t), ("delta", integer_t)])
mach_port_set_qlimit = mach_port.routine(
    "mach_port_set_qlimit", 10, [("name", mach_port_name_t), ("qlimit", natural_t)])
mach_port_set_mscount = mach_port.routine(
    "mach_port_set_mscount", 11, [("name", mach_port_name_t), ("mscount", natural_t)])
mach_port_get_set_status = mach_port.routine(
    "mach_port_get_set_status", 12, [("name", mach_port_name_t)],
    [("members", Array(mach_port_name_t, 1 << 16))])
mach_port_move_member = mach_port.routine(
    "mach_port_move_member", 13, [("member", mach_port_name_t), ("after", mach_port_name_t)])
mach_port_request_notification = mach_port.routine(
    "mach_port_request_notification", 14,
    [("name", mach_port_name_t), ("variant", integer_t), ("sync", natural_t),
     ("notify", mach_port_make_send_once_t)],
    [("previous", mach_port_poly_t)])
mach_port_insert_right = mach_port.routine(
    "mach_port_insert_right", 15, [("name", mach_port_name_t), ("poly", mach_port_poly_t)])
mach_port_extract_right = mach_port.routine(
    "mach_port_extract_right", 16, [("name", mach_port_name_t), ("msgt_name", natural_t)],
    [("poly", mach_port_poly_t)])
# mach_port_status_t: [pset, seqno, mscount, qlimit, msgcount, sorights, srights,
# pdrequest, nsrequest]
mach_port_get_receive_status = mach_port.routine(
    "mach_port_get_receive_status", 17, [("name", mach_port_name_t)],
    [("status", Array(integer_t, 9))])
mach_port_set_seqno = mach_port.routine(
    "mach_port_set_seqno", 18, [("name", mach_port_name_t), ("seqno", natural_t)])
