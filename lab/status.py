"""What ``launch status`` shows of a running cluster: the kernel's view (tasks, ports,
counters, VM, name server) from ``machemu_kernel_info``, and threads, RSS and CPU (psutil)
of every process in cluster.json; as tables or as one JSON object.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil

from lab.rundir import RunDir, unix_listening
from lab.tools.output import human_bytes
from protocol.host_secret import HostSecretError


class StatusError(Exception):
    """No kernel to ask, or it did not answer; the message says which."""


def kernel_info(endpoint: str, secret: bytes | None = None) -> dict:
    """``machemu_kernel_info`` of the kernel at ``endpoint``, asked by a short-lived task
    "launch-status" (on host_priv, all tasks, given the owner's ``secret``; else only its
    own); StatusError if it cannot be reached or the call fails."""
    from protocol.defs.machemu import machemu_kernel_info
    from protocol.kern_return import MachError
    from protocol.runtime import TaskRuntime

    try:
        rt = TaskRuntime(endpoint, name="launch-status", role="status", connect_timeout=10,
                         secret=secret)
    except MachError as e:
        raise StatusError(f"kernel at {endpoint} does not answer: {e}") from None
    try:
        if secret is not None and not rt.host_priv:
            raise StatusError("the kernel refused host_priv: the run directory's secret is"
                              " not this kernel's")
        return machemu_kernel_info(rt.host_priv or rt.host, timeout=15, rt=rt)
    except MachError as e:
        raise StatusError(f"machemu_kernel_info failed: {e}") from None
    finally:
        rt.thread_exit()
        rt.close()


def proc_info(entries: list[dict]) -> list[dict]:
    """Threads, RSS and CPU of each process of ``entries`` (cluster.json's), CPU% over a
    short sample; ``alive`` False for those gone."""
    out, handles = [], []
    for e in entries:
        row = {"name": e.get("name"), "role": e.get("role"), "pid": e.get("pid"),
               "alive": False}
        try:
            p = psutil.Process(int(e["pid"]))
            if p.status() != psutil.STATUS_ZOMBIE:
                p.cpu_percent(None)
                handles.append((row, p))
                row["alive"] = True
        except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
            pass
        out.append(row)
    if handles:
        time.sleep(0.25)  # cpu_percent needs two samples
    for row, p in handles:
        try:
            with p.oneshot():
                t = p.cpu_times()
                row.update(threads=p.num_threads(), rss=p.memory_info().rss,
                           cpu_seconds=round(t.user + t.system, 2),
                           cpu_percent=p.cpu_percent(None))
        except psutil.NoSuchProcess:
            row["alive"] = False
    return out


def collect(rd: RunDir, all_ports: bool = False) -> dict:
    """The status of the cluster in ``rd``: run_dir, endpoint, kernel, tasks, ports (only
    busy ones unless ``all_ports``), stats, vm, processes.  StatusError if no kernel
    listens there or it does not answer."""
    from protocol.runtime import kernel_endpoint

    cluster = rd.read_cluster()
    endpoint = kernel_endpoint(rd.path)
    if endpoint.startswith("ipc://") and not unix_listening(Path(endpoint[6:])):
        raise StatusError(f"no kernel listening on {endpoint}"
                          f" (is a cluster running in {rd}?)")
    try:
        secret = rd.host_secret()
    except HostSecretError as e:
        raise StatusError(str(e)) from None
    info = kernel_info(endpoint, secret)
    ports = info.get("ports", [])
    if not all_ports:
        ports = [p for p in ports
                 if p["depth"] or p["waiting_receivers"] or p["blocked_senders"]]
    entries = list((cluster or {}).get("processes", []))
    if cluster and cluster.get("launcher_pid"):
        entries.append({"name": "launch", "role": "launcher", "pid": cluster["launcher_pid"]})
    return {"run_dir": str(rd), "endpoint": endpoint, "kernel": info.get("kernel", {}),
            "tasks": info.get("tasks", []), "ports": ports, "all_ports": bool(all_ports),
            "stats": info.get("stats", {}), "vm": info.get("vm", {}),
            "processes": proc_info(entries)}


def to_json(result: dict) -> str:
    """``result`` as ``launch status --json`` prints it."""
    return json.dumps(result, indent=2, sort_keys=True)


def render(result: dict) -> str:
    """``result`` as the tables ``launch status`` prints."""
    out = []
    k, endpoint = result["kernel"], result["endpoint"]
    out.append(f"kernel {endpoint}  pid {k.get('pid')}  uptime {k.get('uptime')}s"
               f"  rss {human_bytes(k.get('rss', 0))}")
    if k.get("netnames"):
        out.append("  netnames: " + ", ".join(k["netnames"]))
    tasks = sorted(result["tasks"], key=lambda t: t["id"])
    out.append(f"\ntasks ({len(tasks)})")
    w = max([4, *(len(t["name"]) for t in tasks)])
    out.append(f"  {'ID':>4}  {'NAME':<{w}}  {'ROLE':<8} {'PID':>7} {'NAMES':>6} {'RECV':>5}"
               f" {'SUSP':>5} {'TRAPS':>9} {'MAP':>6}")
    for t in tasks:
        out.append(f"  {t['id']:>4}  {t['name']:<{w}}  {t['role']:<8} {t['pid']:>7}"
                   f" {t['names']:>6} {t.get('receive_rights', 0):>5} {t['suspended']:>5}"
                   f" {t.get('traps', 0):>9} {t.get('map_entries', 0):>6}")
    ports = result["ports"]
    what = "all" if result["all_ports"] else "non-idle"
    out.append(f"\nports ({what}: {len(ports)})")
    if ports:
        out.append(f"  {'TASK':<{w}}  {'NAME':>6}  {'LABEL':<14} {'QUEUE':>7} {'WAITING':>8}"
                   f" {'BLOCKED':>8} {'SRIGHTS':>8}")
        for p in ports:
            q = f"{p['depth']}/{p['qlimit']}"
            out.append(f"  {p['task']:<{w}}  {p['name']:>6}  {str(p.get('label') or ''):<14}"
                       f" {q:>7} {p['waiting_receivers']:>8} {p['blocked_senders']:>8}"
                       f" {p.get('srights', 0):>8}")
    if vm := result.get("vm"):
        out.append(
            f"\nvm: {vm['physical_pages']} pages: free {vm['free_count']}, active "
            f"{vm['active_count']}, inactive {vm['inactive_count']}, wired {vm['wire_count']}"
            f"; dirty {vm['dirty_count']}, laundry {vm['laundry_count']}")
        out.append(
            f"    faults {vm['faults']}, zero fills {vm['zero_fill_count']}, pageins "
            f"{vm['pageins']}, pageouts {vm['pageouts']} ({vm['data_returns']} data_returns), "
            f"data_requests {vm['data_requests']}, objects {vm['objects']} "
            f"({vm['cached_objects']} cached; cache lookups {vm['lookups']}, hits {vm['hits']})")
        out.append(
            f"    pageout policy {vm.get('policy', 'classic')}: potentially dirty "
            f"{vm.get('potentially_dirty', 0)}, writers sleeping on the dirty limit "
            f"{vm.get('dirty_sleeping', 0)} ({vm.get('dirty_sleeps', 0)} sleeps, "
            f"{vm.get('dirty_sleep_seconds', 0):.1f} s), unlock hints "
            f"{vm.get('unlock_hints', 0)}, writer pauses {vm.get('dirty_pauses', 0)} "
            f"({vm.get('dirty_pause_ms', 0):.0f} ms), background writeback "
            f"{vm.get('background_writeback_pages', 0)} pages, page waits "
            f"{vm.get('page_waits', 0)}")
        out.append(
            f"      laundry internal {vm.get('laundry_internal', 0)}, external "
            f"{vm.get('laundry_external', 0)} ({vm.get('returns_in_flight', 0)} data_returns "
            f"in flight), external pages {vm.get('external_count', 0)} (limit "
            f"{vm.get('external_limit', 0)}, target {vm.get('external_target', 0)}), free "
            f"wanted {vm.get('free_wanted', 0)}, burst wait {vm.get('burst_wait_ms', 0)} ms, "
            f"pauses {vm.get('pauses', 0)}, evictions {vm.get('evictions', 0)}, double paged "
            f"{vm.get('double_paged', 0)}, paused allocations {vm.get('paused_allocations', 0)}")
    out.append("\nkernel counters")
    for key in sorted(result["stats"]):
        out.append(f"  {key:<24} {result['stats'][key]}")
    if procs := result["processes"]:
        out.append("\nprocesses")
        w = max([4, *(len(str(p["name"])) for p in procs)])
        out.append(f"  {'NAME':<{w}}  {'ROLE':<8} {'PID':>7} {'THREADS':>8} {'RSS':>10}"
                   f" {'CPU s':>8} {'CPU %':>6}")
        for p in procs:
            if not p["alive"]:
                out.append(f"  {p['name']:<{w}}  {p['role']:<8} {p['pid']:>7}  (gone)")
                continue
            out.append(f"  {p['name']:<{w}}  {p['role']:<8} {p['pid']:>7} {p['threads']:>8}"
                       f" {human_bytes(p['rss']):>10} {p['cpu_seconds']:>8}"
                       f" {p['cpu_percent']:>6}")
    return "\n".join(out)
