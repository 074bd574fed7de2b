"""VMWorkload: what every workload that writes and verifies pages shares (anon, mmap, the
ext2fs family): the kernel's VM counters before and after, the default pager's swap
usage, rates, a fixed amount of work checked at the end."""

from __future__ import annotations

import os
import time
from pathlib import Path

from lab.client import ClusterError
from lab.loadgen.logstats import log_records, record_time
from lab.loadgen.pages import MIB, MISMATCH_KINDS
from lab.loadgen.table import dash, fmt_mib
from lab.loadgen.workload import Workload, positive_float, positive_int
from protocol.defs import mach as V
from protocol.defs.mach_port import mach_port_deallocate
from protocol.kern_return import MachError, MachMsgReturn
from protocol.message import MAX_OOL_BYTES
from protocol.vm_param import PAGE_SIZE as PAGE

# Kernel counters shown as before/after/delta; the first set only grows.
VM_COUNTERS = ("pageouts", "pageins", "zero_fill_count", "faults", "reactivations",
               "data_returns", "data_return_pages", "data_requests", "data_unlocks",
               "page_waits", "cow_faults")
VM_GAUGES = ("free_count", "active_count", "inactive_count", "wire_count", "dirty_count",
             "laundry_count", "objects", "cached_objects")
SWAP_KEYS = ("pages_in_swap", "slots_used", "slots_total", "high_water", "page_writes",
             "page_reads", "swap_full", "objects", "objects_created", "objects_terminated",
             "server_peak_threads")


def vm_stats(cluster) -> dict | None:
    """vm_statistics of the loadgen task (the counters are kernel-wide), None when the
    kernel does not answer."""
    try:
        return V.vm_statistics(cluster.rt.task_self, timeout=10, rt=cluster.rt)
    except MachError:
        return None


def pager_swap(run_dir: str, name: str) -> dict | None:
    """The default pager's swap usage: its last statistics record (DIR/NAME.log, written
    every few seconds; ``age_s`` says how old) and the blocks its swap file really uses;
    None without a log."""
    log = Path(run_dir) / f"{name}.log"
    if not log.exists():
        return None
    d: dict = {}
    for r in log_records(log, head=True):
        if r.get("event") == "default pager ready":
            d["swap_file"] = r.get("swap")
            d["slots_total"] = r.get("swap_slots")
            break
    last = None
    for r in log_records(log, head=False):
        if r.get("event") in ("stats", "default pager stopping"):
            last = r
    if last is not None:
        for k in SWAP_KEYS:
            if k in last:
                d[k] = last[k]
        t = record_time(last)
        if t is not None:
            d["age_s"] = round(time.time() - t, 1)
    path = d.get("swap_file") or str(Path(run_dir) / "swap")
    try:
        d["swap_file_bytes"] = os.stat(path).st_blocks * 512
    except OSError:
        pass
    return d or None


def rates(s: dict, c: dict, args):
    """MiB/s over the run, and per phase from the threads' time in it."""
    el = s["elapsed_s"]
    moved = (c.get("pages_written", 0) + c.get("pages_verified", 0)
             + c.get("pages_verified_io", 0) + c.get("pages_verified_map", 0)) * PAGE / MIB
    s["mib_per_s"] = round(moved / el, 2) if el > 0 else None
    nthreads = args.tasks * args.threads
    for key, pages, secs in (("write", "pages_written", "write_s"),
                             ("verify", "pages_verified", "verify_s"),
                             ("io_verify", "pages_verified_io", "io_verify_s"),
                             ("map_verify", "pages_verified_map", "map_verify_s")):
        if c.get(secs):
            s[f"{key}_mib_per_s"] = round(c.get(pages, 0) * PAGE / MIB
                                          / (c[secs] / nthreads), 2)


def server_row(s: dict) -> list[tuple[str, str]]:
    """The summary row of the sampled server (none if it was not sampled)."""
    srv = s.get("server") or {}
    if not srv.get("pid"):
        return []
    return [(f"server {s['server_name']}",
             f"pid {srv['pid']}, threads peak {dash(srv.get('threads_peak'))}, "
             f"RSS peak {fmt_mib(srv.get('rss_peak'))}")]


class VMWorkload(Workload):
    """What anon and mmap share: page patterns, kernel VM counters before and after, the
    default pager's swap usage, a fixed amount of work checked at the end."""

    unit = "ops"
    progress_unit = "pages"
    fixed_work = True
    # A page that does not come within the call timeout means a stuck pager or fault: the
    # thread stops (its work counts as not done) rather than wait again for each page.
    fatal_codes = Workload.fatal_codes | {MachMsgReturn.MACH_RCV_TIMED_OUT,
                                          MachMsgReturn.MACH_SEND_TIMED_OUT}

    def add_pager_name(self, g):
        """--pager-name: whose log says how much swap is used."""
        g.add_argument("--pager-name", default="defpager", metavar="NAME",
                       help="the default pager's name (its log has the swap usage)")

    def add_common(self, g):
        """The options anon and mmap share."""
        g.add_argument("--passes", type=positive_int, default=1, metavar="N",
                       help="write/verify passes (each rewrites every page; default 1)")
        g.add_argument("--chunk-pages", type=positive_int, default=16, metavar="P",
                       help="pages per vm_write / vm_read / io_read (default 16)")
        g.add_argument("--call-timeout", type=positive_float, default=120.0, metavar="S",
                       help="timeout of each call (default 120: faults wait for pageout)")
        self.add_pager_name(g)

    def check_args(self, args, parser):
        if args.chunk_pages * PAGE > MAX_OOL_BYTES:
            parser.error(f"--chunk-pages at most {MAX_OOL_BYTES // PAGE}")

    def prepare_vm(self, cluster, args) -> dict:
        """Parent side: the kernel's VM counters and the swap usage before, and the run's
        nonce (what makes its page patterns its own)."""
        before = vm_stats(cluster)
        if before is None:
            raise ClusterError("the kernel does not answer vm_statistics (no VM?)")
        return {"vm_before": before, "nonce": int.from_bytes(os.urandom(8), "little"),
                "swap_before": pager_swap(args.run_dir, args.pager_name)}

    def default_pager_present(self, cluster) -> bool:
        """vm_set_default_memory_manager (on host_priv) with a null port only asks who
        it is."""
        try:
            port = V.vm_set_default_memory_manager(cluster.rt.host_priv, 0, timeout=10,
                                                   rt=cluster.rt)
        except MachError:
            return False
        if port:
            try:
                mach_port_deallocate(cluster.rt.task_self, port, timeout=10, rt=cluster.rt)
            except MachError:
                pass
        return bool(port)

    def task_progress(self, state):
        return state.progress

    def task_counters(self, rt, args, state):
        return dict(state.counters)

    def progress_extra(self, cluster, args, prepared):
        s = vm_stats(cluster)
        if s is None:
            return ""
        b = prepared["vm_before"]
        return (f"pageouts {s['pageouts'] - b['pageouts']}  pageins "
                f"{s['pageins'] - b['pageins']}  free {s['free_count']}/{s['physical_pages']}")

    def finish(self, cluster, args, prepared):
        prepared["vm_after"] = vm_stats(cluster)
        prepared["swap_after"] = pager_swap(args.run_dir, args.pager_name)

    def summarize_vm(self, s, args, prepared):
        """The kernel's counters before, after and their delta, the swap usage, the
        kinds of mismatched pages."""
        b, a = prepared["vm_before"], prepared.get("vm_after")
        vm = {"physical_pages": b["physical_pages"],
              "before": {k: b.get(k) for k in VM_COUNTERS + VM_GAUGES}}
        if a is not None:
            vm["after"] = {k: a.get(k) for k in VM_COUNTERS + VM_GAUGES}
            vm["delta"] = {k: a[k] - b[k] for k in VM_COUNTERS if k in a and k in b}
            vm["pageout_daemon"] = a.get("pageout")
        s["vm"] = vm
        s["swap"] = {"before": prepared.get("swap_before"), "after": prepared.get("swap_after")}
        c = s["counters"]
        s["mismatch_kinds"] = {k: c[f"mismatch_{k}"] for k in MISMATCH_KINDS
                               if c.get(f"mismatch_{k}")}
        s["passes"] = args.passes
        s["chunk_pages"] = args.chunk_pages

    def vm_rows(self, s) -> list[tuple[str, str]]:
        """The summary rows of the kernel's VM counters and the default pager's swap."""
        vm = s["vm"]
        rows = []
        d, b, a = vm.get("delta") or {}, vm["before"], vm.get("after") or {}
        if s.get("mismatch_kinds"):
            rows.append(("mismatch kinds", ", ".join(f"{k} {n}" for k, n in
                                                     s["mismatch_kinds"].items())))
        rows += [
            ("kernel memory", f"{vm['physical_pages']} pages "
                              f"({vm['physical_pages'] * PAGE / MIB:.1f} MiB)"),
            ("pageouts", dash(d.get("pageouts"))
             + f"  (in {dash(d.get('data_returns'))} data_returns)"),
            ("pageins", dash(d.get("pageins"))
             + f"  (data_requests {dash(d.get('data_requests'))})"),
            ("zero fills", dash(d.get("zero_fill_count"))),
            ("faults", dash(d.get("faults"))),
            ("free/active/inactive", f"before {b['free_count']}/{b['active_count']}/"
                                     f"{b['inactive_count']}, after "
                                     f"{dash(a.get('free_count'))}/"
                                     f"{dash(a.get('active_count'))}/"
                                     f"{dash(a.get('inactive_count'))}"),
        ]
        sw = s.get("swap") or {}
        sa, sb = sw.get("after") or {}, sw.get("before") or {}
        if sa:
            parts = []
            if "pages_in_swap" in sa:
                parts.append(f"{sa['pages_in_swap']} pages in swap"
                             + (f" of {sa['slots_total']}" if sa.get("slots_total") else "")
                             + (f" ({sa['age_s']} s old)" if "age_s" in sa else ""))
            if "page_writes" in sa:
                w0, r0 = sb.get("page_writes", 0), sb.get("page_reads", 0)
                parts.append(f"{sa['page_writes'] - w0} writes, "
                             f"{sa.get('page_reads', 0) - r0} reads")
            if "swap_file_bytes" in sa:
                parts.append(f"file uses {fmt_mib(sa['swap_file_bytes'])}")
            rows.append(("default pager swap", "; ".join(parts) or "-"))
        else:
            rows.append(("default pager swap", "no log found"))
        return rows

    def check_work(self, s, expected: dict) -> str | None:
        """"work incomplete: ..." naming every counter short of ``expected``, or None."""
        c = s["counters"]
        short = [f"{k} {c.get(k, 0)} of {n}" for k, n in expected.items() if c.get(k, 0) < n]
        if short:
            return "work incomplete: " + ", ".join(short)
        return None
