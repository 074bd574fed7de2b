"""Hostile requests at the file servers (ext2fs on a real image, memfs) from an ordinary
task (tests/hostile.py): every routine of every subsystem, near-valid, at the memory
object port io_map gives for a file, at that file's port and at the root directory
port; then random bodies (hypothesis) at the file port.  The server must answer every
case within the bound (an errno, a MIG code, or success), stay alive with bounded RSS,
log no handler exception, and then serve another client's write, sync and read with the
same bytes."""

from __future__ import annotations

import collections

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import message as M
from protocol import mig
from protocol.defs import fs as F
from protocol.defs import netname as NS
from protocol.runtime import TaskRuntime
from tests.conftest import log_records, start_server
from tests.hostile import RSS_BOUND, Hostile, alive, legit_result, pattern, rss

pytestmark = pytest.mark.timeout(240)
T = 30
RW = F.O_READ | F.O_WRITE
RANDOM_CASES = 120


def open_file(rt, root, path, flags=RW | F.O_CREAT):
    retry, name, port = F.dir_lookup(root, path, flags, 0o644, timeout=T, rt=rt)
    assert retry == F.FS_RETRY_NORMAL and name == "" and port
    return port


def legit_client(endpoint, server) -> str:
    """Another task writes a file, syncs it, reads it back (and with a new lookup)."""
    with TaskRuntime(endpoint, "legit") as rt:
        root = NS.netname_look_up(rt.name_server, "", server, timeout=T, rt=rt)
        f = open_file(rt, root, "legit")
        data = pattern(3 * 4096 + 17, seed=3)
        assert F.io_write(f, data, 0, timeout=T, rt=rt) == len(data)
        F.file_sync(f, 1, 0, timeout=T, rt=rt)
        F.fsys_syncfs(root, 1, 0, timeout=T, rt=rt)
        g = open_file(rt, root, "legit", F.O_READ)
        got = b""
        while len(got) < len(data):
            piece = F.io_read(g, len(got), len(data), timeout=T, rt=rt)
            assert piece, "short read"
            got += piece
        assert got == data, "bytes differ"
        assert F.io_stat(g, timeout=T, rt=rt)["st_size"] == len(data)
    return f"wrote, synced, read back {len(data)} bytes equal"


junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
              st.text(max_size=16), st.binary(max_size=64), st.floats(allow_nan=False)),
    lambda s: st.lists(s, max_size=4), max_leaves=8)


@pytest.mark.parametrize("server", ["ext2fs", "memfs"])
def test_hostile_requests_at_file_server(kernel, tasks, procs, run_dir, server):
    module = {"ext2fs": "translators.ext2fs", "memfs": "translators.memfs"}[server]
    extra = ("--size-mib", "16") if server == "ext2fs" else ()
    p = start_server(procs, run_dir, module, server, *extra)
    rt = tasks.new("hostile")
    h = Hostile(rt)
    root = NS.netname_look_up(rt.name_server, "", server, timeout=T, rt=rt)
    f = open_file(rt, root, "hostile")
    assert F.io_write(f, pattern(8192), 0, timeout=T, rt=rt) == 8192
    memobj, _ = F.io_map(f, timeout=T, rt=rt)
    f2 = open_file(rt, root, "hostile2")
    rss0 = rss(p.pid)
    randoms = 0
    try:
        h.per_port.setdefault("file port (random)", collections.Counter())
        served = [r for r in h.discover("file port (random)", f2)
                  if r.subsystem.name != "notify"]

        @settings(max_examples=RANDOM_CASES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(st.sampled_from(served), st.lists(junk, max_size=5),
               st.lists(st.binary(max_size=4096), max_size=2),
               st.lists(st.sampled_from(["send_once", "dead_name", "server_own", "null",
                                         "make_send"]), max_size=2))
        def random_bodies(r, body, ool, kinds):
            nonlocal randoms
            randoms += 1
            descs = [h.port_value(mig.mach_port_send_t, k, f2) for k in kinds]
            h.current = f"random {r.name} {body!r:.80}"
            h.send_case("file port (random)", f2, r.msgh_id, M.packb(body), descs, ool,
                        expect_reply=not r.simple)

        random_bodies()
        h.current = ""
        for label, port in (("memory object", memobj), ("file port", f),
                            ("root port", root)):
            h.walk(label, port)
    finally:
        up = alive(p.pid)
        rss1 = rss(p.pid) if up else 0
        ok, legit = legit_result(legit_client, kernel, server) if up else (False, "dead")
        print("\n" + h.report(server, up, rss0, rss1, legit) + f"\n  random cases {randoms}")
    assert up and ok, legit
    assert rss1 - rss0 < RSS_BOUND
    bad = [r for r in log_records(run_dir / f"{server}.log")
           if r.get("level") in ("error", "critical")]
    assert not bad, bad[:3]
