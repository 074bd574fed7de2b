"""How every measuring process of the bench starts: ``python -m lab.bench.role ROLE
ARGS...``.

  floor-server, floor-client   the bare transport floor (lab.bench.floor)
  server, client, sender       IPC through the kernel (lab.bench.ipc_roles)
  vmclient, maplookup, toucher VM paths (lab.bench.vm_roles)
  ext2writer                   ext2fs write-back (lab.bench.ext2_roles)

A role's module is imported only when that role runs, so the floor processes load
nothing of machemu.  SIGTERM and SIGINT end a role as a normal exit (its ``finally``
blocks close its task); the orchestrator's Child gives it a parent-death signal.
"""

from __future__ import annotations

import importlib
import signal
import sys

# role: (module, function, argument types)
ROLES = {
    "floor-server": ("lab.bench.floor", "floor_server", (str, str)),
    "floor-client": ("lab.bench.floor", "floor_client", (str, int, int, str)),
    "server": ("lab.bench.ipc_roles", "server", (str, str, int, int)),
    "client": ("lab.bench.ipc_roles", "client", (str, str, str, int, str)),
    "sender": ("lab.bench.ipc_roles", "sender", (str, str, str, int, int)),
    "vmclient": ("lab.bench.vm_roles", "vmclient", (str, str, str, int, int, int, str)),
    "maplookup": ("lab.bench.vm_roles", "maplookup", (int, str)),
    "toucher": ("lab.bench.vm_roles", "toucher", (str, str, int)),
    "ext2writer": ("lab.bench.ext2_roles", "ext2writer", (str, str, str, int, str)),
}


def _term_exits():
    def on_term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)


def main(args: list[str]):
    """Run the role ``args[0]`` with the arguments ``args[1:]``."""
    if not args or args[0] not in ROLES:
        raise SystemExit(f"usage: python -m lab.bench.role {{{','.join(ROLES)}}} ARGS...")
    module, func, types = ROLES[args[0]]
    rest = args[1:]
    if len(rest) != len(types):
        raise SystemExit(f"{args[0]}: {len(types)} arguments expected")
    _term_exits()
    fn = getattr(importlib.import_module(module), func)
    try:
        fn(*(t(a) for t, a in zip(types, rest)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
