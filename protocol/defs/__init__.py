"""Routine definitions per MIG subsystem, with GNU Mach's and the Hurd's message ids.

Importing this package registers every subsystem, so ``protocol.mig.REGISTRY`` holds
every message id in use; a retired id stays reserved in its subsystem's module.
"""

from protocol.defs import demo, fs, mach, mach_port, machemu, memory_object, netname, notify  # noqa: F401
