"""``scripts/vmstat [--run-dir DIR] [INTERVAL [COUNT [HEADER_INTERVAL]]]``: the kernel's
virtual-memory statistics as the Hurd's utils/vmstat.c prints them, with machemu's own.

Without INTERVAL: one ``name: value`` line per field (a table on a terminal).  With it:
terse mode, one line per INTERVAL seconds, cumulative fields as the change since the
line before (with a sign), constant fields once above each header, the header again
every HEADER_INTERVAL lines (default 22), as the Hurd's does; COUNT lines (0: until
Ctrl-C).  Sizes as vmstat prints them (at most four digits and K/M/G), ``-v`` in pages,
``-k`` in KiB, ``-b`` in bytes.  ``--json``: one object, or a JSON line per interval.

The numbers come from ``vm_statistics`` (the Mach call, on this tool's own task port:
no privilege needed).  Swap size and use come from the default pager's latest
statistics record in its log (DIR/defpager.log): machemu's default pager has no
``default_pager_info`` routine.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable

from lab.loadgen.vmworkload import pager_swap
from lab.tools.common import CALL_TIMEOUT, Session, ToolError, mach_error, run_tool, tool_parser
from lab.tools.output import print_json, print_json_line, print_table, terminal, vmstat_size
from protocol.defs import mach as V
from protocol.kern_return import MachError
from protocol.vm_param import PAGE_SIZE

CONST, VARY, CUMUL = "const", "vary", "cumul"   # how a field changes (vmstat.c)
SIZE, PAGESZ, COUNT, PCENT = "size", "pagesz", "count", "pcent"  # how it is shown
HEADER_INTERVAL = 22


@dataclass(frozen=True)
class Field:
    """One vmstat field: its name (and option), terse header, description, how it
    changes and is shown, whether it is shown by default, and how it is read from a
    sample (vm_statistics plus ``swap``): a key of it, or a function; SIZE values
    are pages (bytes for PAGESZ)."""

    name: str
    hdr: str
    doc: str
    change: str
    type: str
    get: str | Callable[[dict], int | None]
    standard: bool = True

    def value(self, s: dict) -> int | None:
        """The field's value in ``s``: bytes for sizes, else a count; None when the
        sample lacks it (vmstat's BADVAL: the field is left out)."""
        v = self.get(s) if callable(self.get) else s.get(self.get)
        if v is None:
            return None
        return int(v) * s["pagesize"] if self.type == SIZE else v


def _size(s):
    return s["free_count"] + s["active_count"] + s["inactive_count"] + s["wire_count"]


def _hit_ratio(s):
    return round(s["hits"] * 100 / s["lookups"]) if s.get("lookups") else None


def _swap(key):
    def get(s):
        sw = s.get("swap") or {}
        if key == "free":
            known = "slots_total" in sw and "slots_used" in sw
            return sw["slots_total"] - sw["slots_used"] if known else None
        return sw.get(key)
    return get


FIELDS = [
    # utils/vmstat.c's fields, in its order
    Field("pagesize", "pgsz", "System pagesize", CONST, PAGESZ, "pagesize"),
    Field("size", "size", "Usable physical memory", CONST, SIZE, _size),
    Field("free", "free", "Unused physical memory", VARY, SIZE, "free_count"),
    Field("active", "actv", "Physical memory in active use", VARY, SIZE, "active_count"),
    Field("inactive", "inact", "Physical memory in the inactive queue", VARY, SIZE,
          "inactive_count"),
    Field("wired", "wired", "Unpageable physical memory", VARY, SIZE, "wire_count"),
    Field("zero filled", "zeroed", "Cumulative zero-filled pages", CUMUL, SIZE,
          "zero_fill_count"),
    Field("reactivated", "react", "Cumulative reactivated inactive pages", CUMUL, SIZE,
          "reactivations"),
    Field("pageins", "pgins", "Cumulative pages paged in", CUMUL, SIZE, "pageins"),
    Field("pageouts", "pgouts", "Cumulative pages paged out", CUMUL, SIZE, "pageouts"),
    Field("page faults", "pfaults", "Cumulative page faults", CUMUL, COUNT, "faults"),
    Field("cow faults", "cowpfs", "Cumulative copy-on-write page faults", CUMUL, COUNT,
          "cow_faults"),
    Field("memobj lookups", "lkups", "Memory-object lookups", CUMUL, COUNT, "lookups",
          False),
    Field("memobj hits", "hits", "Memory-object lookups with active pagers", CUMUL, COUNT,
          "hits", False),
    Field("memobj hit ratio", "hrat",
          "Percentage of memory-object lookups with active pagers", VARY, PCENT, _hit_ratio),
    Field("cached memobjs", "caobj", "Number of memory-objects retained in the page cache",
          VARY, COUNT, "cached_objects"),
    Field("swap size", "swsize", "Size of the default-pager swap area", CONST, SIZE,
          _swap("slots_total")),
    Field("swap active", "swactv", "Default-pager swap area in use", VARY, SIZE,
          _swap("slots_used"), False),
    Field("swap free", "swfree", "Default-pager swap area available for swapping", VARY,
          SIZE, _swap("free")),
    # machemu's own: what GNU Mach keeps private
    Field("dirty", "dirty", "Resident pages modified since they were last cleaned", VARY,
          SIZE, "dirty_count"),
    Field("potentially dirty", "pdirty",
          "External pages unlocked for writing and not yet cleaned (advisory pageout)",
          VARY, SIZE, "potentially_dirty"),
    Field("laundry", "laund", "Pages being cleaned: sent to a pager, not yet given back",
          VARY, SIZE, "laundry_count"),
    Field("external laundry", "xlaund", "Laundry at external pagers (not the default one)",
          VARY, SIZE, "laundry_external", False),
    Field("data_returns", "dret", "Cumulative memory_object_data_return messages", CUMUL,
          COUNT, "data_returns"),
    Field("data_returns in flight", "inflt",
          "data_returns whose pages the pager still holds", VARY, COUNT,
          "returns_in_flight"),
    Field("writers sleeping", "wsleep", "Writers asleep on the dirty limit (advisory)",
          VARY, COUNT, "dirty_sleeping"),
    Field("writer pauses", "wpause", "Cumulative writer pauses (throttle pageout)", CUMUL,
          COUNT, "dirty_pauses", False),
    Field("paused allocations", "apause",
          "Cumulative page allocations paused below the free minimum (modern pageout)",
          CUMUL, COUNT, "paused_allocations"),
    Field("page waits", "pwait", "Cumulative waits for a free page", CUMUL, COUNT,
          "page_waits", False),
]


def format_value(f: Field, v: int, units: str, sign: bool = False) -> str:
    """``v`` of field ``f`` as vmstat prints it: sizes in the ``units`` asked (auto:
    K/M/G suffixes; pages, k, b), percentages with "%"; ``sign`` for a change."""
    if f.type == PCENT:
        return f"{v:+d}%" if sign else f"{v}%"
    if f.type in (SIZE, PAGESZ):
        if units == "auto" or (units == "pages" and f.type == PAGESZ):
            text = vmstat_size(abs(v))
            return (("-" if v < 0 else "+") + text) if sign else text
        v //= {"pages": PAGE_SIZE, "k": 1024, "b": 1}[units]
    return f"{v:+d}" if sign else str(v)


def sample(session: Session, defpager: str) -> dict:
    """vm_statistics now, with the default pager's swap (``swap``: its size from the
    pager's ready record, its use from its last statistics record; empty without a
    log)."""
    rt = session.rt
    try:
        s = V.vm_statistics(rt.task_self, timeout=CALL_TIMEOUT, rt=rt)
    except MachError as e:
        raise mach_error(e, "vm_statistics") from None
    s["swap"] = pager_swap(str(session.run_dir), defpager) or {}
    s["time"] = time.time()
    return s


def fields_of(args) -> list[Field]:
    """The fields asked for: --all, else the standard ones."""
    return [f for f in FIELDS if f.standard or args.all]


def values(fields: list[Field], s: dict) -> dict:
    """{field name: value} of ``s``, fields it lacks left out."""
    out = {}
    for f in fields:
        v = f.value(s)
        if v is not None:
            out[f.name] = v
    return out


def verbose(fields: list[Field], s: dict, units: str, stream) -> None:
    """The verbose form: "name: value" lines (a table on a terminal)."""
    vals = values(fields, s)
    rows = [(f.name, format_value(f, vals[f.name], units), f.doc) for f in fields
            if f.name in vals]
    if terminal(stream):
        print_table(["field", "value", "what"], [list(r) for r in rows], stream=stream)
        return
    w = max(len(r[0]) for r in rows) + 2
    vw = max(len(r[1]) for r in rows)
    for name, text, _ in rows:
        print(f"{name + ':':<{w}}{text:>{vw}}", file=stream)


class Terse:
    """The terse form: a line per sample; cumulative fields as changes after the first
    line of each page, constant fields above each header."""

    def __init__(self, fields: list[Field], units: str, hdr_interval: int, stream):
        self.const = [f for f in fields if f.change == CONST]
        self.fields = [f for f in fields if f.change != CONST]
        self.units, self.stream = units, stream
        self.hdr_interval = max(1, hdr_interval - (1 if self.const else 0))
        self.widths: dict[str, int] = {}
        self.repeats = 0
        self.prev: dict | None = None
        self.pages = 0

    def header(self, s: dict):
        vals = values(self.const, s)
        if self.pages:
            print(file=self.stream)
        if vals:
            print("(" + ", ".join(f"{f.name}: {format_value(f, vals[f.name], self.units)}"
                                  for f in self.const if f.name in vals) + ")",
                  file=self.stream)
        cur = values(self.fields, s)
        for f in self.fields:
            if f.name in cur:
                w = len(format_value(f, cur[f.name], self.units)) + 1
                self.widths[f.name] = max(len(f.hdr), w + (1 if f.change == CUMUL else 0))
        print(" ".join(f"{f.hdr:>{self.widths[f.name]}}" for f in self.fields
                       if f.name in self.widths), file=self.stream)
        self.pages += 1
        self.repeats = 0

    def line(self, s: dict):
        if self.repeats == 0 or self.repeats >= self.hdr_interval:
            self.header(s)
        cur = values(self.fields, s)
        old = values(self.fields, self.prev) if self.prev is not None and self.repeats else {}
        cells = []
        for f in self.fields:
            if f.name not in self.widths:
                continue
            v = cur.get(f.name)
            if v is None:
                text = "-"
            elif f.change == CUMUL and f.name in old:
                text = format_value(f, v - old[f.name], self.units, sign=True)
            else:
                text = format_value(f, v, self.units)
            cells.append(f"{text:>{self.widths[f.name]}}")
        print(" ".join(cells), file=self.stream, flush=True)
        self.prev = s
        self.repeats += 1


def json_sample(fields: list[Field], s: dict, prev: dict | None) -> dict:
    """A sample as --json prints it: values (bytes for sizes), ``delta`` of the
    cumulative ones since ``prev``, and vm_statistics itself."""
    vals = values(fields, s)
    out = {"time": round(s["time"], 3), "values": vals,
           "vm_statistics": {k: v for k, v in s.items() if k not in ("swap", "time")},
           "swap": s.get("swap")}
    if prev is not None:
        old = values(fields, prev)
        out["delta"] = {f.name: vals[f.name] - old[f.name] for f in fields
                        if f.change == CUMUL and f.name in vals and f.name in old}
        out["interval_s"] = round(s["time"] - prev["time"], 3)
    return out


def parser():
    ap = tool_parser(
        "vmstat", "Show the kernel's virtual memory statistics (the Hurd's vmstat fields, "
        "then machemu's own).",
        "With INTERVAL the output is terse: a line every INTERVAL seconds, cumulative "
        "fields as the change since the line before; COUNT lines (0 or none: until "
        "Ctrl-C), the header again every HEADER_INTERVAL lines.",
        json_help="JSON (a line per interval)")
    ap.add_argument("interval", nargs="?", type=float, metavar="INTERVAL")
    ap.add_argument("count", nargs="?", type=int, metavar="COUNT")
    ap.add_argument("hdr_interval", nargs="?", type=int, default=HEADER_INTERVAL,
                    metavar="HEADER_INTERVAL")
    ap.add_argument("--all", "-a", action="store_true",
                    help="every field, not only the standard ones")
    ap.add_argument("--terse", "-t", action="store_true", help="one-line output")
    units = ap.add_mutually_exclusive_group()
    units.add_argument("--pages", "-v", dest="units", action="store_const", const="pages",
                       help="sizes in pages")
    units.add_argument("--kilobytes", "-k", dest="units", action="store_const", const="k",
                       help="sizes in 1024-byte blocks")
    units.add_argument("--bytes", "-b", dest="units", action="store_const", const="b",
                       help="sizes in bytes")
    ap.add_argument("--defpager", default="defpager", metavar="NAME",
                    help="the default pager whose log gives the swap (default defpager)")
    ap.set_defaults(units="auto")
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.interval is not None and args.interval <= 0:
        raise ToolError("INTERVAL must be positive")
    if args.count is not None and args.count < 0:
        raise ToolError("COUNT must not be negative")
    fields = fields_of(args)
    out = sys.stdout
    with Session(args.run_dir, "vmstat") as session:
        s = sample(session, args.defpager)
        if args.interval is None and not args.terse:
            if args.json:
                print_json(json_sample(fields, s, None))
            else:
                verbose(fields, s, args.units, out)
            return 0
        count = args.count if args.count else (1 if args.interval is None else None)
        terse = Terse(fields, args.units, args.hdr_interval, out)
        prev, n = None, 0
        next_t = time.monotonic()
        while True:
            if args.json:
                print_json_line(json_sample(fields, s, prev))
            else:
                terse.line(s)
            prev, n = s, n + 1
            if count is not None and n >= count:
                return 0
            next_t += args.interval
            time.sleep(max(0.0, next_t - time.monotonic()))
            s = sample(session, args.defpager)


def cli(argv=None) -> int:
    """scripts/vmstat."""
    return run_tool("vmstat", main, argv)
