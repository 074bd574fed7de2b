"""The ext2fs translator on corrupted images: real ``mke2fs`` images, populated, then one
field of the superblock, a group descriptor, an inode, a directory block or an indirect
block damaged with a seeded generator (tests/integration/ext2_images.py), several
images per kind.  Each image is either refused at mount (exit status 2 and a "cannot
mount the image" line naming the problem) or served in the default (pager) mode with
every operation answering the right bytes or EIO — never another error, wrong bytes, a
hang, or a traceback in the translator's log.  The test prints a table of what each
kind got."""

from __future__ import annotations

import random
import shutil
import signal
import time

import pytest

from lab.cluster import server_argv
from protocol import message as M
from protocol.defs import fs as F
from protocol.kern_return import MachError
from tests.conftest import log_records, wait_for
from tests.integration.ext2_images import CORRUPTIONS, mke2fs, pattern, populate
from tests.integration.test_ext2fs_translator import Client, needs_e2fsprogs

IMAGES_PER_KIND = 4
T = 30


def start_or_refused(procs, run_dir, name, img):
    """Start ext2fs on ``img``: (process, None) once it serves, or (None, the logged
    refusal) if it exits first."""
    p = procs.start(server_argv("translators.ext2fs", run_dir, name,
                                ("--image", str(img), "--sync-interval", "0")), name=name)
    ready = run_dir / f"{name}.ready"
    wait_for(lambda: ready.exists() or p.p.poll() is not None, 60,
             what=f"{name} ready or exited")
    if ready.exists():
        return p, None
    rc = p.p.wait(30)
    recs = log_records(run_dir / f"{name}.log")
    refusals = [r for r in recs if r.get("event") == "cannot mount the image"]
    assert rc == 2 and refusals and refusals[0]["error"], (rc, recs, p.output())
    return None, refusals[0]["error"]


def check_ops(c: Client, tree: dict) -> tuple[int, int]:
    """Every path looked up, every directory listed, every file read and stat'ed, a new
    file written and read back: (operations right, operations EIO).  Any other error
    or wrong bytes fails the test."""
    ok = eio = 0

    def attempt(what, want, fn, *args):
        nonlocal ok, eio
        try:
            got = fn(*args)
        except MachError as e:
            assert e.code == F.EIO, f"{what}: {e} (code {e.code:#x}), not EIO"
            eio += 1
            return
        assert got == want, f"{what}: wrong answer {got!r:.200} != {want!r:.200}"
        ok += 1

    def listing(port):
        data, _n = c.call(F.dir_readdir, port, 0, -1, 0)
        return sorted(n for n, _t, _i in M.unpackb(data) if n not in (".", ".."))

    def size(port):
        return c.call(F.io_stat, port)["st_size"]

    for path, want in sorted(tree.items()):
        try:
            port = c.open(path, F.O_READ)
        except MachError as e:
            assert e.code == F.EIO, f"lookup {path}: {e} (code {e.code:#x}), not EIO"
            eio += 1
            continue
        ok += 1
        if want is None:
            names = sorted(p.rpartition("/")[2] for p in tree
                           if p.rpartition("/")[0] == path)
            attempt(f"readdir {path}", names, listing, port)
        else:
            attempt(f"read {path}", want, c.call, F.io_read, port, 0, len(want) + 100)
            attempt(f"stat {path}", len(want), size, port)
        c.close(port)
    data = pattern(5000, 7)
    try:
        port = c.open("new-file", F.O_READ | F.O_WRITE | F.O_CREAT)
    except MachError as e:
        assert e.code == F.EIO, f"create: {e} (code {e.code:#x}), not EIO"
        return ok, eio + 1
    attempt("write new-file", len(data), c.call, F.io_write, port, data, 0)
    attempt("read new-file", data, c.call, F.io_read, port, 0, 6000)
    c.close(port)
    return ok, eio


@needs_e2fsprogs
@pytest.mark.timeout(300)
def test_corrupted_images_refused_or_eio(kernel, tasks, procs, run_dir, tmp_path):
    base = mke2fs(tmp_path / "base.img")
    tree = populate(base)
    rt = tasks.new("client")
    table = []
    t0 = time.monotonic()
    for k, (kind, corrupt) in enumerate(CORRUPTIONS.items()):
        for i in range(IMAGES_PER_KIND):
            img = tmp_path / f"c{k}{i}.img"
            shutil.copy(base, img)
            what = corrupt(img, random.Random(f"{kind}/{i}"), tree)
            name = f"x{k}{i}"
            p, refusal = start_or_refused(procs, run_dir, name, img)
            if p is None:
                refusal = refusal.replace(f"{img}: ", "")
                table.append((kind, what, f"refused at mount: {refusal}"))
                continue
            ok, eio = check_ops(Client(rt, name), tree)
            assert p.alive(), p.output()
            p.kill(signal.SIGTERM)
            p.p.wait(60)  # no hang: a sync of a broken image may fail, but it ends
            recs = log_records(run_dir / f"{name}.log")
            crashes = [r for r in recs if "exception" in r or
                       r.get("event") in ("handler failed", "ext2fs failed")]
            assert not crashes, crashes
            table.append((kind, what, f"EIO on {eio} of {ok + eio} ops" if eio
                          else f"served correctly ({ok} ops)"))
            img.unlink()
    print(f"\ncorrupted images ({time.monotonic() - t0:.0f} s):")
    for kind, what, outcome in table:
        print(f"  {kind:18} {what:52.52} {outcome}")
    kinds = {kind for kind, _w, _o in table}
    assert kinds == set(CORRUPTIONS) and len(table) == IMAGES_PER_KIND * len(CORRUPTIONS)
