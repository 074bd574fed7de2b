"""``scripts/vminfo [--run-dir DIR] TASK [ADDR [SIZE]] [--holes] [--json]``: a task's
address map, one line per entry as the Hurd's utils/vminfo.c prints it::

    0x1000[0x8000] (prot=RW, max_prot=RWX, offs=0x2000, mem_obj=12)

(``address[size] (prot, max_prot, inherit, shared, mem_obj, offset)``, the attributes
equal to their defaults left out, as vminfo does), so ``vminfo ext2fs | wc -l`` counts
the entries.  Each entry comes from ``vm_region`` on the task's kernel port, iterated
as vminfo iterates it; the port comes from ``machemu_task_for_id`` on host_priv (the
Hurd's proc_pid2task).  ``mem_obj`` is the kernel's id of the object mapped (vm_region
here gives no name port: its object_name is always null), from ``machemu_vm_map_info``,
which also gives the summary printed on stderr: entry count, lookup structure, merge
mode, tree height, and the entries merged into a neighbour and split by clipping so
far.
"""

from __future__ import annotations

import sys

from lab.tools.common import CALL_TIMEOUT, Session, ToolError, mach_error, run_tool, tool_parser
from lab.tools.output import human_bytes, print_json, print_table, terminal
from protocol.defs import mach as V
from protocol.defs import machemu as X
from protocol.kern_return import KernReturn, MachError

PROT_BITS = ((V.VM_PROT_READ, "R"), (V.VM_PROT_WRITE, "W"), (V.VM_PROT_EXECUTE, "X"))
INHERIT = {V.VM_INHERIT_SHARE: "share", V.VM_INHERIT_COPY: "copy",
           V.VM_INHERIT_NONE: "none"}
MAX_ADDRESS = 2**64 - 1


def prot_rep(prot: int) -> str:
    """vminfo's prot_rep: "0", or R/W/X and any other bits as "+0x.."."""
    if prot == 0:
        return "0"
    out = "".join(c for bit, c in PROT_BITS if prot & bit)
    if prot & ~V.VM_PROT_ALL:
        out += f"+{prot & ~V.VM_PROT_ALL:#x}"
    return out


def inh_rep(inh: int) -> str:
    return INHERIT.get(inh, str(inh))


def num(v: int, hexa: bool, width: int = 0) -> str:
    """A number as vminfo prints it: "%#x" (or decimal), right-aligned in ``width``;
    zero is "0" in either ("%#x" prints no 0x for it)."""
    text = (f"{v:#x}" if v else "0") if hexa else str(v)
    return f"{text:>{width}}" if width else text


def entry_line(r: dict, hexa: bool = True) -> str:
    """One region as vminfo prints it with addresses, sizes and details."""
    out = f"{num(r['address'], hexa, 10)}[{num(r['size'], hexa)}]"
    parts = [f"prot={prot_rep(r['protection'])}"]
    if r["max_protection"] != r["protection"]:
        parts.append(f"max_prot={prot_rep(r['max_protection'])}")
    if r["inheritance"] != V.VM_INHERIT_DEFAULT:
        parts.append(f"inherit={inh_rep(r['inheritance'])}")
    if r["is_shared"]:
        parts.append("shared")
    if r.get("mem_obj"):
        parts.append(f"mem_obj={r['mem_obj']}")
    if r["offset"]:
        parts.append(f"offs={num(r['offset'], hexa)}")
    return f"{out} ({', '.join(parts)})"


def hole_line(size: int, hexa: bool = True) -> str:
    return f"{'':10}[{num(size, hexa)}] (hole)"


def regions(session: Session, task_port: int, addr: int, max_addr: int) -> list[dict]:
    """vminfo's loop: vm_region from ``addr`` on, one region after the other, until
    KERN_NO_SPACE or past ``max_addr``."""
    rt = session.rt
    out = []
    while addr <= max_addr:
        try:
            a, size, prot, maxp, inh, shared, obj, offs = V.vm_region(
                task_port, addr, timeout=CALL_TIMEOUT, rt=rt)
        except MachError as e:
            if e.code == KernReturn.KERN_NO_SPACE:
                break
            raise mach_error(e, "vm_region") from None
        out.append({"address": a, "size": size, "protection": prot, "max_protection": maxp,
                    "inheritance": inh, "is_shared": shared, "object_name": obj,
                    "offset": offs, "hole_before": a - addr})
        addr = a + size
    return out


def map_info(session: Session, task_port: int) -> dict:
    """machemu_vm_map_info, every page of entries: the summary, {start: object id} of
    the entries (``objects_at``) and the objects' rows by id (``objects``)."""
    at, objects, summary = {}, {}, None
    for info in session.pages(X.machemu_vm_map_info, task_port, X.MAP_INFO_MAX):
        summary = summary or {k: v for k, v in info.items()
                              if k not in ("entries", "objects", "next")}
        for e in info["entries"]:
            at[e[0]] = e[5]
        for o in info["objects"]:
            objects[o[0]] = dict(zip(("id", "kind", "pager", "resident", "size",
                                      "ref_count", "cached", "label"), o))
    summary["objects_at"] = at
    summary["objects"] = objects
    return summary


def summary_text(task: dict, s: dict, regs: list[dict]) -> list[tuple[str, str]]:
    """The summary as (what, value) rows."""
    kinds = {}
    for o in s["objects"].values():
        kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
    rows = [("task", f"{task['name']} (id {task['id']}, pid {task['pid']})"),
            ("entries", f"{s['nentries']} (vm_region listed {len(regs)})"),
            ("mapped", human_bytes(s["size"])),
            ("lookup", s["lookup"] + (f" (height {s['tree_height']})"
                                      if s["lookup"] == "tree" else "")),
            ("merge", s["merge"]),
            ("objects", ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none")]
    c = s["counters"]
    rows.append(("merges, clips", f"{c['merges']} merges, {c['clips']} clips"))
    return rows


def parser():
    ap = tool_parser(
        "vminfo", "Show the virtual memory regions of task TASK, one line per map entry "
        "(the summary goes to stderr).",
        "If ADDR, and possibly SIZE, are given only regions enclosing the range ADDR to "
        "ADDR+SIZE are shown (SIZE defaults to 0).", task=True,
        json_help="one JSON object: task, summary, regions, objects")
    ap.add_argument("addr", nargs="?", metavar="ADDR")
    ap.add_argument("size", nargs="?", metavar="SIZE")
    ap.add_argument("--holes", "-H", action="store_true",
                    help="show holes between regions explicitly")
    ap.add_argument("--decimal", "-d", action="store_true", help="numbers in decimal")
    ap.add_argument("--no-summary", action="store_true", help="no summary on stderr")
    return ap


def parse_num(text: str, what: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise ToolError(f"{text}: invalid {what}") from None
    if v < 0:
        raise ToolError(f"{text}: invalid {what}")
    return v


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    addr, max_addr = 0, MAX_ADDRESS
    if args.addr is not None:
        addr = max_addr = parse_num(args.addr, "address")
        if args.size is not None:
            max_addr = addr + parse_num(args.size, "size")
    with Session(args.run_dir, "vminfo", privileged=True) as session:
        task, port = session.task(args.task)
        regs = regions(session, port, addr, max_addr)
        s = map_info(session, port)
    for r in regs:
        r["mem_obj"] = s["objects_at"].get(r["address"], 0)
    hexa = not args.decimal
    if args.json:
        objs = s.pop("objects")
        s.pop("objects_at")
        print_json({"task": task, "summary": s, "regions": regs,
                    "objects": [objs[k] for k in sorted(objs)]})
        return 0
    out = sys.stdout
    for r in regs:
        if args.holes and r["hole_before"] > 0:
            print(hole_line(r["hole_before"], hexa), file=out)
        print(entry_line(r, hexa), file=out)
    out.flush()
    if not args.no_summary:
        rows = summary_text(task, s, regs)
        if terminal(sys.stderr):
            print_table(["vminfo", ""], [list(r) for r in rows], stream=sys.stderr)
        else:
            for k, v in rows:
                print(f"# {k}: {v}", file=sys.stderr)
    return 0


def cli(argv=None) -> int:
    """scripts/vminfo."""
    return run_tool("vminfo", main, argv)
