"""The ext2fs translator against a real kernel: files and directories made and written
through the fs protocol by a client task, read back with io_read and through the
client's own vm_map of io_map's object; fsys_syncfs; SIGTERM syncs and closes the
image, which then passes e2fsck -fn and debugfs reads the same bytes; a remount reads
them too; holes (write-locked pages, unlock_page); multi-page writes (far fewer disk
writes than pages)."""

from __future__ import annotations

import shutil
import signal
import subprocess

import pytest

from protocol.defs import fs as F
from protocol.defs import mach as VM
from protocol.defs import mach_port as P
from protocol.defs import netname as NS
from protocol.kern_return import MachError
from tests.conftest import log_records, start_server, wait_for

RW = F.O_READ | F.O_WRITE
T = 30  # seconds: any single RPC
MiB = 1 << 20
HAVE_E2FSPROGS = bool(shutil.which("e2fsck") and shutil.which("debugfs"))
needs_e2fsprogs = pytest.mark.skipif(not HAVE_E2FSPROGS, reason="e2fsprogs not installed")


def pattern(n, seed=0):
    """n bytes that differ at every offset modulo 251 (no page-size period)."""
    base = bytes((i * 31 + seed) % 251 for i in range(251))
    return (base * (n // 251 + 1))[:n]




def start_ext2fs(procs, run_dir, *extra, name="ext2fs"):
    return start_server(procs, run_dir, "translators.ext2fs", name, "--stats-interval",
                        "0.2", *extra)


def stop_ext2fs(p, run_dir, name="ext2fs"):
    """SIGTERM: ext2fs syncs, closes the image and exits 0; returns its last stats."""
    p.kill(signal.SIGTERM)
    assert p.p.wait(60) == 0, p.output()
    recs = log_records(run_dir / f"{name}.log")
    stop = [r for r in recs if r.get("event") == "ext2fs stopping"]
    assert stop and stop[-1]["clean"] is True
    assert [r for r in recs if r.get("event") == "ext2fs synced"]
    errors = [r for r in recs if r.get("level") in ("error", "critical")]
    assert not errors, errors
    return stop[-1]


def last_stats(run_dir, name="ext2fs"):
    recs = [r for r in log_records(run_dir / f"{name}.log") if r.get("event") == "stats"]
    return recs[-1] if recs else {}


class Client:
    def __init__(self, rt, name="ext2fs"):
        self.rt = rt
        self.root = NS.netname_look_up(rt.name_server, "", name, timeout=T, rt=rt)

    def open(self, path, flags=RW, mode=0o644):
        retry, retry_name, port = F.dir_lookup(self.root, path, flags, mode, timeout=T,
                                               rt=self.rt)
        assert retry == F.FS_RETRY_NORMAL and retry_name == "" and port
        return port

    def call(self, routine, port, *args):
        return routine(port, *args, timeout=T, rt=self.rt)

    def read_all(self, port, size):
        got = bytearray()
        while len(got) < size:
            piece = self.call(F.io_read, port, len(got), size - len(got))
            assert piece
            got += piece
        assert self.call(F.io_read, port, size, 10) == b""
        return bytes(got)

    def close(self, port):
        P.mach_port_deallocate(self.rt.task_self, port, rt=self.rt)


def debugfs_cat(img, path):
    r = subprocess.run(["debugfs", "-R", f"cat {path}", str(img)], capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def e2fsck(img):
    r = subprocess.run(["e2fsck", "-fn", str(img)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


WRITES = ((0, 0), (1, 0), (4095, 1), (4096, 4096), (4097, 4095), (MiB, 12345),
          (3, MiB + 70000))


def write_model(c, f, seed=0):
    model = bytearray()
    for size, off in WRITES:
        data = pattern(size, seed=(size + seed) % 251)
        assert c.call(F.io_write, f, data, off) == size
        if size and off + size > len(model):
            model.extend(bytes(off + size - len(model)))
        model[off:off + size] = data
        assert c.call(F.io_read, f, off, size) == data
    return bytes(model)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("block_size", [1024, 4096])
def test_write_read_sync_fsck_remount(kernel, tasks, procs, run_dir, block_size):
    img = run_dir / "ext2fs.img"
    p = start_ext2fs(procs, run_dir, "--block-size", str(block_size), "--size-mib", "32")
    rt = tasks.new("client")
    c = Client(rt)
    c.call(F.dir_mkdir, c.root, "d", 0o755)
    f = c.open("d/f", F.O_CREAT | F.O_EXCL | RW)
    model = write_model(c, f)
    assert c.call(F.io_stat, f)["st_size"] == len(model)
    assert c.read_all(f, len(model)) == model
    g = c.open("small", F.O_CREAT | RW)
    assert c.call(F.io_write, g, b"hello ext2", 0) == 10

    # io_map: the client's own mapping of the file sees the same bytes, and ext2fs
    # sees the client's stores (one kernel object).
    rd, wt = c.call(F.io_map, f)
    assert rd and wt
    size = len(model)
    addr = VM.vm_map(rt.task_self, 0, size, 0, True, wt, 0, False, VM.VM_PROT_DEFAULT,
                     VM.VM_PROT_DEFAULT, VM.VM_INHERIT_NONE, timeout=T, rt=rt)
    assert VM.vm_read(rt.task_self, addr, size, timeout=T, rt=rt) == model
    VM.vm_write(rt.task_self, addr + 8000, b"CLIENT", timeout=T, rt=rt)
    model = model[:8000] + b"CLIENT" + model[8006:]
    assert c.call(F.io_read, f, 7998, 10) == model[7998:8008]
    VM.vm_deallocate(rt.task_self, addr, size, timeout=T, rt=rt)
    for port in (rd, wt):
        c.close(port)

    c.call(F.fsys_syncfs, c.root, 1, 0)
    st = stop_ext2fs(p, run_dir)
    assert st["disk_writes"] > 0 and st["pagers_created"] >= 2
    if HAVE_E2FSPROGS:
        e2fsck(img)
        assert debugfs_cat(img, "/d/f") == model
        assert debugfs_cat(img, "/small") == b"hello ext2"

    # Remount: the same bytes come back from the image.
    p = start_ext2fs(procs, run_dir, "--image", str(img))
    c2 = Client(tasks.new("client2"))
    f2 = c2.open("d/f", F.O_READ)
    assert c2.call(F.io_stat, f2)["st_size"] == len(model)
    assert c2.read_all(f2, len(model)) == model
    assert c2.read_all(c2.open("small", F.O_READ), 10) == b"hello ext2"
    stop_ext2fs(p, run_dir)
    if HAVE_E2FSPROGS:
        e2fsck(img)


@pytest.mark.timeout(60)
def test_hole_unlock_page(kernel, tasks, procs, run_dir):
    img = run_dir / "ext2fs.img"
    p = start_ext2fs(procs, run_dir, "--size-mib", "16")
    c = Client(tasks.new("client"))
    f = c.open("holey", F.O_CREAT | RW)
    tail = pattern(5000, seed=7)
    assert c.call(F.io_write, f, tail, MiB) == len(tail)
    assert c.call(F.io_stat, f)["st_size"] == MiB + len(tail)
    assert c.read_all(f, MiB + len(tail)) == bytes(MiB) + tail
    c.call(F.fsys_syncfs, c.root, 1, 0)
    st = wait_for(lambda: (s := last_stats(run_dir)) and s.get("syncs") and s, 30,
                  what="stats after the sync")
    # The written pages were holes: supplied write-locked, unlocked by unlock_page.
    assert st["unlock_page"] >= 2 and st["hole_pages"] >= 2
    assert st["pager_unlocks"] >= 2
    stop_ext2fs(p, run_dir)
    if HAVE_E2FSPROGS:
        e2fsck(img)
        assert debugfs_cat(img, "/holey") == bytes(MiB) + tail
        # Only the written blocks are allocated (the hole stays a hole).
        r = subprocess.run(["debugfs", "-R", "stat /holey", str(img)], capture_output=True,
                           text=True, timeout=60)
        # File blocks 256-257 (the 5000 bytes at 1 MiB) and their indirect block.
        assert "(256-257):" in r.stdout and "TOTAL: 3" in r.stdout, r.stdout


@pytest.mark.timeout(60)
@pytest.mark.parametrize("model,latency", [("multithread", "0"), ("workers", "2")])
def test_multi_page_writes(kernel, tasks, procs, run_dir, model, latency):
    img = run_dir / "ext2fs.img"
    # No periodic sync: the one fsys_syncfs writes everything.
    p = start_ext2fs(procs, run_dir, "--size-mib", "32", "--sync-interval", "0",
                     "--threads", model, "--disk-latency-ms", latency)
    c = Client(tasks.new("client"))
    f = c.open("big", F.O_CREAT | RW)
    data = pattern(2 * MiB, seed=3)
    for off in range(0, len(data), 256 * 1024):
        assert c.call(F.io_write, f, data[off:off + 256 * 1024], off) == 256 * 1024
    c.call(F.fsys_syncfs, c.root, 1, 0)
    st = wait_for(lambda: (s := last_stats(run_dir)) and s.get("syncs") and s, 30,
                  what="stats after the sync")
    pages = len(data) // 4096
    print(f"multi-page: {pages} pages, {st['data_returns']} data_returns, "
          f"{st['disk_writes']} disk writes, {st['blocks_written']} blocks written")
    assert st["blocks_written"] >= pages
    assert st["disk_writes"] * 4 <= pages  # far fewer disk writes than pages
    stop_ext2fs(p, run_dir)
    if HAVE_E2FSPROGS:
        e2fsck(img)
        assert debugfs_cat(img, "/big") == data


@pytest.mark.timeout(60)
def test_namespace_and_truncate(kernel, tasks, procs, run_dir):
    img = run_dir / "ext2fs.img"
    p = start_ext2fs(procs, run_dir, "--size-mib", "16", "--block-size", "2048")
    c = Client(tasks.new("client"))
    root = c.root
    c.call(F.dir_mkdir, root, "a", 0o755)
    with pytest.raises(MachError) as e:
        c.call(F.dir_mkdir, root, "a", 0o755)
    assert e.value.code == F.EEXIST
    f = c.open("a/t", F.O_CREAT | RW)
    data = pattern(20000, seed=9)
    c.call(F.io_write, f, data, 0)
    c.call(F.file_set_size, f, 5000)
    assert c.read_all(f, 5000) == data[:5000]
    c.call(F.file_set_size, f, 3 * 4096)
    assert c.read_all(f, 3 * 4096) == data[:5000] + bytes(3 * 4096 - 5000)
    c.call(F.file_sync, f, 1, 0)
    g = c.open("a/gone", F.O_CREAT | RW)
    c.call(F.io_write, g, pattern(10000), 0)
    c.call(F.dir_unlink, c.open("a", F.O_READ), "gone")
    c.close(g)
    wait_for(lambda: last_stats(run_dir).get("nodes_freed") == 1, 30,
             what="the unlinked file freed")
    names = sorted(n for n, _t, _i in __import__("msgpack").unpackb(
        c.call(F.dir_readdir, c.open("a", F.O_READ), 0, -1, 0)[0]))
    assert names == [".", "..", "t"]
    with pytest.raises(MachError) as e:
        c.call(F.dir_rmdir, root, "a")
    assert e.value.code == F.ENOTEMPTY
    stop_ext2fs(p, run_dir)
    if HAVE_E2FSPROGS:
        e2fsck(img)
        assert debugfs_cat(img, "/a/t") == data[:5000] + bytes(3 * 4096 - 5000)


@pytest.mark.timeout(60)
def test_direct_io_and_periodic_sync(kernel, tasks, procs, run_dir):
    """--direct-io: io_read/io_write on the image (io_map refused); a short
    --sync-interval writes the metadata without any fsys_syncfs."""
    img = run_dir / "ext2fs.img"
    p = start_ext2fs(procs, run_dir, "--size-mib", "16", "--direct-io",
                     "--sync-interval", "0.2")
    c = Client(tasks.new("client"))
    f = c.open("f", F.O_CREAT | RW)
    model = write_model(c, f, seed=5)
    assert c.read_all(f, len(model)) == model
    with pytest.raises(MachError) as e:
        c.call(F.io_map, f)
    assert e.value.code == F.EOPNOTSUPP
    wait_for(lambda: last_stats(run_dir).get("syncs", 0) >= 2, 30, what="periodic syncs")
    stop_ext2fs(p, run_dir)
    if HAVE_E2FSPROGS:
        e2fsck(img)
        assert debugfs_cat(img, "/f") == model
