"""netname subsystem 1040 (CMU Mach 3 include/servers/netname.defs), served by the kernel.

The Hurd finds servers through the file system; machemu, which has no root file system
at boot, keeps Mach 3's name server so translators can publish their root ports.
"""

from protocol.mig import Str, Subsystem, mach_port_send_t, natural_t

netname = Subsystem("netname", 1040)
NETNAME_NAME_MAX = 80

netname_check_in = netname.routine(
    "netname_check_in", 0,
    [("port_name", Str(NETNAME_NAME_MAX)), ("signature", mach_port_send_t),
     ("port_id", mach_port_send_t)])
netname_look_up = netname.routine(
    "netname_look_up", 1, [("host_name", Str(NETNAME_NAME_MAX)),
                           ("port_name", Str(NETNAME_NAME_MAX))],
    [("port_id", mach_port_send_t)])
netname_check_out = netname.routine(
    "netname_check_out", 2, [("port_name", Str(NETNAME_NAME_MAX)),
                             ("signature", mach_port_send_t)])
netname_version = netname.routine("netname_version", 3, [], [("version", natural_t)])
