"""The inspection tools' formatting and argument handling, without a cluster: vminfo's
and portinfo's lines in the Hurd's formats, vmstat's values and terse lines, TASK
resolution, SERVER:/PATH targets, the live view's pager-queue summary."""

from __future__ import annotations

import io

import pytest

from lab.tools import mach, portinfo, vminfo, vmstat, watch
from lab.tools.common import ToolError, code_text, resolve_task
from lab.tools.output import human_bytes, print_table, vmstat_size
from protocol import message as M
from protocol.defs import fs as F
from protocol.defs import mach as V
from protocol.kern_return import KernReturn

pytestmark = pytest.mark.timeout(30)


# ---------------------------------------------------------------- vminfo

def region(**kw):
    r = {"address": 0x1000, "size": 0x8000, "protection": V.VM_PROT_DEFAULT,
         "max_protection": V.VM_PROT_DEFAULT, "inheritance": V.VM_INHERIT_DEFAULT,
         "is_shared": False, "offset": 0, "mem_obj": 0}
    r.update(kw)
    return r


def test_vminfo_prot_and_inherit_as_the_hurd_prints_them():
    assert vminfo.prot_rep(0) == "0"
    assert vminfo.prot_rep(V.VM_PROT_READ | V.VM_PROT_EXECUTE) == "RX"
    assert vminfo.prot_rep(V.VM_PROT_ALL | 0x10) == "RWX+0x10"
    assert vminfo.inh_rep(V.VM_INHERIT_SHARE) == "share" and vminfo.inh_rep(9) == "9"


def test_vminfo_line_leaves_out_what_is_default():
    assert vminfo.entry_line(region()) == "    0x1000[0x8000] (prot=RW)"
    line = vminfo.entry_line(region(address=0x42000, protection=0,
                                    max_protection=V.VM_PROT_ALL,
                                    inheritance=V.VM_INHERIT_SHARE, is_shared=True,
                                    mem_obj=7, offset=0x2000))
    assert line == ("   0x42000[0x8000] (prot=0, max_prot=RWX, inherit=share, shared, "
                    "mem_obj=7, offs=0x2000)")
    assert vminfo.entry_line(region(offset=4096), hexa=False) == \
        "      4096[32768] (prot=RW, offs=4096)"
    assert vminfo.hole_line(0x3000) == "          [0x3000] (hole)"


def test_vminfo_summary_rows():
    s = {"nentries": 3, "size": 3 << 12, "lookup": "tree", "tree_height": 2,
         "merge": "coalesce", "counters": {"merges": 5, "clips": 2},
         "objects": {1: {"kind": "internal"}}}
    rows = dict(vminfo.summary_text({"name": "t", "id": 4, "pid": 1}, s, [{}, {}, {}]))
    assert rows["entries"] == "3 (vm_region listed 3)"
    assert rows["lookup"] == "tree (height 2)" and rows["objects"] == "1 internal"
    assert rows["merges, clips"] == "5 merges, 2 clips"


# ---------------------------------------------------------------- vmstat

def test_vmstat_sizes_as_print_val():
    assert vmstat_size(4096) == "4096"
    assert vmstat_size(8 << 20) == "8192K"
    assert vmstat_size(256 << 20) == "256M"
    assert vmstat_size(30_000_000) == "28.6M"
    assert vmstat_size(0) == "0"


def stats(**kw):
    s = {"pagesize": 4096, "free_count": 100, "active_count": 20, "inactive_count": 10,
         "wire_count": 2, "zero_fill_count": 5, "reactivations": 0, "pageins": 3,
         "pageouts": 4, "faults": 9, "cow_faults": 0, "lookups": 4, "hits": 1,
         "cached_objects": 2, "dirty_count": 6, "potentially_dirty": 0,
         "laundry_count": 1, "data_returns": 7, "returns_in_flight": 1,
         "dirty_sleeping": 0, "paused_allocations": 0, "time": 0.0,
         "swap": {"slots_total": 1000, "slots_used": 10}}
    s.update(kw)
    return s


def test_vmstat_field_values_sizes_in_bytes_and_computed_ones():
    by = {f.name: f for f in vmstat.FIELDS}
    s = stats()
    assert by["size"].value(s) == 132 * 4096
    assert by["free"].value(s) == 100 * 4096 and by["page faults"].value(s) == 9
    assert by["memobj hit ratio"].value(s) == 25
    assert by["swap free"].value(s) == 990 * 4096
    assert by["swap size"].value(stats(swap=None)) is None  # no default pager record
    assert by["memobj hit ratio"].value(stats(lookups=0)) is None
    assert vmstat.format_value(by["free"], 100 * 4096, "pages") == "100"
    assert vmstat.format_value(by["free"], 100 * 4096, "k") == "400"
    assert vmstat.format_value(by["pageouts"], 8 * 4096, "auto", sign=True) == "+32K"
    assert vmstat.format_value(by["pageouts"], 2 * 4096, "auto", sign=True) == "+8192"
    assert vmstat.format_value(by["page faults"], 0, "auto", sign=True) == "+0"


def test_vmstat_terse_lines_give_changes_after_the_first():
    fields = [f for f in vmstat.FIELDS if f.standard]
    out = io.StringIO()
    t = vmstat.Terse(fields, "pages", 22, out)
    t.line(stats())
    t.line(stats(faults=19, free_count=90, pageouts=6))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("(pagesize: 4096, size: 132")  # constants above the header
    hdr = lines[1].split()
    assert hdr[:2] == ["free", "actv"] and "pfaults" in hdr and "pgsz" not in hdr
    first, second = (dict(zip(hdr, ln.split())) for ln in lines[2:4])
    assert first["pfaults"] == "9" and second["pfaults"] == "+10"
    assert first["free"] == "100" and second["free"] == "90"  # varying: the value itself
    assert second["pgouts"] == "+2"


def test_vmstat_terse_header_again_after_the_interval():
    out = io.StringIO()
    t = vmstat.Terse([f for f in vmstat.FIELDS if f.name in ("free", "page faults")],
                     "pages", 2, out)
    for i in range(3):
        t.line(stats(faults=10 * i))
    lines = out.getvalue().splitlines()
    assert [ln.split() for ln in lines] == [["free", "pfaults"], ["100", "0"], ["100", "+10"],
                                            [], ["free", "pfaults"], ["100", "20"]]
    assert lines[-1].split() == ["100", "20"]  # a new page starts with the totals


def test_vmstat_json_sample_has_deltas_of_cumulative_fields():
    fields = [f for f in vmstat.FIELDS if f.standard]
    a, b = stats(time=1.0), stats(time=2.5, faults=12, free_count=50)
    j = vmstat.json_sample(fields, b, a)
    assert j["delta"]["page faults"] == 3 and "free" not in j["delta"]
    assert j["values"]["free"] == 50 * 4096 and j["interval_s"] == 1.5
    assert "swap" not in j["vm_statistics"]


# ---------------------------------------------------------------- portinfo

RECV, SEND = M.MACH_PORT_TYPE_RECEIVE, M.MACH_PORT_TYPE_SEND


def recv_row(**kw):
    st = {"pset": 0, "seqno": 12, "mscount": 1, "qlimit": 16, "msgcount": 3,
          "sorights": 0, "srights": 1, "pdrequest": 0, "nsrequest": 1,
          "waiting_receivers": 1, "blocked_senders": 2, "send_rights": 1, "dnrequests": 4}
    st.update(kw)
    return {"name": 257, "type": RECV | SEND, "rights": ["receive", "send"],
            "refs": {"send": 2}, "receive": st,
            "identity": {"what": "port", "id": 9, "receiver": 3, "receiver_name": "ext2fs",
                         "kotype": "", "label": "", "object": 7}}


def test_portinfo_line_is_the_hurds_with_machemus_additions_in_braces():
    r = recv_row()
    assert portinfo.line(r, False, False) == "   257: receive, send"
    assert portinfo.line(r, False, True) == (
        "   257: receive, send (seqno: 12, ms-count: 1, qlimit: 16, msgs: 3, send-rights, "
        "ns-req) (refs: 2) {3/16 queued, 2 senders blocked, 1 receivers waiting, "
        "4 dead-name requests; pager of object 7}")
    assert portinfo.line(recv_row(pset=0x120, qlimit=5, msgcount=0, mscount=0,
                                  blocked_senders=0, waiting_receivers=0, dnrequests=0,
                                  nsrequest=0, srights=0), True, True) == (
        " 0x101: receive, send (port-set: 0x120, seqno: 12) (refs: 2) "
        "{0/5 queued; pager of object 7}")


def test_portinfo_send_right_to_a_kernel_port_and_port_sets():
    send = {"name": 301, "type": SEND, "rights": ["send"], "refs": {"send": 1},
            "dnrequest": True,
            "identity": {"what": "port", "id": 24, "receiver": 0, "receiver_name": "kernel",
                         "kotype": "task", "label": "task ext2fs", "object": 0}}
    assert portinfo.line(send, False, True) == (
        "   301: send (refs: 1) {dead-name notification requested; -> kernel, port 24, "
        "task ext2fs}")
    pset = {"name": 290, "type": M.MACH_PORT_TYPE_PORT_SET, "rights": ["port-set"],
            "refs": {}, "members": [291, 295], "identity": {"what": "pset", "id": 3}}
    assert portinfo.line(pset, False, True) == "   290: port-set (291, 295)"
    pset["members"] = []
    assert portinfo.line(pset, False, True) == "   290: port-set (empty)"
    assert portinfo.table_row(recv_row(), False)[:4] == ["257", "receive,send", "2", "3/16"]


def test_portinfo_translate_by_port_identity():
    def ident(i):
        return {"what": "port", "id": i}

    from_names = [(10, RECV), (11, SEND), (12, M.MACH_PORT_TYPE_SEND_ONCE), (13, SEND)]
    from_ids = {10: ident(100), 11: ident(101), 12: ident(102), 13: ident(103)}
    to_names = [(20, SEND), (21, RECV), (22, M.MACH_PORT_TYPE_SEND_ONCE), (23, RECV)]
    to_ids = {20: ident(100), 21: ident(101), 22: ident(102), 23: ident(100)}
    # a receive right translates to a send right only; a send right to either;
    # send-once rights are not translated; 103 is not in the other space
    assert portinfo.translate(from_ids, from_names, to_ids, to_names) == {10: 20, 11: 21}


# ---------------------------------------------------------------- common, mach, watch

TASKS = [{"id": 1, "name": "defpager", "pid": 500}, {"id": 4, "name": "ext2fs", "pid": 4},
         {"id": 7, "name": "lg", "pid": 900}, {"id": 9, "name": "lg", "pid": 901}]


def test_resolve_task_by_name_pid_id_and_explicitly():
    assert resolve_task(TASKS, "ext2fs")["id"] == 4
    assert resolve_task(TASKS, "lg")["id"] == 9  # the newest of a name
    assert resolve_task(TASKS, "900")["id"] == 7  # a pid first
    assert resolve_task(TASKS, "4")["id"] == 4  # pid 4 is ext2fs's
    assert resolve_task(TASKS, "1")["id"] == 1  # no pid 1: a task id
    assert resolve_task(TASKS, "id:4")["id"] == 4 and resolve_task(TASKS, "pid:500")["id"] == 1
    with pytest.raises(ToolError, match="no task 'memfs'.*defpager, ext2fs, lg"):
        resolve_task(TASKS, "memfs")
    with pytest.raises(ToolError, match="must be a number"):
        resolve_task(TASKS, "pid:x")
    with pytest.raises(ToolError, match="no task 'id:5'"):
        resolve_task(TASKS, "id:5")


def test_code_text_names_hurd_and_mach_codes():
    assert code_text(F.ENOENT) == "ENOENT" and code_text(F.ENOTEMPTY) == "ENOTEMPTY"
    assert code_text(KernReturn.KERN_INVALID_HOST) == "KERN_INVALID_HOST"
    assert code_text(2802) == "NETNAME_NOT_CHECKED_IN"


def test_mach_targets():
    assert mach.parse_target("ext2fs:/a/b/") == ("ext2fs", "a/b")
    assert mach.parse_target("memfs:/") == ("memfs", "")
    assert mach.parse_target("ext2fs", need_path=False) == ("ext2fs", "")
    for bad in ("ext2fs", ":/x", ""):
        with pytest.raises(ToolError, match="SERVER:/PATH"):
            mach.parse_target(bad)
    assert mach.parent_of("a/b/c") == ("a/b", "c") and mach.parent_of("x") == ("", "x")
    with pytest.raises(ToolError):
        mach.parent_of("")


def test_watch_pager_queues_per_task():
    ports = [{"task": "ext2fs", "pager": True, "depth": 4, "blocked_senders": 0,
              "waiting_receivers": 0},
             {"task": "ext2fs", "pager": True, "depth": 9, "blocked_senders": 1,
              "waiting_receivers": 0},
             {"task": "ext2fs", "pager": False, "depth": 50, "blocked_senders": 3,
              "waiting_receivers": 0},
             {"task": "memfs", "pager": True, "depth": 0, "blocked_senders": 0,
              "waiting_receivers": 2}]
    q = watch.pager_queues(ports)
    assert [d["task"] for d in q] == ["ext2fs", "memfs"]
    assert q[0] == {"task": "ext2fs", "ports": 2, "queued": 13, "deepest": 9, "blocked": 1,
                    "waiting": 0}
    assert q[1]["waiting"] == 2


def test_tables_plain_off_a_terminal():
    out = io.StringIO()
    print_table(["A", "BB"], [["x", 1], ["yy", 22]], title="t", stream=out)
    assert out.getvalue().splitlines() == ["t", "A   BB", "--  --", "x    1", "yy  22"]
    assert human_bytes(1536) == "1.5 KiB" and human_bytes(10) == "10 B"
