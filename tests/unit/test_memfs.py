"""memfs's tree, page store and space accounting, and fsserver's path walk, readdir
packing, io checks and reply rewriting — without a kernel (direct I/O, no pagers)."""

from __future__ import annotations

import itertools
import stat as S

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import message as M
from protocol.defs import fs as F
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE
from translators import libports as LP
from translators.diskfs import DT_DIR, DT_REG
from translators.fsserver import (
    FsDemuxer,
    FsServer,
    Peropen,
    Protid,
    SendRight,
    split_path,
)
from translators.memfs import MemFs, PageStore

RW = F.O_READ | F.O_WRITE


def code_of(fn, *args):
    with pytest.raises(MachError) as e:
        fn(*args)
    return e.value.code


@pytest.fixture
def mfs():
    return MemFs()


@pytest.fixture
def srv(mfs):
    return FsServer(mfs, LP.PortBucket())


_names = itertools.count(101)


def port_on(srv, node, modes):
    """A protid PortInfo in the (kernel-less) bucket, as dir_lookup would make."""
    cred = Protid(Peropen(node, modes))
    pi = LP.PortInfo(srv.protid_class, srv.bucket, next(_names), cred)
    cred.pi = pi
    srv.bucket._enter(pi)
    return pi


def open_(srv, path, flags=RW, mode=0o644, at=None):
    node = srv.walk(at or srv.fs.root_node, path, flags, mode)
    return port_on(srv, node, flags)


# ---------------------------------------------------------------- page store

def test_store_reads_zeros_where_never_written():
    s = PageStore()
    assert s.read(0, 10) == bytes(10)
    assert s.get(8192) == bytes(PAGE_SIZE)
    assert len(s) == 0 and s.nbytes == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5 * PAGE_SIZE), st.binary(max_size=3 * PAGE_SIZE)),
                max_size=8),
       st.integers(0, 7 * PAGE_SIZE))
def test_store_matches_a_flat_model(writes, cut):
    s, model = PageStore(), bytearray()
    for off, data in writes:
        s.write(off, data)
        if off + len(data) > len(model):
            model.extend(bytes(off + len(data) - len(model)))
        model[off:off + len(data)] = data
    assert s.read(0, len(model)) == bytes(model)
    for off in (0, 1, PAGE_SIZE - 1, PAGE_SIZE, PAGE_SIZE + 1):
        assert s.read(off, 5000) == bytes(model[off:off + 5000]).ljust(5000, b"\0")
    assert all(len(p) == PAGE_SIZE and o % PAGE_SIZE == 0 for o, p in s.pages.items())
    s.truncate(cut)
    del model[cut:]
    assert s.read(0, cut) == bytes(model).ljust(cut, b"\0")
    assert s.read(cut, 2 * PAGE_SIZE) == bytes(2 * PAGE_SIZE)  # tail zeroed, pages gone
    assert max(s.pages, default=-1) < cut


def test_store_put_drops_pages_past_limit():
    s = PageStore()
    s.put(0, b"a" * PAGE_SIZE + b"b" * PAGE_SIZE + b"c" * 10, limit=2 * PAGE_SIZE)
    assert sorted(s.pages) == [0, PAGE_SIZE]
    assert s.get(PAGE_SIZE, PAGE_SIZE) == b"b" * PAGE_SIZE


# ---------------------------------------------------------------- the tree

def test_create_lookup_mkdir_readdir(mfs):
    root = mfs.root_node
    f = mfs.create(root, "a", 0o600)
    assert S.S_ISREG(f.mode) and S.S_IMODE(f.mode) == 0o600 and f.nlink == 1
    mfs.mkdir(root, "d", 0o755)
    assert code_of(mfs.create, root, "a", 0o644) == F.EEXIST
    assert code_of(mfs.mkdir, root, "a", 0o755) == F.EEXIST
    assert code_of(mfs.lookup, root, "zz") == F.ENOENT
    d = mfs.lookup(root, "d")
    assert d.is_dir and d.nlink == 2 and root.nlink == 3
    assert mfs.lookup(d, "..") is root and mfs.lookup(d, ".") is d
    assert mfs.lookup(root, "..") is root
    assert code_of(mfs.lookup, f, "x") == F.ENOTDIR
    ents = mfs.readdir(root)
    assert ents == [[".", DT_DIR, root.ino], ["..", DT_DIR, root.ino],
                    ["a", DT_REG, f.ino], ["d", DT_DIR, d.ino]]
    assert len({e[2] for e in ents[1:]}) == 3


def test_rmdir_unlink_errors(mfs):
    root = mfs.root_node
    mfs.mkdir(root, "d", 0o755)
    d = mfs.lookup(root, "d")
    mfs.create(d, "f", 0o644)
    assert code_of(mfs.rmdir, root, "d") == F.ENOTEMPTY
    assert code_of(mfs.rmdir, d, "f") == F.ENOTDIR
    assert code_of(mfs.unlink, root, "d") == F.EISDIR
    assert code_of(mfs.unlink, root, "nope") == F.ENOENT
    assert code_of(mfs.rmdir, root, "nope") == F.ENOENT
    mfs.unlink(d, "f")
    assert code_of(mfs.lookup, d, "f") == F.ENOENT
    mfs.rmdir(root, "d")
    assert root.nlink == 2
    # A removed directory that is still referenced: nothing can be made in it.
    assert code_of(mfs.create, d, "g", 0o644) == F.ENOENT
    assert code_of(mfs.lookup, d, ".") == F.ENOENT


def test_names_checked(mfs):
    root = mfs.root_node
    assert code_of(mfs.create, root, "x" * 256, 0o644) == F.ENAMETOOLONG
    mfs.create(root, "x" * 255, 0o644)
    assert code_of(mfs.mkdir, root, "a/b", 0o755) == F.EINVAL
    assert code_of(mfs.create, root, "", 0o644) == F.EINVAL


def test_unlinked_open_file_lives_until_last_reference(mfs):
    root = mfs.root_node
    f = mfs.create(root, "f", 0o644)  # referenced, like an open protid
    mfs.write(f, 0, b"hello")
    assert mfs.used == PAGE_SIZE and mfs.nodes == 2
    mfs.unlink(root, "f")
    assert f.nlink == 0 and mfs.read(f, 0, 10) == b"hello"
    assert mfs.used == PAGE_SIZE
    mfs.diskfs_nrele(f)
    assert mfs.used == 0 and mfs.nodes == 1 and not f.store.pages
    with pytest.raises(AssertionError):
        mfs.diskfs_nrele(f)


def test_read_write_set_size_and_stat(mfs):
    f = mfs.create(mfs.root_node, "f", 0o644)
    for size in (0, 1, 4095, 4096, 4097, 1 << 20):
        data = bytes((i * 7 + size) & 0xFF for i in range(size))
        assert mfs.write(f, 3, data) == size
        assert mfs.read(f, 3, size) == data
    assert f.size == 3 + (1 << 20)
    assert mfs.read(f, f.size, 10) == b"" and mfs.read(f, f.size + 5, 10) == b""
    mfs.set_size(f, 5000)
    st_ = mfs.stat(f)
    assert st_["st_size"] == 5000 and st_["st_blocks"] == 2 * 8 and st_["st_blksize"] == 4096
    assert st_["st_ino"] == f.ino and st_["st_nlink"] == 1 and S.S_ISREG(st_["st_mode"])
    tail = mfs.read(f, 4990, 100)
    assert len(tail) == 10
    mfs.set_size(f, 9000)  # extend: the old tail reads as zeros
    assert mfs.read(f, 5000, 4000) == bytes(4000)
    mfs.set_size(f, 0)
    assert mfs.read(f, 0, 10) == b"" and mfs.used == 0 and not f.store.pages
    assert code_of(mfs.read, mfs.root_node, 0, 1) == F.EISDIR
    assert S.S_ISDIR(mfs.stat(mfs.root_node)["st_mode"])


def test_space_limit(mfs):
    mfs = MemFs(max_bytes=3 * PAGE_SIZE)
    f = mfs.create(mfs.root_node, "f", 0o644)
    g = mfs.create(mfs.root_node, "g", 0o644)
    mfs.write(f, 0, b"x" * (2 * PAGE_SIZE))
    assert code_of(mfs.write, g, PAGE_SIZE, b"y") == F.ENOSPC
    assert g.size == 0 and mfs.read(g, 0, 10) == b""
    mfs.write(g, 0, b"y" * 100)  # one page left
    assert code_of(mfs.set_size, g, PAGE_SIZE + 1) == F.ENOSPC
    mfs.set_size(f, 1)
    mfs.set_size(g, 2 * PAGE_SIZE)
    assert mfs.used == 3 * PAGE_SIZE


# ---------------------------------------------------------------- fsserver

def test_split_path():
    assert split_path("") == ([], False)
    assert split_path("/a//b/") == (["a", "b"], True)
    assert split_path("/") == ([], False)


def test_walk_paths_and_flags(srv, mfs):
    root = mfs.root_node
    w = srv.walk
    assert w(root, "", 0, 0) is root and w(root, ".", 0, 0) is root
    assert code_of(w, root, "a/b", F.O_CREAT, 0o644) == F.ENOENT
    mfs.mkdir(root, "a", 0o755)
    f = w(root, "a/b", F.O_CREAT | RW, 0o640)
    assert S.S_IMODE(f.mode) == 0o640 and f.references == 1
    assert w(root, "/a//b", RW, 0) is f
    assert w(root, "a/../a/./b", 0, 0) is f
    assert code_of(w, root, "a/b", F.O_CREAT | F.O_EXCL, 0o644) == F.EEXIST
    assert code_of(w, root, "a/b/", 0, 0) == F.ENOTDIR
    assert code_of(w, root, "a/b/c", 0, 0) == F.ENOTDIR
    assert code_of(w, root, "a/b/c", F.O_CREAT, 0o644) == F.ENOTDIR
    assert code_of(w, root, "a", F.O_WRITE, 0) == F.EISDIR
    assert code_of(w, root, "a", F.O_TRUNC, 0) == F.EISDIR
    assert code_of(w, root, "", F.O_CREAT | F.O_EXCL, 0) == F.EEXIST
    assert code_of(w, root, "a/" + "n" * 256, F.O_CREAT, 0) == F.ENAMETOOLONG
    assert w(root, "a/", 0, 0).is_dir
    mfs.write(f, 0, b"data")
    assert w(root, "a/b", F.O_CREAT | F.O_TRUNC | RW, 0) is f and f.size == 0
    # Each successful walk holds one reference; failed ones left none behind.
    assert f.references == 4  # the create, "/a//b", "a/../a/./b", the O_TRUNC walk
    assert root.references == 3  # its own, "" and "."
    assert mfs.lookup(root, "a").references == 2  # "a/" and this lookup


def test_readdir_entry_nentries_bufsiz(srv, mfs):
    root = mfs.root_node
    names = [f"f{i:03}" for i in range(50)]
    for n in names:
        mfs.create(root, n, 0o644)
    pi = port_on(srv, root, F.O_READ)
    data, amount = srv.dir_readdir(pi, 0, -1, 0)
    ents = M.unpackb(data)
    assert amount == 52 and [e[0] for e in ents] == [".", ".."] + names
    data, amount = srv.dir_readdir(pi, 10, 5, 0)
    assert amount == 5 and [e[0] for e in M.unpackb(data)] == names[8:13]
    data, amount = srv.dir_readdir(pi, 60, 5, 0)
    assert amount == 0 and M.unpackb(data) == []
    data, amount = srv.dir_readdir(pi, 2, -1, 64)
    assert 1 <= amount < 50 and len(data) <= 64
    data, amount = srv.dir_readdir(pi, 2, -1, 1)  # always at least one
    assert amount == 1
    assert code_of(srv.dir_readdir, pi, -1, 1, 0) == F.EINVAL
    fpi = port_on(srv, mfs.lookup(root, "f000"), F.O_READ)
    assert code_of(srv.dir_readdir, fpi, 0, 1, 0) == F.ENOTDIR


def test_io_checks_and_file_pointer(srv, mfs):
    wr = open_(srv, "f", F.O_CREAT | F.O_WRITE)
    rd = open_(srv, "f", F.O_READ)
    assert code_of(srv.io_read, wr, 0, 10) == F.EBADF
    assert code_of(srv.io_write, rd, b"x", 0) == F.EBADF
    assert code_of(srv.file_set_size, rd, 0) == F.EBADF
    assert srv.io_write(wr, b"abc", -1) == 3 and srv.io_write(wr, b"def", -1) == 3
    assert srv.io_read(rd, -1, 4) == b"abcd" and srv.io_read(rd, -1, 4) == b"ef"
    assert srv.io_read(rd, -1, 4) == b""
    assert srv.io_read(rd, 1, 100) == b"bcdef"
    assert code_of(srv.io_read, rd, -2, 1) == F.EINVAL
    assert code_of(srv.io_write, wr, b"x", -5) == F.EINVAL
    assert code_of(srv.file_set_size, wr, -1) == F.EINVAL
    d = port_on(srv, mfs.root_node, F.O_READ)
    assert code_of(srv.io_read, d, 0, 1) == F.EISDIR
    assert code_of(srv.io_write, d, b"x", 0) == F.EISDIR
    assert srv.io_stat(rd)["st_size"] == 6
    srv.file_sync(rd, 1, 0)  # no pager yet: nothing to do
    srv.fsys_syncfs(d, 1, 0)
    assert code_of(srv.dir_mkdir, d, "..", 0o755) == F.EEXIST
    assert code_of(srv.dir_rmdir, d, ".") == F.EINVAL
    assert code_of(srv.dir_rmdir, d, "..") == F.ENOTEMPTY
    assert code_of(srv.dir_unlink, d, "a/b") == F.EINVAL


def test_protid_clean_drops_the_node_reference(srv, mfs):
    pi = open_(srv, "f", F.O_CREAT | RW)
    node = pi.data.node
    srv.dir_unlink(port_on(srv, mfs.root_node, 0), "f")
    assert node.nlink == 0 and node.references == 1
    srv.io_write(pi, b"still open", 0)
    LP.ports_port_deref(pi)  # the last reference: the clean routine runs
    assert node.references == 0 and mfs.nodes == 1 and mfs.used == 0
    assert srv.stats["protids_freed"] == 1


def test_demuxer_sends_rights_with_their_disposition(srv, mfs):
    pi = port_on(srv, mfs.root_node, F.O_READ)
    demux = FsDemuxer(srv.bucket, {F.io_map: lambda p: (SendRight.move(77),
                                                       SendRight.null())})
    req = F.io_map.message(pi.port_right, [], reply_port=9)
    req.remote_port, req.remote_disp, req.local_port = 9, M.MACH_MSG_TYPE_PORT_SEND_ONCE, \
        pi.port_right
    reply = demux.serve(req)
    assert reply.msgh_id == F.io_map.reply_id
    assert reply.descs == [(77, M.MACH_MSG_TYPE_MOVE_SEND), (0, M.MACH_MSG_TYPE_COPY_SEND)]
    assert M.unpackb(reply.body) == [0]
    # Errors from the real handlers travel as Hurd errno codes.
    demux = srv.demuxer()
    req = F.dir_rmdir.message(pi.port_right, ["nope"], reply_port=9)
    req.remote_port, req.remote_disp, req.local_port = 9, M.MACH_MSG_TYPE_PORT_SEND_ONCE, \
        pi.port_right
    assert M.unpackb(demux.serve(req).body) == [F.ENOENT]


def test_file_pager_ops_use_the_store(mfs):
    from translators.memfs import MemPagerOps

    f = mfs.create(mfs.root_node, "f", 0o644)
    ops = MemPagerOps(f)
    assert ops.read_page(None, 0, PAGE_SIZE) is None  # never written: data_unavailable
    mfs.write(f, PAGE_SIZE + 5, b"abc")
    data, lock = ops.read_page(None, PAGE_SIZE, PAGE_SIZE)
    assert not lock and data == bytes(5) + b"abc" + bytes(PAGE_SIZE - 8)
    assert ops.report_extent(None) == 2 * PAGE_SIZE
    # A data_return past EOF (a truncated file) is not kept.
    ops.write_pages(None, 0, b"r" * (3 * PAGE_SIZE))
    assert sorted(f.store.pages) == [0, PAGE_SIZE]
    assert mfs.read(f, 0, 3) == b"rrr" and ops.stats["pages_written"] == 3


# ---------------------------------------------------------------- syncfs

def test_syncfs_reports_a_pager_the_kernel_never_answered(srv, monkeypatch):
    """diskfs_sync_everything: a pager_sync that timed out (False: no lock_completed
    came) fails fsys_syncfs and file_sync with EIO; the other files are still synced."""
    from translators import diskfs

    a, b = (srv.walk(srv.fs.root_node, n, RW | F.O_CREAT, 0o644) for n in ("a", "b"))
    a.pager, b.pager = "pager-a", "pager-b"
    synced = []

    def pager_sync(pager, wait, timeout=None):
        synced.append((pager, timeout))
        return pager != "pager-a"

    monkeypatch.setattr(diskfs.PG, "pager_sync", pager_sync)
    assert srv.fs.syncfs(True, timeout=5.0) is False
    assert sorted(p for p, _ in synced) == ["pager-a", "pager-b"]
    assert all(t is not None and 0 <= t <= 5.0 for _, t in synced)  # one budget in all
    pi = port_on(srv, srv.fs.root_node, F.O_READ)
    assert code_of(srv.fsys_syncfs, pi, 1, 0) == F.EIO
    assert code_of(srv.file_sync, port_on(srv, a, RW), 1, 0) == F.EIO
    srv.file_sync(port_on(srv, b, RW), 1, 0)
    a.pager = b.pager = None
