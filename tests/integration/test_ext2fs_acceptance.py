"""Acceptance tests of the ext2fs translator against real e2fsprogs, through a real
kernel, a real ext2fs process and a client task:

1. An image made by ``mke2fs -t ext2`` and filled by ``debugfs`` (0 B, 1 B, 4095 B,
   1 MiB, a 70 MiB sparse file, nested directories, 1,000 files in one directory) is
   served by ``ext2fs --image``; every file reads back byte-exact through io_read and
   through the client's vm_map of io_map's object; dir_readdir lists all 1,000 names.
2. A write workload (create, random-offset writes, extend, truncate, unlink, mkdir,
   rmdir, stores through a mapping) against a model; fsys_syncfs; SIGTERM; ``e2fsck
   -fn`` is clean; a second mount and ``debugfs cat`` read the model's bytes.
3. SIGKILL in the middle of a workload: files synced before (fsys_syncfs, wait) read
   back intact after a remount of the "not clean" image; e2fsck's report is printed.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import msgpack
import pytest

from protocol.defs import fs as F
from protocol.defs import mach as VM
from protocol.defs import mach_port as P
from protocol.defs import netname as NS
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE
from tests.conftest import log_records, start_server, wait_for
from translators.ext2fs import ondisk as D

TOOLS = ("mke2fs", "debugfs", "e2fsck")
pytestmark = pytest.mark.skipif(not all(shutil.which(t) for t in TOOLS),
                                reason="e2fsprogs (mke2fs, debugfs, e2fsck) not installed")

RW = F.O_READ | F.O_WRITE
T = 30  # seconds: any single RPC
PAGE = PAGE_SIZE
MiB = 1 << 20
SPARSE_SIZE = 70 * MiB
# The sparse file's written 4 KiB blocks: first, middle (not page aligned), last.
SPARSE_WRITTEN = (0, 35 * MiB + 3 * PAGE, SPARSE_SIZE - PAGE)
# Hole ranges (offset, length) read back as zeros; some touch written blocks' edges.
SPARSE_HOLES = ((PAGE, PAGE), (PAGE, 100_000), (10 * MiB + 17, 70_000),
                (35 * MiB, 3 * PAGE), (35 * MiB + 4 * PAGE, 5 * PAGE),
                (60 * MiB - 3, 2 * PAGE + 6), (SPARSE_SIZE - 2 * PAGE, PAGE))
NMANY = 1000
STEPS = 1500  # workload operations (test 2)


# ------------------------------------------------------------------ helpers


def run(*argv, check=True, timeout=120) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, timeout=timeout)
    if check and r.returncode:
        raise AssertionError(f"{argv} -> {r.returncode}\n{r.stdout[-3000:]!r}\n"
                             f"{r.stderr[-3000:]!r}")
    return r


def mke2fs(img: Path, bs: int, size_mib: int) -> Path:
    run("mke2fs", "-t", "ext2", "-q", "-F", "-b", str(bs), str(img), f"{size_mib}M")
    return img


def debugfs_script(img: Path, cmds: list[str], tmp: Path) -> None:
    """Run debugfs -w with a command file; any complaint on stderr fails."""
    script = tmp / "debugfs.cmds"
    script.write_text("\n".join(cmds) + "\n")
    r = run("debugfs", "-w", "-f", str(script), str(img))
    bad = [ln for ln in r.stderr.decode(errors="replace").splitlines()
           if ln and not ln.startswith("debugfs ")]
    assert not bad, f"debugfs complained: {bad[:5]}"


def debugfs_cat(img: Path, path: str) -> bytes:
    return run("debugfs", "-R", f'cat "{path}"', str(img)).stdout


def e2fsck(img: Path) -> tuple[int, str]:
    r = run("e2fsck", "-fn", str(img), check=False)
    return r.returncode, (r.stdout + r.stderr).decode(errors="replace")


def sb_state(img: Path) -> int:
    with open(img, "rb") as f:
        f.seek(1024)
        return D.Superblock.parse(f.read(1024)).s_state


def start_ext2fs(procs, run_dir, *extra, name="ext2fs"):
    return start_server(procs, run_dir, "translators.ext2fs", name, "--stats-interval",
                        "0.5", *extra)


def stop_ext2fs(p, run_dir: Path, name="ext2fs") -> dict:
    """SIGTERM: ext2fs syncs, closes the image and exits 0; its last stats."""
    p.kill(signal.SIGTERM)
    assert p.p.wait(60) == 0, p.output()
    recs = log_records(run_dir / f"{name}.log")
    stop = [r for r in recs if r.get("event") == "ext2fs stopping"]
    assert stop and stop[-1]["clean"] is True
    errors = [r for r in recs if r.get("level") in ("error", "critical")]
    assert not errors, errors[:5]
    return stop[-1]


class Client:
    """A client task of ext2fs: dir_lookup from the root, io_*, io_map + vm_map."""

    def __init__(self, rt, name="ext2fs"):
        self.rt = rt
        self.root = NS.netname_look_up(rt.name_server, "", name, timeout=T, rt=rt)
        self.memobjs: set[int] = set()  # memory object names held (one uref each)

    def call(self, routine, port, *args):
        return routine(port, *args, timeout=T, rt=self.rt)

    def open(self, path: str, flags=F.O_READ, mode=0o644) -> int:
        retry, retry_name, port = self.call(F.dir_lookup, self.root, path, flags, mode)
        assert retry == F.FS_RETRY_NORMAL and retry_name == "" and port
        return port

    def close(self, port: int) -> None:
        P.mach_port_deallocate(self.rt.task_self, port, timeout=T, rt=self.rt)

    def size(self, port: int) -> int:
        return self.call(F.io_stat, port)["st_size"]

    def read_all(self, port: int, size: int) -> bytes:
        got = bytearray()
        while len(got) < size:
            piece = self.call(F.io_read, port, len(got), size - len(got))
            assert piece, f"short read at {len(got)} of {size}"
            got += piece
        assert self.call(F.io_read, port, size, 10) == b""
        return bytes(got)

    def map(self, port: int, size: int, write=False) -> tuple[int, int]:
        """io_map + vm_map of the whole object (read-only unless ``write``): (address,
        mapped size); the memory object rights are released (the mapping keeps it)."""
        rd, wt = self.call(F.io_map, port)
        obj = wt if write else rd
        assert obj
        prot = VM.VM_PROT_DEFAULT if write else VM.VM_PROT_READ
        msize = max(PAGE, (size + PAGE - 1) // PAGE * PAGE)
        addr = VM.vm_map(self.rt.task_self, 0, msize, 0, True, obj, 0, False, prot, prot,
                         VM.VM_INHERIT_NONE, timeout=T, rt=self.rt)
        for o in (rd, wt):
            if not o:
                continue
            if o in self.memobjs:
                self.close(o)  # the name keeps the uref held in memobjs
            else:
                # Kept: dropping a name's last send right and receiving the same port
                # again wedges the kernel (see test_io_map_again_after_deallocate).
                self.memobjs.add(o)
        return addr, msize

    def vm_read(self, addr: int, n: int) -> bytes:
        return VM.vm_read(self.rt.task_self, addr, n, timeout=T, rt=self.rt)

    def unmap(self, addr: int, size: int) -> None:
        VM.vm_deallocate(self.rt.task_self, addr, size, timeout=T, rt=self.rt)

    def readdir(self, dirport: int, nentries=-1, bufsiz=0) -> list[str]:
        names, entry = [], 0
        while True:
            data, amount = self.call(F.dir_readdir, dirport, entry, nentries, bufsiz)
            if not amount:
                return names
            ents = msgpack.unpackb(data)
            assert len(ents) == amount
            names += [n for n, _t, _i in ents]
            entry += amount


def check_file_both_ways(c: Client, path: str, want: bytes) -> None:
    """``path`` reads ``want`` through io_read and through a vm_map of io_map's object
    (past EOF, the mapped page's tail is zeros)."""
    port = c.open(path)
    try:
        assert c.size(port) == len(want), path
        assert c.read_all(port, len(want)) == want, path
        if not want:
            rd, wt = c.call(F.io_map, port)  # an empty file still has its object
            assert rd and not wt
            c.memobjs.add(rd)
            return
        addr, msize = c.map(port, len(want))
        try:
            got = c.vm_read(addr, msize)
        finally:
            c.unmap(addr, msize)
        assert got[:len(want)] == want, path
        assert got[len(want):] == bytes(msize - len(want)), f"{path}: tail not zero"
    finally:
        c.close(port)


def stopped_name_gone(c: Client, name="ext2fs") -> bool:
    """True once the name server has forgotten the dead translator's entry."""
    try:
        port = NS.netname_look_up(c.rt.name_server, "", name, timeout=T, rt=c.rt)
    except MachError:
        return True
    c.close(port)
    return False


# ------------------------------------------------------------------ 1. a debugfs image


def populate(img: Path, tmp: Path, rng: random.Random) -> dict[str, bytes]:
    """Fill the image with debugfs; the model (path -> bytes), the sparse file left out."""
    src = tmp / "src"
    src.mkdir()
    files = {"/empty": b"", "/one": b"\x5a", "/f4095": rng.randbytes(4095),
             "/big1m": rng.randbytes(MiB), "/a/b/c/file": rng.randbytes(6000),
             "/a/b/mid": rng.randbytes(4096), "/a/top": rng.randbytes(4097)}
    sizes = (0, 1, 100, 4095, 4096, 4097, 8191, 12000)
    for i in range(NMANY):
        n = sizes[i % len(sizes)] if i % 3 else rng.randint(0, 20000)
        files[f"/many/f{i:04d}"] = rng.randbytes(n)
    cmds = ["mkdir a", "mkdir a/b", "mkdir a/b/c", "mkdir many"]
    for i, (p, data) in enumerate(files.items()):
        (src / str(i)).write_bytes(data)
        cmds.append(f"write {src / str(i)} {p.lstrip('/')}")
    sparse = tmp / "sparse"
    with open(sparse, "wb") as f:
        for off in SPARSE_WRITTEN:
            f.seek(off)
            f.write(sparse_block(off))
    assert sparse.stat().st_size == SPARSE_SIZE
    cmds.append(f"write {sparse} sparse70m")
    debugfs_script(img, cmds, tmp)
    return files


def sparse_block(off: int) -> bytes:
    return random.Random(off).randbytes(PAGE)


def sparse_expected(off: int, n: int) -> bytes:
    out = bytearray(n)
    for w in SPARSE_WRITTEN:
        lo, hi = max(off, w), min(off + n, w + PAGE)
        if lo < hi:
            out[lo - off:hi - off] = sparse_block(w)[lo - w:hi - w]
    return bytes(out)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("bs", [4096, 1024])
def test_debugfs_image_reads_back(kernel, tasks, procs, run_dir, tmp_path, bs):
    t0 = time.monotonic()
    rng = random.Random(bs)
    img = mke2fs(run_dir / "img", bs, 128)
    files = populate(img, tmp_path, rng)
    t_fill = time.monotonic() - t0
    p = start_ext2fs(procs, run_dir, "--image", str(img), "--sync-interval", "0")
    c = Client(tasks.new("client"))

    t1 = time.monotonic()
    for path, data in files.items():
        check_file_both_ways(c, path, data)
    t_files = time.monotonic() - t1

    # The sparse file: written blocks and holes, through io_read and the mapping.
    sp = c.open("sparse70m")
    st = c.call(F.io_stat, sp)
    assert st["st_size"] == SPARSE_SIZE
    # debugfs kept the holes: 3 data blocks and a few indirect blocks, not 70 MiB.
    assert st["st_blocks"] * 512 < 16 * bs + 3 * PAGE, st
    ranges = [(w, PAGE) for w in SPARSE_WRITTEN] + list(SPARSE_HOLES) + \
        [(w - 10, 20) for w in SPARSE_WRITTEN if w] + [(SPARSE_SIZE - 100, 100)]
    for off, n in ranges:
        want = sparse_expected(off, n)
        got = c.call(F.io_read, sp, off, n)
        assert got == want, (off, n)
    assert c.call(F.io_read, sp, SPARSE_SIZE, 10) == b""
    addr, msize = c.map(sp, SPARSE_SIZE)
    assert msize == SPARSE_SIZE
    try:
        for off, n in ranges:
            assert c.vm_read(addr + off, n) == sparse_expected(off, n), (off, n)
    finally:
        c.unmap(addr, msize)
    c.close(sp)

    # dir_readdir: all 1,000 names, in one reply and in pages of 97 entries / 2 KiB.
    many = c.open("many")
    want = sorted([".", ".."] + [f"f{i:04d}" for i in range(NMANY)])
    names = c.readdir(many)
    assert sorted(names) == want and len(names) == NMANY + 2
    assert c.readdir(many, nentries=97) == names
    assert c.readdir(many, bufsiz=2048) == names
    c.close(many)
    root_names = sorted(c.readdir(c.root))
    assert root_names == sorted([".", "..", "lost+found", "empty", "one", "f4095",
                                 "big1m", "a", "many", "sparse70m"])

    stats = stop_ext2fs(p, run_dir)
    rc, out = e2fsck(img)
    assert rc == 0, out
    print(f"\n[bs={bs}] debugfs fill {t_fill:.1f}s; {len(files)} files + sparse 70 MiB "
          f"read via io_read and vm_map in {t_files:.1f}s; sparse st_blocks="
          f"{st['st_blocks']}; readdir many: {len(names)} entries; ext2fs: "
          f"pagers={stats['pagers_created']} read_page={stats['read_page']} "
          f"hole_pages={stats['hole_pages']} blocks_allocated="
          f"{stats['blocks_allocated']}; e2fsck rc={rc}")
    # Reading allocates nothing (the holes stay holes).
    assert stats["blocks_allocated"] == 0
    assert stats["pagers_created"] >= NMANY


@pytest.mark.timeout(60)
def test_io_map_again_after_deallocate(kernel, tasks, procs, run_dir):
    """A client maps a file, drops the memory object right and the mapping, then maps
    the same file again (the same pager port comes back to the same task)."""
    img = mke2fs(run_dir / "img", 4096, 16)
    start_ext2fs(procs, run_dir, "--image", str(img), "--sync-interval", "0")
    c = Client(tasks.new("client"))
    f = c.open("f", F.O_CREAT | RW)
    data = random.Random(1).randbytes(3 * PAGE + 5)
    assert c.call(F.io_write, f, data, 0) == len(data)
    for _ in range(2):
        rd, wt = c.call(F.io_map, f)
        assert rd == wt  # one memory object: one name, two urefs
        addr = VM.vm_map(c.rt.task_self, 0, 4 * PAGE, 0, True, rd, 0, False,
                         VM.VM_PROT_READ, VM.VM_PROT_READ, VM.VM_INHERIT_NONE,
                         timeout=T, rt=c.rt)
        assert c.vm_read(addr, len(data)) == data
        c.unmap(addr, 4 * PAGE)
        c.close(rd)
        c.close(wt)


# ------------------------------------------------------------------ 2. write workload


class Workload:
    """A random namespace and data workload through ext2fs, with the model of what
    every file and directory must hold."""

    def __init__(self, c: Client, rng: random.Random, top: str):
        self.c, self.rng, self.top = c, rng, top
        self.files: dict[str, bytearray] = {}
        self.ports: dict[str, int] = {}
        self.dirs: set[str] = {top}
        self.dir_ports: dict[str, int] = {}
        self.ops: dict[str, int] = {}
        self.seq = 0
        c.call(F.dir_mkdir, c.root, top, 0o755)

    def count(self, op):
        self.ops[op] = self.ops.get(op, 0) + 1

    def dir_port(self, d: str) -> int:
        port = self.dir_ports.get(d)
        if port is None:
            port = self.dir_ports[d] = self.c.open(d)
        return port

    def children(self, d: str) -> list[str]:
        pre = d + "/"
        return [p for p in list(self.files) + list(self.dirs)
                if p.startswith(pre) and "/" not in p[len(pre):]]

    def create(self):
        d = self.rng.choice(sorted(self.dirs))
        self.seq += 1
        path = f"{d}/n{self.seq}"
        self.ports[path] = self.c.open(path, F.O_CREAT | F.O_EXCL | RW)
        self.files[path] = bytearray()
        self.count("create")
        return path

    def write(self, path=None):
        path = path or self.rng.choice(sorted(self.files))
        buf, r = self.files[path], self.rng.random()
        if r < 0.6:
            off = self.rng.randint(0, len(buf) + 9000)
        elif r < 0.9:
            off = self.rng.randint(0, 400_000)
        else:
            off = self.rng.randint(0, 3 * MiB)
        data = self.rng.randbytes(self.rng.choice((1, 7, 4096, self.rng.randint(1, 70_000))))
        assert self.c.call(F.io_write, self.ports[path], data, off) == len(data)
        if off > len(buf):
            buf.extend(bytes(off - len(buf)))
        buf[off:off + len(data)] = data
        self.count("write")

    def set_size(self, grow: bool):
        path = self.rng.choice(sorted(self.files))
        buf = self.files[path]
        size = len(buf) + self.rng.randint(1, 300_000) if grow else \
            self.rng.randint(0, len(buf))
        self.c.call(F.file_set_size, self.ports[path], size)
        if size > len(buf):
            buf.extend(bytes(size - len(buf)))
        else:
            del buf[size:]
        self.count("extend" if grow else "truncate")

    def store_through_mapping(self):
        cands = sorted(p for p, b in self.files.items() if len(b) > 10)
        if not cands:
            return
        path = self.rng.choice(cands)
        buf = self.files[path]
        off = self.rng.randint(0, len(buf) - 10)
        data = self.rng.randbytes(self.rng.randint(1, min(len(buf) - off, 9000)))
        addr, msize = self.c.map(self.ports[path], len(buf), write=True)
        try:
            VM.vm_write(self.c.rt.task_self, addr + off, data, timeout=T, rt=self.c.rt)
        finally:
            self.c.unmap(addr, msize)
        buf[off:off + len(data)] = data
        self.count("vm_write")

    def unlink(self):
        path = self.rng.choice(sorted(self.files))
        d, name = path.rsplit("/", 1)
        self.c.call(F.dir_unlink, self.dir_port(d), name)
        self.c.close(self.ports.pop(path))
        del self.files[path]
        self.count("unlink")

    def mkdir(self):
        d = self.rng.choice(sorted(self.dirs))
        self.seq += 1
        path = f"{d}/d{self.seq}"
        self.c.call(F.dir_mkdir, self.dir_port(d), path.rsplit("/", 1)[1], 0o755)
        self.dirs.add(path)
        self.count("mkdir")

    def rmdir(self):
        # Only directories this client never opened: removing one that is still
        # referenced leaves ext2fs a dead node that its reused inode number then maps to
        # (see test_rmdir_open_directory_then_inode_reused).
        empty = sorted(d for d in self.dirs if d != self.top and not self.children(d)
                       and d not in self.dir_ports)
        if not empty:
            return
        path = self.rng.choice(empty)
        parent, name = path.rsplit("/", 1)
        self.c.call(F.dir_rmdir, self.dir_port(parent), name)
        self.dirs.remove(path)
        self.count("rmdir")

    def check_one(self):
        path = self.rng.choice(sorted(self.files))
        buf = self.files[path]
        off = self.rng.randint(0, max(0, len(buf) - 1))
        n = self.rng.randint(1, 50_000)
        assert self.c.call(F.io_read, self.ports[path], off, n) == bytes(buf[off:off + n])
        self.count("check")

    def step(self):
        r = self.rng.random()
        if len(self.files) < 8 or r < 0.12:
            path = self.create()
            if self.rng.random() < 0.8:
                self.write(path)
        elif r < 0.55:
            self.write()
        elif r < 0.62:
            self.set_size(grow=True)
        elif r < 0.72:
            self.set_size(grow=False)
        elif r < 0.78:
            self.store_through_mapping()
        elif r < 0.84:
            self.unlink()
        elif r < 0.89:
            self.mkdir()
        elif r < 0.93:
            self.rmdir()
        else:
            self.check_one()

    def close(self):
        for port in list(self.ports.values()) + list(self.dir_ports.values()):
            self.c.close(port)
        self.ports.clear()
        self.dir_ports.clear()


def check_model(c: Client, files: dict[str, bytes], dirs: set[str]) -> None:
    for path, data in files.items():
        port = c.open(path)
        assert c.size(port) == len(data), path
        assert c.read_all(port, len(data)) == bytes(data), path
        c.close(port)
    pres = {d: d + "/" for d in dirs}
    for d in dirs:
        port = c.open(d)
        want = sorted([".", ".."] + [p[len(pres[d]):] for p in list(files) + list(dirs)
                                     if p.startswith(pres[d]) and "/" not in
                                     p[len(pres[d]):]])
        assert sorted(c.readdir(port)) == want, d
        c.close(port)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("bs", [4096, 1024])
def test_write_workload_fsck_remount_debugfs(kernel, tasks, procs, run_dir, bs):
    rng = random.Random(2000 + bs)
    img = mke2fs(run_dir / "img", bs, 128)
    p = start_ext2fs(procs, run_dir, "--image", str(img), "--sync-interval", "0")
    c = Client(tasks.new("client"))
    t0 = time.monotonic()
    w = Workload(c, rng, "w")
    for _ in range(STEPS):
        w.step()
    files = {k: bytes(v) for k, v in w.files.items()}
    dirs = set(w.dirs)
    check_model(c, files, dirs)
    t_work = time.monotonic() - t0
    w.close()
    c.call(F.fsys_syncfs, c.root, 1, 0)
    stats = stop_ext2fs(p, run_dir)
    rc, fsck_out = e2fsck(img)
    print(f"\n[bs={bs}] workload {sum(w.ops.values())} ops {dict(sorted(w.ops.items()))} in "
          f"{t_work:.1f}s; {len(files)} files ({sum(map(len, files.values()))} bytes), "
          f"{len(dirs)} dirs; ext2fs: disk_writes={stats['disk_writes']} blocks_written="
          f"{stats['blocks_written']} nodes_freed={stats['nodes_freed']}; "
          f"e2fsck -fn rc={rc}")
    assert rc == 0, fsck_out
    assert sb_state(img) & D.EXT2_VALID_FS

    # Second mount: the same bytes and names.
    p = start_ext2fs(procs, run_dir, "--image", str(img), "--sync-interval", "0")
    c2 = Client(tasks.new("client2"))
    check_model(c2, files, dirs)
    stop_ext2fs(p, run_dir)
    rc, fsck_out = e2fsck(img)
    assert rc == 0, fsck_out

    # debugfs reads the same bytes (a sample: the largest, the empty ones, some others).
    by_size = sorted(files, key=lambda k: (len(files[k]), k))
    sample = set(by_size[:3] + by_size[-3:] + rng.sample(by_size, min(8, len(by_size))))
    for path in sorted(sample):
        assert debugfs_cat(img, "/" + path) == files[path], path
    print(f"[bs={bs}] remount read {len(files)} files; debugfs cat matched "
          f"{len(sample)} sampled files; e2fsck after the remount rc={rc}")


@pytest.mark.timeout(60)
def test_rmdir_open_directory_then_inode_reused(kernel, tasks, procs, run_dir):
    img = mke2fs(run_dir / "img", 4096, 16)
    start_ext2fs(procs, run_dir, "--image", str(img), "--sync-interval", "0")
    c = Client(tasks.new("client"))
    c.call(F.dir_mkdir, c.root, "x", 0o755)
    x = c.open("x")
    ino = c.call(F.io_stat, x)["st_ino"]
    c.call(F.dir_rmdir, c.root, "x")  # allowed while open, as in POSIX
    c.close(x)
    c.call(F.dir_mkdir, c.root, "y", 0o755)
    y = c.open("y")
    assert c.call(F.io_stat, y)["st_ino"] == ino  # the inode was reused
    f = c.open("y/f", F.O_CREAT | F.O_EXCL | RW)
    assert c.call(F.io_write, f, b"in y", 0) == 4
    assert sorted(c.readdir(y)) == [".", "..", "f"]


# ------------------------------------------------------------------ 3. SIGKILL


def b_writer(cw: Client, seed: int, bmodel: dict, progress: dict, go_on: threading.Event):
    """Files B: new files in B and in A's directories (so A's directory blocks are dirty
    again), written at random offsets, some cut, a few mkdirs; ``bmodel`` holds what
    every B file should contain after each answered RPC.  Runs until an RPC fails."""
    wrng = random.Random(seed)
    try:
        i = 0
        while go_on.is_set():
            path = f"{('B', 'A', 'A/sub')[i % 3]}/b{i}"
            port = cw.open(path, F.O_CREAT | F.O_EXCL | RW)
            buf = bmodel[path] = bytearray()
            for _ in range(3):
                data, off = wrng.randbytes(wrng.randint(1, 60_000)), wrng.randint(0, 200_000)
                cw.call(F.io_write, port, data, off)
                if off > len(buf):
                    buf.extend(bytes(off - len(buf)))
                buf[off:off + len(data)] = data
                progress["writes"] += 1
            if i % 4 == 3:
                cut = wrng.randint(0, 100_000)
                cw.call(F.file_set_size, port, cut)
                if cut > len(buf):
                    buf.extend(bytes(cut - len(buf)))
                del buf[cut:]
            if i % 5 == 4:
                cw.call(F.dir_mkdir, cw.open("B"), f"dir{i}", 0o755)
            cw.close(port)
            progress["files"] += 1
            i += 1
    except Exception as e:  # noqa: BLE001 - reported by the test
        progress["error"] = f"{type(e).__name__}: {e}"
    finally:
        cw.rt.thread_exit()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("bs,sync_interval", [(4096, "0"), (1024, "0"), (4096, "0.2"),
                                              (1024, "0.2")])
def test_sigkill_keeps_synced_files(kernel, tasks, procs, run_dir, bs, sync_interval):
    """sync_interval 0: nothing of B is written before the kill; 0.2: periodic syncs
    run during B, so the kill finds B partly on disk (maybe in the middle of a sync)."""
    rng = random.Random(3000 + bs)
    img = mke2fs(run_dir / "img", bs, 128)
    p = start_ext2fs(procs, run_dir, "--image", str(img), "--sync-interval", sync_interval)
    c = Client(tasks.new("client"))

    # Files A: written (a few chunks, some truncated or extended), then synced.
    c.call(F.dir_mkdir, c.root, "A", 0o755)
    c.call(F.dir_mkdir, c.root, "B", 0o755)
    c.call(F.dir_mkdir, c.open("A"), "sub", 0o755)
    synced: dict[str, bytes] = {}
    for i in range(40):
        path = f"A/{'sub/' if i % 4 == 0 else ''}a{i}"
        port = c.open(path, F.O_CREAT | F.O_EXCL | RW)
        buf = bytearray()
        for _ in range(rng.randint(1, 4)):
            off = rng.randint(0, len(buf) + 5000)
            data = rng.randbytes(rng.randint(0, 120_000))
            c.call(F.io_write, port, data, off)
            if off > len(buf):
                buf.extend(bytes(off - len(buf)))
            buf[off:off + len(data)] = data
        if i % 5 == 1:
            cut = rng.randint(0, len(buf))
            c.call(F.file_set_size, port, cut)
            del buf[cut:]
        synced[path] = bytes(buf)
        c.close(port)
    c.call(F.fsys_syncfs, c.root, 1, 0)

    # Files B: written by another task until ext2fs is killed under it.
    cw = Client(tasks.new("writer"))
    bmodel: dict[str, bytearray] = {}
    progress = {"files": 0, "writes": 0, "error": None}
    go_on = threading.Event()
    go_on.set()
    th = threading.Thread(target=b_writer, args=(cw, bs, bmodel, progress, go_on),
                          name="writer-B", daemon=True)
    t0 = time.monotonic()
    th.start()
    target = 30 if sync_interval == "0" else 80
    wait_for(lambda: progress["files"] >= target or not th.is_alive(), 120,
             what="files B being written")
    assert th.is_alive(), f"writer stopped early: {progress}"
    p.kill(signal.SIGKILL)
    t_b = time.monotonic() - t0
    assert p.p.wait(30) == -signal.SIGKILL
    th.join(60)
    go_on.clear()
    assert not th.is_alive(), "the writer is stuck after ext2fs died"
    killed_at = dict(progress)
    syncs = [r.get("syncs", 0) for r in log_records(run_dir / "ext2fs.log")
             if r.get("event") == "stats"]

    state = sb_state(img)
    rc_crash, fsck_crash = e2fsck(img)
    # The kernel forgets the dead translator; the same name mounts the image again.
    wait_for(lambda: stopped_name_gone(c), 30, what="the dead ext2fs's name to go")
    (run_dir / "ext2fs.ready").unlink(missing_ok=True)
    p = start_ext2fs(procs, run_dir, "--image", str(img), "--sync-interval", "0")
    c2 = Client(tasks.new("client2"))
    for path, data in synced.items():
        port = c2.open(path)
        assert c2.size(port) == len(data), path
        assert c2.read_all(port, len(data)) == data, path
        c2.close(port)
    for d in ("A", "A/sub"):
        names = sorted(n for n in c2.readdir(c2.open(d)) if n.startswith("a"))
        assert names == sorted(p.rsplit("/", 1)[1] for p in synced
                               if p.rsplit("/", 1)[0] == d), d
    # B after the crash (informational): visible, same bytes as written, different.
    b_seen = b_same = b_diff = b_err = 0
    for path, buf in sorted(bmodel.items()):
        try:
            port = c2.open(path)
        except MachError:
            continue
        b_seen += 1
        try:
            got = c2.read_all(port, c2.size(port))
        except (MachError, AssertionError):
            b_err += 1
        else:
            if got == bytes(buf):
                b_same += 1
            else:
                b_diff += 1
        c2.close(port)
    stop_ext2fs(p, run_dir)
    rc_after, fsck_after = e2fsck(img)

    tag = f"[bs={bs} sync-interval={sync_interval}]"
    print(f"\n{tag} SIGKILL {t_b:.1f}s into B, after {killed_at['files']} B files / "
          f"{killed_at['writes']} B writes, {max(syncs, default=0)} syncs logged (writer "
          f"then saw: {killed_at['error']}); superblock s_state after the kill: {state:#x} "
          f"(valid bit {'set' if state & D.EXT2_VALID_FS else 'clear'}); remount ok; "
          f"{len(synced)} synced A files intact; B files after remount: {b_seen} of "
          f"{len(bmodel)} visible, {b_same} same bytes, {b_diff} different, "
          f"{b_err} read errors")
    print(f"{tag} e2fsck -fn right after SIGKILL: exit {rc_crash}\n{fsck_crash}")
    print(f"{tag} e2fsck -fn after remount + SIGTERM (s_state {sb_state(img):#x}, the "
          f"mount's state kept, as Linux's ext2_put_super does): exit {rc_after}\n"
          f"{fsck_after}")
