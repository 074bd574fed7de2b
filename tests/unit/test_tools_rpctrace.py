"""lab.tools.rpctrace without a cluster: its argument parsing, the decoding of the body
prefixes the kernel keeps, the lines (requests held for their replies, late replies,
JSON), and the summary's figures; records are built as kernel.ipc_trace makes them."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from kernel.ipc_trace import FIELDS
from lab.tools import rpctrace as RT
from protocol import message as M
from protocol.defs import demo as D
from protocol.defs import fs as FS
from protocol.kern_return import KernReturn as K
from protocol.kern_return import MachMsgReturn as R

pytestmark = pytest.mark.timeout(30)


def rec(seq, t, kind, msgh_id, body=b"\x90", **kw) -> dict:
    r = dict.fromkeys(FIELDS)
    r.update(seq=seq, t=t, kind=kind, msgh_id=msgh_id, body=body, sender_id=3,
             sender="client", thread=1, receiver_id=4, receiver="ext2fs", recv_name=300,
             port=9, dest_name=290, label="", routine=RT.REGISTRY[msgh_id].name
             if msgh_id in RT.REGISTRY else None, inline=len(body), ool_bytes=0,
             ool_pages=0, ports=0, reply_port=77, code=None, latency=None, req_seq=None)
    r.update(kw)
    return r


def io_write(seq, t):
    body, _, _ = FS.io_write.encode_request([b"x" * 8192, 4096])
    return rec(seq, t, "request", FS.io_write.msgh_id, body, ool_bytes=8192, ool_pages=2)


def io_write_reply(seq, t, req_seq, latency, code=0):
    body = FS.io_write.encode_reply(code, [8192])[0]
    return rec(seq, t, "reply", FS.io_write.reply_id, body, code=code, req_seq=req_seq,
               latency=latency, sender="ext2fs", receiver="client", routine="io_write_reply")


def test_id_ranges_by_number_routine_and_subsystem():
    assert RT.parse_id_range("21000-21099") == (21000, 21099)
    assert RT.parse_id_range("2202") == (2202, 2202)
    assert RT.parse_id_range("io_write") == (21000, 21000)
    lo, hi = RT.parse_id_range("demo")
    assert lo == D.demo.base and hi == D.demo_send.msgh_id
    for bad in ("5-1", "x", "io_nonsense", "-3"):
        with pytest.raises(argparse.ArgumentTypeError):
            RT.parse_id_range(bad)


def test_tasks_resolve_by_name_id_or_pid_but_never_the_tracer():
    tasks = [{"id": 1, "name": "ext2fs", "pid": 900}, {"id": 2, "name": "w", "pid": 901},
             {"id": 3, "name": "w", "pid": 902}, {"id": 4, "name": "rpctrace", "pid": 5}]
    assert [t["id"] for t in RT.resolve_tasks(["ext2fs"], tasks, 4)] == [1]
    assert [t["id"] for t in RT.resolve_tasks(["w", "2", "902"], tasks, 4)] == [2, 3]
    assert [t["id"] for t in RT.resolve_tasks(["900"], tasks, 4)] == [1]
    with pytest.raises(RT.UsageError, match="no task .rpctrace.*ext2fs, w"):
        RT.resolve_tasks(["rpctrace"], tasks, 4)


def test_a_cut_body_decodes_as_far_as_it_goes():
    body = M.packb(["a" * 10, 5, "b" * 100])
    assert RT.decode_prefix(body) == (["a" * 10, 5, "b" * 100], True)
    assert RT.decode_prefix(body[:64]) == (["a" * 10, 5], False)
    assert RT.decode_prefix(b"") == ([], False)
    fields = RT.field_values(FS.dir_lookup.request, ["f", 1], False, 0)
    assert [(n, RT.text_value(v)) for n, v in fields] == [
        ("file_name", '"f"'), ("flags", "1"), ("mode", "...")]


def test_codes_are_named_as_rpctrace_does():
    assert RT.code_text(0) == "0"
    assert RT.code_text(FS.ENOENT) == "0x40000002 (ENOENT)"
    assert RT.code_text(K.KERN_INVALID_HOST) == "0x16 (KERN_INVALID_HOST)"
    assert RT.code_text(R.MACH_SEND_INVALID_DEST) == "0x10000003 (MACH_SEND_INVALID_DEST)"
    assert RT.code_text(-303) == "0xfffffed1 (MIG_BAD_ID)"


def test_a_request_is_printed_with_its_reply_in_request_order():
    out, s = io.StringIO(), RT.Summary()
    p = RT.Printer(out, False, 0.0, s)
    p.feed(io_write(0, 0.10))
    p.feed(rec(1, 0.11, "oneway", D.demo_send.msgh_id, M.packb([]), ool_bytes=4096))
    p.flush(0.2)
    assert out.getvalue() == ""  # the oneway waits behind the request
    p.feed(io_write_reply(2, 0.30, 0, 0.2))
    p.flush(0.3)
    lines = out.getvalue().splitlines()
    assert lines == [
        "   0.100000 client[1] ext2fs:300->io_write (<8192 B> 4096) = 0 8192  [200.000 ms]",
        "   0.110000 client[1] ext2fs:300->demo_send (<4096 B>)"]
    assert s.table()[0]["routine"] == "io_write" and s.table()[0]["answered"] == 1


def test_a_slow_reply_comes_on_a_line_of_its_own():
    out, s = io.StringIO(), RT.Summary()
    p = RT.Printer(out, False, 0.0, s)
    p.feed(io_write(0, 0.0))
    p.flush(RT.HOLD_S + 0.1)
    assert out.getvalue().endswith("io_write (<8192 B> 4096) ...77\n")
    p.feed(io_write_reply(1, 2.0, 0, 2.0, code=FS.ENOSPC))
    p.flush(2.1)
    assert out.getvalue().splitlines()[-1] == \
        "   2.000000 77... = 0x4000001c (ENOSPC)  [2000.000 ms]"
    row = s.table()[0]
    assert row["answered"] == 1 and row["errors"] == 1 and row["mean_ms"] == 2000.0


def test_json_lines_carry_request_and_reply_by_field_name():
    out, s = io.StringIO(), RT.Summary()
    p = RT.Printer(out, True, 0.0, s)
    p.feed(io_write(0, 0.0))
    p.feed(io_write_reply(1, 0.01, 0, 0.01))
    p.feed(io_write(2, 0.02))  # never answered: printed at the end with reply None
    p.flush(5.0)
    p.flush(5.0, final=True)
    objs = [json.loads(ln) for ln in out.getvalue().splitlines()]
    assert [o["seq"] for o in objs] == [0, 2]
    assert objs[0]["args"] == {"data": {"ool_bytes": 8192}, "offset": 4096}
    assert objs[0]["reply"] == {"amount": 8192} and objs[0]["code"] == 0
    assert objs[0]["latency_ms"] == pytest.approx(10.0)
    assert objs[1]["reply"] is None and objs[1]["code"] is None
    RT.print_summary(s, 5.0, out, True)
    summary = json.loads(out.getvalue().splitlines()[-1])
    assert summary["messages"] == 2 and summary["summary"][0]["count"] == 2


def test_summary_p99_and_mean_of_the_latencies():
    s = RT.Summary()
    for i in range(100):
        e = RT.Entry(io_write(2 * i, i))
        e.reply = io_write_reply(2 * i + 1, i, 2 * i, (i + 1) / 1000)
        s.add(e)
    row = s.table()[0]
    assert row["count"] == row["answered"] == 100 and row["errors"] == 0
    assert row["mean_ms"] == pytest.approx(50.5) and row["p99_ms"] == pytest.approx(100.0)
    assert row["ool_pages"] == 200
