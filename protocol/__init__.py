"""What crosses a process boundary in machemu, and nothing else.

The wire codec, message ids, return codes, MIG-style routine definitions with their
user-side stubs and server-side dispatch, and the task runtime that owns a process's
one socket to the kernel.  Imports nothing from ``kernel`` or ``translators``.
"""
