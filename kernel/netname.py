"""The name server (Mach 3's netname service), run inside the kernel on its own port.

Translators check in their root ports under a name; clients look them up.  The kernel
holds one send right to each checked-in port and to its signature port; an entry whose
port has died is forgotten at the next look-up.

Only whoever presents the entry's signature port may replace (check in again) or check
out a live entry: the signature must be a port only its owner holds (a fresh port, not
the root port every client gets from netname_look_up).  An entry checked in with a null
signature belongs to nobody: it stays until its port dies.
"""

from __future__ import annotations

from kernel.ipc_port import ipc_port_copy_send
from kernel.ipc_right import PORT_SEND, release_right
from protocol.defs import netname as NS
from protocol.kern_return import MachError
from protocol.mig import Demux

NETNAME_SUCCESS = 0
NETNAME_NOT_YOUR_ENTRY = 2801
NETNAME_NOT_CHECKED_IN = 2802
NETNAME_INVALID_PORT = 2803
MAX_NAMES = 4096
VERSION = 1


class NameServer:
    def __init__(self, k):
        self.k = k
        self.names: dict[str, tuple] = {}  # name -> (port, signature port)

    def _drop(self, name):
        port, sig = self.names.pop(name)
        release_right(self.k, port, PORT_SEND)
        release_right(self.k, sig, PORT_SEND)

    def _owns(self, ent, sig) -> bool:
        """Whether ``sig`` is the signature of entry ``ent`` (a null one matches none)."""
        return sig is not None and ent[1] is sig

    def check_in(self, _ns, port_name, signature, port_id):
        """netname_check_in: ``port_id`` under ``port_name``, signed by ``signature``.
        NETNAME_NOT_YOUR_ENTRY if a live entry of that name has another signature."""
        sig, sig_t = signature
        port, port_t = port_id
        if port is None or port_t != PORT_SEND or sig_t not in (0, PORT_SEND):
            raise MachError(NETNAME_INVALID_PORT, "netname_check_in")
        old = self.names.get(port_name)
        if old is not None and old[0].active and not self._owns(old, sig):
            self.k.stats["netname_not_your_entry"] += 1
            raise MachError(NETNAME_NOT_YOUR_ENTRY, "netname_check_in")
        if old is not None:
            self._drop(port_name)
        if len(self.names) >= MAX_NAMES:
            raise MachError(NETNAME_INVALID_PORT, "name server full")
        self.names[port_name] = (port, sig)

    def look_up(self, _ns, host_name, port_name):
        ent = self.names.get(port_name)
        if ent is not None and not ent[0].active:
            self._drop(port_name)
            ent = None
        if ent is None:
            raise MachError(NETNAME_NOT_CHECKED_IN, "netname_look_up")
        ipc_port_copy_send(ent[0])
        return (ent[0], PORT_SEND)

    def check_out(self, _ns, port_name, signature):
        """netname_check_out: remove ``port_name``'s entry; only with its signature
        (NETNAME_NOT_YOUR_ENTRY otherwise)."""
        sig, _ = signature
        ent = self.names.get(port_name)
        if ent is None:
            raise MachError(NETNAME_NOT_CHECKED_IN, "netname_check_out")
        if not self._owns(ent, sig):
            self.k.stats["netname_not_your_entry"] += 1
            raise MachError(NETNAME_NOT_YOUR_ENTRY, "netname_check_out")
        self._drop(port_name)
        release_right(self.k, sig, PORT_SEND)

    def version(self, _ns):
        return VERSION

    def demux(self) -> Demux:
        return Demux({NS.netname_check_in: self.check_in, NS.netname_look_up: self.look_up,
                      NS.netname_check_out: self.check_out, NS.netname_version: self.version})
