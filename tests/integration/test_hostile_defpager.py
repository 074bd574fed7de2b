"""Hostile requests at the default pager from an ordinary task (tests/hostile.py): every
routine of every subsystem, near-valid, at the port it publishes in the name server.  It
must answer every case within the bound, stay alive with bounded RSS, and then page
another task's anonymous memory out and back in with the same bytes (a kernel with
little physical memory, so that the pages really go to swap)."""

from __future__ import annotations

import pytest

from protocol.defs import mach as VM
from protocol.defs import machemu as X
from protocol.defs import netname as NS
from protocol.runtime import TaskRuntime
from tests.conftest import log_records, start_kernel, start_server
from tests.hostile import RSS_BOUND, Hostile, alive, legit_result, pattern, rss

pytestmark = pytest.mark.timeout(240)
T = 60
PAGES = 512  # physical pages of the kernel: 2 MiB
ANON = 3 << 20  # what the legitimate client writes: more than memory


def legit_anon(endpoint) -> str:
    with TaskRuntime(endpoint, "legit") as rt:
        addr = VM.vm_allocate(rt.task_self, 0, ANON, True, timeout=T, rt=rt)
        chunk = 64 * 1024
        for off in range(0, ANON, chunk):
            VM.vm_write(rt.task_self, addr + off, pattern(chunk, seed=off // chunk % 251),
                        timeout=T, rt=rt)
        for off in range(0, ANON, chunk):
            got = VM.vm_read(rt.task_self, addr + off, chunk, timeout=T, rt=rt)
            assert bytes(got) == pattern(chunk, seed=off // chunk % 251), f"differs at {off}"
        stats = VM.vm_statistics(rt.task_self, timeout=T, rt=rt)
        info = X.machemu_kernel_info(rt.host, timeout=T, rt=rt)["stats"]
    assert stats["pageouts"] > 0, stats
    return f"{ANON >> 20} MiB anonymous memory paged out and back equal ({stats['pageouts']} " \
           f"pageouts, {stats['pageins']} pageins; kernel internal errors " \
           f"{info.get('internal_errors', 0)})"


def test_hostile_requests_at_default_pager(run_dir, procs):
    endpoint = start_kernel(run_dir, procs, physical_pages=PAGES)
    p = start_server(procs, run_dir, "translators.defpager", "defpager")
    rt = TaskRuntime(endpoint, "hostile")
    try:
        h = Hostile(rt)
        port = NS.netname_look_up(rt.name_server, "", "defpager", timeout=T, rt=rt)
        rss0 = rss(p.pid)
        try:
            h.walk("default pager port", port)
        finally:
            up = alive(p.pid)
            rss1 = rss(p.pid) if up else 0
            ok, legit = legit_result(legit_anon, endpoint) if up else (False, "dead")
            print("\n" + h.report("defpager", up, rss0, rss1, legit))
    finally:
        rt.close()
    assert up and ok, legit
    assert rss1 - rss0 < RSS_BOUND
    bad = [r for r in log_records(run_dir / "defpager.log")
           if r.get("level") in ("error", "critical")]
    assert not bad, bad[:3]
