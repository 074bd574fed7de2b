"""Task-side file helpers of the workloads that make files on a file server (mmap on
memfs, the ext2fs family)."""

from __future__ import annotations

from lab.loadgen.workload import VerifyError
from protocol.defs import fs as F
from protocol.kern_return import MachError


def create_file(rt, root: int, f, flags: int, timeout: float):
    """dir_lookup ``f.name`` in ``root`` with ``flags`` (O_CREAT ...), mode 0644: sets
    ``f.port``; on a Mach error, a retry or no port ``f.failed`` is set and MachError or
    VerifyError (count 0) raised."""
    try:
        retry, rname, port = F.dir_lookup(root, f.name, flags, 0o644, timeout=timeout, rt=rt)
    except MachError:
        f.failed = True
        raise
    if port:
        f.port = port
    if retry != F.FS_RETRY_NORMAL or rname or not port:
        f.failed = True
        raise VerifyError(f"dir_lookup {f.name}: retry {retry} {rname!r} port {port}",
                          count=0)


def call_all(calls) -> MachError | None:
    """Make every call even after one failed (a close releases all it can); returns the
    first MachError, or None."""
    first_err = None
    for call in calls:
        try:
            call()
        except MachError as e:
            first_err = first_err or e
    return first_err
