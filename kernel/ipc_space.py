"""IPC spaces (GNU Mach ipc/ipc_space.h, ipc/ipc_entry.h): a task's names for its rights.

An entry holds at most one port (or one port set) and the kinds of right the task has to
it: send and receive rights to one port share a name, as in Mach; each send-once right
has a name of its own.  Names come from one kernel-wide counter, so a name seen in one
task never also denotes something in another task by accident: a forged name is simply
not in the forger's space.
"""

from __future__ import annotations

import itertools

from protocol.message import (
    MACH_PORT_DEAD,
    MACH_PORT_TYPE_DEAD_NAME,
    MACH_PORT_TYPE_PORT_SET,
    MACH_PORT_TYPE_RECEIVE,
    MACH_PORT_TYPE_SEND,
    MACH_PORT_TYPE_SEND_ONCE,
)

T_SEND = MACH_PORT_TYPE_SEND
T_RECEIVE = MACH_PORT_TYPE_RECEIVE
T_SEND_ONCE = MACH_PORT_TYPE_SEND_ONCE
T_PORT_SET = MACH_PORT_TYPE_PORT_SET
T_DEAD_NAME = MACH_PORT_TYPE_DEAD_NAME

MACH_PORT_UREFS_MAX = 0xFFFF
MAX_ENTRIES = 1 << 20

_names = itertools.count(0x101)


def new_name() -> int:
    n = next(_names)
    if n >= MACH_PORT_DEAD:
        raise OverflowError("port names exhausted")
    return n


class IPCEntry:
    """ie_object, ie_bits: the object, the right types held, the user references of the
    send right (or of the dead name)."""

    __slots__ = ("object", "type", "urefs")

    def __init__(self, obj, typ: int, urefs: int = 0):
        self.object, self.type, self.urefs = obj, typ, urefs


class IPCSpace:
    __slots__ = ("task", "table", "reverse", "active")

    def __init__(self, task=None):
        self.task = task
        self.table: dict[int, IPCEntry] = {}
        self.reverse: dict[int, int] = {}  # port id -> name, for send/receive entries
        self.active = True

    def __len__(self):
        return len(self.table)

    def lookup(self, name: int) -> IPCEntry | None:
        """ipc_right_lookup + ipc_right_check: the entry for ``name``; a send or send-once
        right whose port has died is turned into a dead name here, as Mach does lazily."""
        e = self.table.get(name)
        if e is None:
            return None
        if e.type & (T_SEND | T_SEND_ONCE) and not e.object.active:
            self.make_dead(name, e)
        return e

    def make_dead(self, name: int, e: IPCEntry):
        port = e.object
        urefs = e.urefs if e.type & T_SEND else 1
        if e.type & T_SEND:
            port.srights -= 1
        if e.type & T_SEND_ONCE:
            port.sorights -= 1
        self.reverse.pop(port.id, None)
        port.dnrequests.pop((self, name), None)
        e.object, e.type, e.urefs = None, T_DEAD_NAME, urefs

    def name_of(self, port) -> int | None:
        return self.reverse.get(port.id)

    def insert(self, obj, typ: int, urefs: int = 0, name: int | None = None) -> int:
        if len(self.table) >= MAX_ENTRIES:
            raise OverflowError("IPC space full")
        name = new_name() if name is None else name
        self.table[name] = IPCEntry(obj, typ, urefs)
        if typ & (T_SEND | T_RECEIVE):
            self.reverse[obj.id] = name
        return name

    def remove(self, name: int):
        e = self.table.pop(name, None)
        # Callers may have cleared the entry's type bits already (the last send right
        # moved or deallocated): the reverse map is checked by name, not by type.
        if e is not None and e.object is not None and self.reverse.get(e.object.id) == name:
            del self.reverse[e.object.id]
        return e
