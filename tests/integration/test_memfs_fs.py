"""memfs against a real kernel: every fs/io/fsys routine through the real fs protocol from
a client task (memfs in --direct-io mode), the ports' lifecycle (no-senders frees
protids and unlinked files), SIGTERM; and the mapped mode (memfs's own mapping of each
file, libpager) once the kernel serves vm_map."""

from __future__ import annotations

import signal
import stat as S

import pytest

from protocol import message as M
from protocol.defs import fs as F
from protocol.defs import mach as VM
from protocol.defs import mach_port as P
from protocol.defs import netname as NS
from protocol.kern_return import MachError, MigReturn
from tests.conftest import log_records, start_server, wait_for

RW = F.O_READ | F.O_WRITE
T = 30  # seconds: any single RPC


def start_memfs(procs, run_dir, *extra, name="memfs"):
    return start_server(procs, run_dir, "translators.memfs", name, "--stats-interval", "0.2",
                        *extra)


def last_stats(run_dir, name="memfs"):
    recs = [r for r in log_records(run_dir / f"{name}.log") if r.get("event") == "stats"]
    return recs[-1] if recs else None


def errno_of(fn, *args, **kw):
    with pytest.raises(MachError) as e:
        fn(*args, timeout=T, **kw)
    return e.value.code


def pattern(n, seed=0):
    """n bytes that differ at every offset modulo 251 (a prime: no page-size period)."""
    base = bytes((i * 31 + seed) % 251 for i in range(251))
    return (base * (n // 251 + 1))[:n]


class Client:
    def __init__(self, rt, name="memfs"):
        self.rt = rt
        self.root = NS.netname_look_up(rt.name_server, "", name, timeout=T, rt=rt)

    def open(self, path, flags=RW, mode=0o644, at=None):
        retry, retry_name, port = F.dir_lookup(at or self.root, path, flags, mode,
                                               timeout=T, rt=self.rt)
        assert retry == F.FS_RETRY_NORMAL and retry_name == "" and port
        return port

    def call(self, routine, port, *args):
        return routine(port, *args, timeout=T, rt=self.rt)

    def readdir(self, port, entry=0, n=-1, bufsiz=0):
        data, amount = self.call(F.dir_readdir, port, entry, n, bufsiz)
        ents = M.unpackb(data)
        assert amount == len(ents)
        return ents

    def close(self, port):
        P.mach_port_deallocate(self.rt.task_self, port, rt=self.rt)


def stop_memfs(p, run_dir, name="memfs"):
    p.kill(signal.SIGTERM)
    assert p.p.wait(30) == 0, p.output()
    assert not (run_dir / f"{name}.ready").exists()
    recs = [r for r in log_records(run_dir / f"{name}.log")
            if r.get("event") == "memfs stopping"]
    assert recs and recs[-1]["clean"] is True
    assert not [r for r in log_records(run_dir / f"{name}.log")
                if r.get("level") in ("error", "critical")]
    return recs[-1]


# ---------------------------------------------------------------- direct I/O

@pytest.mark.timeout(120)
@pytest.mark.parametrize("model", ["multithread", "workers"])
def test_namespace_routines(kernel, tasks, procs, run_dir, model):
    p = start_memfs(procs, run_dir, "--direct-io", "--threads", model)
    c = Client(tasks.new("client"))
    root = c.root
    assert [e[0] for e in c.readdir(root)] == [".", ".."]

    c.call(F.dir_mkdir, root, "d", 0o750)
    assert errno_of(F.dir_mkdir, root, "d", 0o755, rt=c.rt) == F.EEXIST
    f = c.open("d/f", F.O_CREAT | F.O_EXCL | RW, 0o600)
    assert errno_of(F.dir_lookup, root, "d/f", F.O_CREAT | F.O_EXCL | RW, 0o600,
                    rt=c.rt) == F.EEXIST
    st = c.call(F.io_stat, f)
    assert S.S_ISREG(st["st_mode"]) and S.S_IMODE(st["st_mode"]) == 0o600
    assert st["st_size"] == 0 and st["st_nlink"] == 1 and st["st_blksize"] == 4096
    d = c.open("d", F.O_READ)
    dst = c.call(F.io_stat, d)
    assert S.S_ISDIR(dst["st_mode"]) and S.S_IMODE(dst["st_mode"]) == 0o750
    assert dst["st_nlink"] == 2
    for path in ("", ".", "d/..", "/d/../", "d/./../d/.."):
        assert c.call(F.io_stat, c.open(path, F.O_READ))["st_ino"] == c.call(
            F.io_stat, root)["st_ino"]

    names = [f"n{i:02}" for i in range(30)]
    for n in names:
        c.close(c.open(n, F.O_CREAT | RW, at=d))
    ents = c.readdir(d)
    assert [e[0] for e in ents] == [".", "..", "f"] + names
    assert ents[0][2] == dst["st_ino"] and ents[2] == ["f", 8, st["st_ino"]]
    assert all(e[1] == 8 for e in ents[2:]) and ents[1][1] == 4
    assert [e[0] for e in c.readdir(d, 5, 4)] == names[2:6]
    assert c.readdir(d, 100, 4) == []
    small = c.readdir(d, 0, -1, 40)
    assert 1 <= len(small) < len(ents)

    # Errors, as Hurd errno codes.
    assert errno_of(F.dir_lookup, root, "nope", RW, 0, rt=c.rt) == F.ENOENT
    assert errno_of(F.dir_lookup, root, "nope/x", F.O_CREAT | RW, 0o644, rt=c.rt) == F.ENOENT
    assert errno_of(F.dir_lookup, root, "d/f/x", F.O_READ, 0, rt=c.rt) == F.ENOTDIR
    assert errno_of(F.dir_lookup, root, "d/f/", F.O_READ, 0, rt=c.rt) == F.ENOTDIR
    assert errno_of(F.dir_lookup, root, "d", RW, 0, rt=c.rt) == F.EISDIR
    assert errno_of(F.dir_lookup, root, "x" * 256, F.O_CREAT | RW, 0, rt=c.rt) == \
        F.ENAMETOOLONG
    # Over 255 characters the MIG definition (string[255]) refuses it; over 255 bytes
    # (UTF-8) memfs does.
    assert errno_of(F.dir_mkdir, root, "y" * 256, 0o755, rt=c.rt) == \
        MigReturn.MIG_BAD_ARGUMENTS
    assert errno_of(F.dir_mkdir, root, "\u00e9" * 200, 0o755, rt=c.rt) == F.ENAMETOOLONG
    assert errno_of(F.dir_rmdir, root, "d", rt=c.rt) == F.ENOTEMPTY
    assert errno_of(F.dir_rmdir, d, "f", rt=c.rt) == F.ENOTDIR
    assert errno_of(F.dir_unlink, root, "d", rt=c.rt) == F.EISDIR
    assert errno_of(F.dir_unlink, root, "nope", rt=c.rt) == F.ENOENT
    assert errno_of(F.dir_rmdir, root, "nope", rt=c.rt) == F.ENOENT
    assert errno_of(F.dir_readdir, f, 0, -1, 0, rt=c.rt) == F.ENOTDIR
    assert errno_of(F.dir_mkdir, f, "z", 0o755, rt=c.rt) == F.ENOTDIR
    assert errno_of(F.io_read, d, 0, 10, rt=c.rt) == F.EISDIR
    assert errno_of(F.io_write, d, b"x", 0, rt=c.rt) == F.EISDIR
    assert errno_of(F.dir_rmdir, root, ".", rt=c.rt) == F.EINVAL

    # unlink and rmdir.
    for n in names:
        c.call(F.dir_unlink, d, n)
    c.call(F.dir_unlink, d, "f")
    assert [e[0] for e in c.readdir(d)] == [".", ".."]
    assert errno_of(F.dir_lookup, d, "f", F.O_READ, 0, rt=c.rt) == F.ENOENT
    c.call(F.dir_rmdir, root, "d")
    assert [e[0] for e in c.readdir(root)] == [".", ".."]
    assert errno_of(F.dir_readdir, d, 0, -1, 0, rt=c.rt) == F.ENOENT  # removed, still open
    assert c.call(F.io_stat, root)["st_nlink"] == 2
    # The unlinked file is still open: still readable and writable.
    assert c.call(F.io_write, f, b"orphan", 0) == 6
    assert c.call(F.io_read, f, 0, 100) == b"orphan"
    assert c.call(F.io_stat, f)["st_nlink"] == 0
    c.call(F.fsys_syncfs, root, 1, 0)
    stop_memfs(p, run_dir)


@pytest.mark.timeout(180)
def test_read_write_byte_exact(kernel, tasks, procs, run_dir):
    p = start_memfs(procs, run_dir, "--direct-io", "--threads", "workers")
    c = Client(tasks.new("client"))
    f = c.open("data", F.O_CREAT | RW)
    sizes = [0, 1, 4095, 4096, 4097, 1 << 20]
    offsets = [0, 1, 4095, 4096, 4097, 3 * 4096 + 17]
    model = bytearray()
    for i, size in enumerate(sizes):
        for j, off in enumerate(offsets):
            data = pattern(size, seed=i * 7 + j)
            assert c.call(F.io_write, f, data, off) == size
            if size and off + size > len(model):
                model.extend(bytes(off + size - len(model)))
            model[off:off + size] = data
            assert c.call(F.io_read, f, off, size) == data
    assert c.call(F.io_stat, f)["st_size"] == len(model)
    # Read everything back in odd pieces, and past EOF.
    got = bytearray()
    pos = 0
    for n in (1, 4095, 4096, 4097, 12345, 1 << 20, 1 << 20):
        piece = c.call(F.io_read, f, pos, n)
        got += piece
        pos += len(piece)
    assert bytes(got) == bytes(model)
    assert c.call(F.io_read, f, len(model), 10) == b""
    assert c.call(F.io_read, f, len(model) + 99999, 10) == b""
    assert c.call(F.io_read, f, len(model) - 3, 10) == bytes(model[-3:])
    # A hole reads as zeros.
    hole_at = len(model) + 10000
    assert c.call(F.io_write, f, b"end", hole_at) == 3
    assert c.call(F.io_read, f, len(model), 10003) == bytes(10000) + b"end"

    # A second open of the same file sees the same bytes; file pointer I/O.
    g = c.open("data", F.O_READ)
    assert c.call(F.io_read, g, 4096, 4097) == bytes(model[4096:8193])
    assert c.call(F.io_read, g, -1, 5) == bytes(model[:5])
    assert c.call(F.io_read, g, -1, 5) == bytes(model[5:10])
    assert errno_of(F.io_write, g, b"x", 0, rt=c.rt) == F.EBADF  # opened read-only
    assert errno_of(F.file_set_size, g, 0, rt=c.rt) == F.EBADF

    # file_set_size: truncate (the tail of the last page is zeroed), extend.
    c.call(F.file_set_size, f, 5000)
    st = c.call(F.io_stat, f)
    assert st["st_size"] == 5000 and st["st_blocks"] == 16
    assert c.call(F.io_read, f, 0, 10000) == bytes(model[:5000])
    c.call(F.file_set_size, f, 9000)
    assert c.call(F.io_read, f, 0, 10000) == bytes(model[:5000]) + bytes(4000)
    c.call(F.file_set_size, f, 0)
    assert c.call(F.io_read, f, 0, 10) == b""
    assert c.call(F.io_stat, f)["st_blocks"] == 0
    assert errno_of(F.file_set_size, f, -1, rt=c.rt) == F.EINVAL
    # O_TRUNC empties an existing file.
    c.call(F.io_write, f, b"abc", 0)
    c.open("data", F.O_TRUNC | RW)
    assert c.call(F.io_stat, g)["st_size"] == 0
    c.call(F.file_sync, f, 1, 0)
    st = stop_memfs(p, run_dir)
    assert st["pagers_created"] == 0 and st["bytes_written"] > 6 * (1 << 20)


@pytest.mark.timeout(120)
def test_space_limit_enospc(kernel, tasks, procs, run_dir):
    p = start_memfs(procs, run_dir, "--direct-io", "--max-bytes", str(8 * 4096))
    c = Client(tasks.new("client"))
    f = c.open("a", F.O_CREAT | RW)
    assert c.call(F.io_write, f, bytes(6 * 4096), 0) == 6 * 4096
    g = c.open("b", F.O_CREAT | RW)
    assert errno_of(F.io_write, g, b"x" * (3 * 4096), 0, rt=c.rt) == F.ENOSPC
    assert errno_of(F.file_set_size, g, 2 * 4096 + 1, rt=c.rt) == F.ENOSPC
    assert c.call(F.io_stat, g)["st_size"] == 0
    assert c.call(F.io_write, g, b"y" * (2 * 4096), 0) == 2 * 4096
    c.call(F.dir_unlink, c.root, "a")
    assert errno_of(F.io_write, g, b"z", 2 * 4096, rt=c.rt) == F.ENOSPC  # a is still open
    c.close(f)  # the last right to the unlinked file: memfs frees it on no-senders
    wait_for(lambda: _write_ok(c, g, b"z", 2 * 4096), 30, what="space freed")
    assert c.call(F.io_read, g, 2 * 4096, 10) == b"z"
    stop_memfs(p, run_dir)


def _write_ok(c, port, data, off):
    try:
        return c.call(F.io_write, port, data, off) == len(data)
    except MachError as e:
        assert e.code == F.ENOSPC
        return False


@pytest.mark.timeout(120)
def test_protids_die_with_their_send_rights(kernel, tasks, procs, run_dir):
    """Each dir_lookup makes a protid; deallocating the client's right (or the client task
    dying) gives memfs a no-senders notification that frees it."""
    p = start_memfs(procs, run_dir, "--direct-io")
    rt = tasks.new("client")
    c = Client(rt)
    ports = [c.open(f"f{i}", F.O_CREAT | RW) for i in range(10)]
    assert len(set(ports)) == 10
    wait_for(lambda: (last_stats(run_dir) or {}).get("protids_made") == 11, 30,
             what="stats with 11 protids")
    for port in ports[:6]:
        c.close(port)
    wait_for(lambda: (last_stats(run_dir) or {}).get("protids_freed") == 6, 30,
             what="6 protids freed")
    rt.close()  # the task goes away: its rights die
    wait_for(lambda: (last_stats(run_dir) or {}).get("protids_freed") == 10, 30,
             what="10 protids freed")
    c2 = Client(tasks.new("client2"))
    assert len(c2.readdir(c2.root)) == 12
    stop_memfs(p, run_dir)


# ---------------------------------------------------------------- mapped I/O

def _kernel_serves_vm(rt) -> bool:
    try:
        addr = VM.vm_allocate(rt.task_self, 0, 4096, True, timeout=T, rt=rt)
    except MachError as e:
        if e.code == MigReturn.MIG_BAD_ID:
            return False
        raise
    VM.vm_deallocate(rt.task_self, addr, 4096, timeout=T, rt=rt)
    return True


def _libpager_present() -> bool:
    """libpager with what memfs uses (it is being written alongside)."""
    try:
        from translators import libpager as PG
    except ImportError:
        return False
    need = ("pager_create", "pager_get_port", "pager_sync")
    return all(hasattr(PG, n) for n in need) and (
        hasattr(PG, "PagerDemuxer") or hasattr(PG, "pager_demuxer"))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("model", ["multithread", "workers"])
def test_mapped_io_through_the_kernel(kernel, tasks, procs, run_dir, model):
    """memfs in its default mode: io_read/io_write through its own vm_map of each file's
    pager port.  A client that maps the same file with io_map sees the same bytes, both
    ways; file_set_size flushes the kernel's pages past the end; file_sync brings dirty
    pages back to the store."""
    probe = tasks.new("probe")
    if not _kernel_serves_vm(probe):
        pytest.skip("the kernel does not serve vm_map yet (vm_allocate: MIG_BAD_ID)")
    if not _libpager_present():
        pytest.skip("translators.libpager is not there yet")
    p = start_memfs(procs, run_dir, "--threads", model)
    rt = tasks.new("client")
    c = Client(rt)
    f = c.open("m", F.O_CREAT | RW)
    model = bytearray()
    for size, off in ((0, 0), (1, 0), (4095, 1), (4096, 4096), (4097, 4095),
                      (1 << 20, 12345), (3, (1 << 20) + 70000)):
        data = pattern(size, seed=size % 251)
        assert c.call(F.io_write, f, data, off) == size
        if size and off + size > len(model):
            model.extend(bytes(off + size - len(model)))
        model[off:off + size] = data
        assert c.call(F.io_read, f, off, size) == data
    assert c.call(F.io_stat, f)["st_size"] == len(model)
    got, pos = bytearray(), 0
    while pos < len(model):
        piece = c.call(F.io_read, f, pos, 300000)
        assert piece
        got += piece
        pos += len(piece)
    assert bytes(got) == bytes(model)

    # io_map: the client maps the file's memory object and sees memfs's writes.
    rd, wt = c.call(F.io_map, f)
    assert rd and wt
    size = len(model)
    addr = VM.vm_map(rt.task_self, 0, size, 0, True, wt, 0, False, VM.VM_PROT_DEFAULT,
                     VM.VM_PROT_DEFAULT, VM.VM_INHERIT_NONE, timeout=T, rt=rt)
    assert VM.vm_read(rt.task_self, addr + 4090, 20, timeout=T, rt=rt) == bytes(
        model[4090:4110])
    # ... and memfs sees the client's stores through the mapping (one kernel object).
    VM.vm_write(rt.task_self, addr + 8000, b"CLIENT", timeout=T, rt=rt)
    model[8000:8006] = b"CLIENT"
    assert c.call(F.io_read, f, 7998, 10) == bytes(model[7998:8008])
    # file_sync: dirty pages come back to memfs's store (precious pages stay too).
    c.call(F.file_sync, f, 1, 0)
    c.call(F.fsys_syncfs, c.root, 1, 0)
    assert c.call(F.io_stat, f)["st_blocks"] > 0  # pages in memfs's store now
    st = wait_for(lambda: (r := last_stats(run_dir)) and r["pager_data_returns"] and r,
                  30, what="stats after the sync")
    assert st["pager_data_requests"] > 0 and st["pager_pages_written"] > 0
    assert c.call(F.io_read, f, 0, 10) == bytes(model[:10])
    VM.vm_deallocate(rt.task_self, addr, size, timeout=T, rt=rt)

    # Truncate and extend: the old bytes past the end must not come back.
    c.call(F.file_set_size, f, 5000)
    assert c.call(F.io_read, f, 0, 10000) == bytes(model[:5000])
    c.call(F.file_set_size, f, 3 * 4096)
    assert c.call(F.io_read, f, 0, 3 * 4096) == bytes(model[:5000]) + bytes(3 * 4096 - 5000)
    for port in (rd, wt):
        c.close(port)
    # Unlinked and closed: memfs shuts the file's pager down and frees it.
    c.call(F.dir_unlink, c.root, "m")
    c.close(f)
    wait_for(lambda: (last_stats(run_dir) or {}).get("nodes_freed") == 1, 60,
             what="the unlinked file freed")
    g = c.open("m", F.O_CREAT | RW)  # a new file under the old name starts empty
    assert c.call(F.io_read, g, 0, 10) == b""
    c.call(F.io_write, g, b"new", 5000)
    assert c.call(F.io_read, g, 0, 6000) == bytes(5000) + b"new"
    st = stop_memfs(p, run_dir)
    assert st["writes"] >= 8 and st["pagers_created"] == 2 and st["remaps"] >= 1
    assert st["pager_pagers"] == 1
