"""The bench's result rows, ``{name, value, unit, floor_ratio}``, computed from what the
measuring processes reported.  Every kernel path's latency is divided by the floor's
round trip of the same run (p50 by p50, p99 by p99), the routed rate by the floor's
pipelined rate; the other rows have no ratio."""

from __future__ import annotations

import math

from lab.bench.stats import latency
from protocol.vm_param import PAGE_SIZE

EXT2_CLUSTERS = (1, 32)  # data_return_cluster values compared by the ext2 rows
MAP_SIZES = {100: "100", 10_000: "10k", 100_000: "100k"}  # map lookup rows' entry counts


def row(name: str, value, unit: str, ratio=None) -> dict:
    """One result row, value and ratio rounded to 3 decimals."""
    return {"name": name, "value": round(value, 3), "unit": unit,
            "floor_ratio": None if ratio is None else round(ratio, 3)}


def floor_summary(parts: list[dict]) -> tuple[dict, float]:
    """The floor of the run from its halves (each floor client's report): the round-trip
    latency of all their samples, and their pipelined rate in messages per second."""
    rtt = latency([x for part in parts for x in part["samples"]])
    rate = sum(p["stream_n"] for p in parts) / sum(p["stream_s"] for p in parts)
    return rtt, rate


def _vs_floor(name: str, lat: dict, fr: dict) -> list[dict]:
    """The p50 and p99 rows of a latency, each with its ratio to the floor's."""
    return [row(f"{name}_p{q}", lat[f"p{q}_us"], "us", lat[f"p{q}_us"] / fr[f"p{q}_us"])
            for q in (50, 99)]


def floor_rows(fr: dict, rate: float) -> list[dict]:
    """The floor's own rows."""
    return [row("floor.rtt_p50", fr["p50_us"], "us"),
            row("floor.rtt_p99", fr["p99_us"], "us"),
            row("floor.pipelined_rate", rate, "msg/s")]


def kernel_rows(fr: dict, rate: float, kern: dict, routed: dict, cores: int) -> list[dict]:
    """IPC through the kernel: the client's latencies (``kern``: null, echo, kobject) and
    the routed stream (``routed``: sent, wall seconds, kernel and server %core, senders'
    CPU seconds)."""
    routed_rate = routed["sent"] / routed["wall"]
    return [
        *_vs_floor("kernel.null_rpc", kern["null"], fr),
        *_vs_floor("kernel.echo_4k_rpc", kern["echo"], fr),
        row("kernel.routed_rate", routed_rate, "msg/s", routed_rate / rate),
        *_vs_floor("kernel.kobject_rpc", kern["kobject"], fr),
        # Is the kernel the bottleneck of the routed stream?  100 = one core, busy.
        row("info.routed_kernel_cpu", routed["kernel_cpu"], "%core"),
        row("info.routed_server_cpu", routed["server_cpu"], "%core"),
        # Kernel CPU per routed message: what caps the routed rate when the kernel has
        # a core to itself (1e6 / this = messages/s).
        row("info.routed_kernel_us_per_msg", routed["kernel_cpu"] * 1e4 / routed_rate, "us"),
        row("info.routed_senders_cpu", 100.0 * routed["senders_cpu_s"] / routed["wall"],
            "%core"),
        row("info.host_cores", cores, "cores"),
    ]


def trace_rows(fr: dict, kern: dict, traced: dict) -> list[dict]:
    """The null RPC while rpctrace traces every message (``traced``: the client's report
    then, rpctrace's summary as "trace", the untraced run just after as "after") against
    the floor; its ratio to the null RPC untraced (the mean of ``kern``'s, before, and
    the one after); the messages the trace saw and lost."""
    on = traced["null"]
    off = {q: (kern["null"][q] + traced["after"]["null"][q]) / 2 for q in ("p50_us", "p99_us")}
    return [
        *_vs_floor("kernel.null_rpc_traced", on, fr),
        row("info.null_rpc_untraced_after_p50", traced["after"]["null"]["p50_us"], "us"),
        row("info.trace_overhead_null_p50", on["p50_us"] / off["p50_us"], "x"),
        row("info.trace_overhead_null_p99", on["p99_us"] / off["p99_us"], "x"),
        row("info.traced_messages", traced["trace"]["messages"], "msgs"),
        row("info.trace_dropped", traced["trace"]["dropped"], "msgs"),
    ]


def vm_rows(fr: dict, vm: dict) -> list[dict]:
    """VM paths: resident read and cold fault against the floor (``vm``: the vmclient's
    report)."""
    return [
        *_vs_floor("vm.resident_read_4k", vm["resident"], fr),
        *_vs_floor("vm.cold_fault_memfs", vm["cold"], fr),
        # Every timed read was a data_request to memfs (checked per file by the client).
        row("info.cold_fault_data_requests", vm["cold"]["data_requests"], "pages"),
    ]


def lookup_rows(lookups: dict) -> list[dict]:
    """ns per map lookup (``lookups``: the maplookup role's report) and the tree's growth."""
    out = []
    for s in ("list", "tree"):
        for n, label in MAP_SIZES.items():
            out.append(row(f"vm.map_lookup_{s}_{label}", lookups[f"{s}_{n}"]["ns"], "ns"))
    # Growth 100 -> 100k entries against log(100k)/log(100) = 2.5: about 1 means the
    # lookup is logarithmic (a linear one would be 1000 / 2.5 = 400).
    growth = lookups["tree_100000"]["ns"] / lookups["tree_100"]["ns"]
    out.append(row("vm.map_lookup_tree_growth", growth, "x"))
    log_ratio = math.log(100_000) / math.log(100)
    out.append(row("vm.map_lookup_tree_growth_per_log", growth / log_ratio, "x"))
    return out


def rss_rows(rss: dict) -> list[dict]:
    """Kernel RSS per page (``rss``: the toucher's report with the kernel's "rss" and
    "idle_rss")."""
    # RSS per page as if every frame held data: the frames the toucher left free (the
    # pageout daemon's free target) are counted at 4 KiB each.
    n, touched = rss["physical_pages"], rss["touched"]
    full = rss["rss"] + (n - touched) * PAGE_SIZE
    return [
        row("vm.kernel_rss_per_page_256k", full / n / 1024, "KiB"),
        row("info.rss_256k_kernel_mib", rss["rss"] / 2**20, "MiB"),
        row("info.rss_256k_idle_mib", rss["idle_rss"] / 2**20, "MiB"),
        row("info.rss_256k_touched_pages", touched, "pages"),
        row("info.rss_256k_touch_s", rss["secs"], "s"),
    ]


def ext2_rows(ext2: dict, mib: int) -> list[dict]:
    """ext2fs write-back per data_return cluster size (``ext2[cluster]``: the writer's
    report with ext2fs's stats record as "ext2fs"), and the disk-write ratio of the
    smallest cluster to the largest."""
    out = []
    for cluster in EXT2_CLUSTERS:
        r = ext2[cluster]
        base = f"ext2.seqwrite_{mib}m_cluster{cluster}"
        e = r["ext2fs"]
        secs = r["write_s"] + r["sync_s"]
        out += [
            row(f"{base}_data_returns", r["vm"]["data_returns"], "msgs"),
            row(f"{base}_disk_writes", e["disk_writes"], "writes"),
            row(f"{base}_mib_per_s", mib / secs, "MiB/s"),
            row(f"info.{base[5:]}_ext2fs_data_returns", e["data_returns"], "msgs"),
            row(f"info.{base[5:]}_blocks_written", e["blocks_written"], "blocks"),
            row(f"info.{base[5:]}_pageouts", r["vm"]["pageouts"], "pages"),
        ]
    lo, hi = EXT2_CLUSTERS[0], EXT2_CLUSTERS[-1]
    w_lo, w_hi = ext2[lo]["ext2fs"]["disk_writes"], ext2[hi]["ext2fs"]["disk_writes"]
    out.append(row(f"ext2.seqwrite_{mib}m_disk_write_ratio", w_lo / max(1, w_hi), "x"))
    return out
