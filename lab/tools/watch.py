"""``scripts/launch status --watch``: a live view of a running cluster, refreshed every
second, as circus-top and htop show theirs: the tasks with their processes' threads,
RSS and CPU and their map entries; the pager ports' queues (the data_returns and
data_requests the kernel queued to each pager task); the pageout counters and rates.

On a terminal it is drawn with rich and ends cleanly on Ctrl-C; otherwise a plain text
frame is printed per refresh, and ``--json`` prints one JSON line per refresh.  It
needs host_priv (every task's view), as ``launch status`` does.
"""

from __future__ import annotations

import sys
import time

from lab.experiments.recorder import ProcessSet, proc_sample
from lab.tools.common import Session, run_tool
from lab.tools.output import human_bytes, print_json_line, terminal

RATE_KEYS = ("pageouts", "pageins", "data_returns", "data_requests", "faults",
             "zero_fill_count", "reactivations")
PAGEOUT_KEYS = ("free_count", "active_count", "inactive_count", "wire_count", "dirty_count",
                "potentially_dirty", "laundry_internal", "laundry_external",
                "returns_in_flight", "dirty_sleeping", "paused_allocations", "page_waits",
                "cached_objects")


class Processes:
    """The tasks' processes (a recorder ProcessSet, its psutil handles kept between
    refreshes) and their CPU seconds, so that CPU% is the share since the last one."""

    def __init__(self):
        self.set = ProcessSet()
        self.last: dict[int, tuple[float, float]] = {}  # pid -> (cpu seconds, when)

    def sample(self, pids: set[int]) -> dict[int, dict]:
        for label in set(self.set.fixed) - {str(p) for p in pids}:
            self.set.remove(label)
        for pid in pids:
            self.set.add(str(pid), pid)
        out = {}
        for h in self.set.current().values():
            d = proc_sample(h)
            if d is None:
                continue
            now = time.monotonic()
            prev = self.last.get(h.pid)
            d["cpu_percent"] = (round(100 * (d["cpu"] - prev[0]) / (now - prev[1]), 1)
                                if prev and now > prev[1] else None)
            self.last[h.pid] = (d["cpu"], now)
            out[h.pid] = d
        for pid in set(self.set.handles) - pids:  # tasks gone: forget their processes
            self.set.handles.pop(pid, None)
            self.last.pop(pid, None)
        return out


def pager_queues(ports: list[dict]) -> list[dict]:
    """Per task, its pager ports (receive rights that are a memory object's pager):
    how many, messages queued in all and in the deepest, senders blocked, threads
    waiting to receive."""
    by_task: dict[str, dict] = {}
    for p in ports:
        if not p.get("pager"):
            continue
        d = by_task.setdefault(p["task"], {"task": p["task"], "ports": 0, "queued": 0,
                                           "deepest": 0, "blocked": 0, "waiting": 0})
        d["ports"] += 1
        d["queued"] += p["depth"]
        d["deepest"] = max(d["deepest"], p["depth"])
        d["blocked"] += p["blocked_senders"]
        d["waiting"] += p["waiting_receivers"]
    return sorted(by_task.values(), key=lambda d: (-d["queued"], d["task"]))


class Frame:
    """One refresh: the kernel's info, the processes, rates since the last frame."""

    def __init__(self, session: Session, procs: Processes, prev: "Frame | None"):
        self.time = time.monotonic()
        info = session.kernel_info()
        self.kernel = info.get("kernel", {})
        self.vm = info.get("vm", {})
        own = session.rt.task_id
        self.tasks = sorted((t for t in info.get("tasks", []) if t["id"] != own),
                            key=lambda t: t["id"])
        self.procs = procs.sample({t["pid"] for t in self.tasks if t.get("pid")})
        self.pagers = pager_queues(info.get("ports", []))
        self.rates = {}
        if prev is not None and self.time > prev.time:
            dt = self.time - prev.time
            self.rates = {k: round((self.vm.get(k, 0) - prev.vm.get(k, 0)) / dt, 1)
                          for k in RATE_KEYS}

    def task_rows(self) -> list[list[str]]:
        rows = []
        for t in self.tasks:
            p = self.procs.get(t.get("pid"), {})
            cpu = p.get("cpu_percent")
            rows.append([str(t["id"]), t["name"], t["role"], str(t["pid"]),
                         str(p.get("threads", "-")),
                         human_bytes(p["rss"]) if "rss" in p else "-",
                         "-" if cpu is None else f"{cpu:.0f}",
                         str(t.get("map_entries", 0)), str(t["names"]),
                         str(t.get("receive_rights", 0)), str(t["suspended"])])
        return rows

    def pager_rows(self) -> list[list[str]]:
        return [[d["task"], str(d["ports"]), str(d["queued"]), str(d["deepest"]),
                 str(d["blocked"]), str(d["waiting"])] for d in self.pagers]

    def vm_rows(self) -> list[tuple[str, str]]:
        vm, r = self.vm, self.rates
        pages = vm.get("physical_pages", 0)

        def rate(k):
            return f" ({r[k]:g}/s)" if k in r else ""

        return [
            ("policy", f"{vm.get('policy', '?')}, {pages} pages"),
            ("free / active / inactive / wired",
             f"{vm.get('free_count')} / {vm.get('active_count')} / "
             f"{vm.get('inactive_count')} / {vm.get('wire_count')}"),
            ("dirty / potentially dirty",
             f"{vm.get('dirty_count')} / {vm.get('potentially_dirty', 0)}"),
            ("laundry internal / external",
             f"{vm.get('laundry_internal', 0)} / {vm.get('laundry_external', 0)}"),
            ("data_returns in flight", str(vm.get("returns_in_flight", 0))),
            ("pageouts", f"{vm.get('pageouts')}{rate('pageouts')}"),
            ("data_returns", f"{vm.get('data_returns')}{rate('data_returns')}"),
            ("pageins / data_requests",
             f"{vm.get('pageins')}{rate('pageins')} / {vm.get('data_requests')}"
             f"{rate('data_requests')}"),
            ("faults", f"{vm.get('faults')}{rate('faults')}"),
            ("writers sleeping", f"{vm.get('dirty_sleeping', 0)} "
                                 f"({vm.get('dirty_sleeps', 0)} sleeps)"),
            ("paused allocations / page waits",
             f"{vm.get('paused_allocations', 0)} / {vm.get('page_waits', 0)}"),
            ("objects (cached)", f"{vm.get('objects')} ({vm.get('cached_objects')})"),
        ]

    def title(self) -> str:
        k = self.kernel
        return (f"machemu  kernel pid {k.get('pid')}  up {k.get('uptime')} s  "
                f"rss {human_bytes(k.get('rss', 0))}  {len(self.tasks)} tasks  "
                f"{time.strftime('%H:%M:%S')}")

    def as_json(self) -> dict:
        return {"time": round(time.time(), 3), "kernel": self.kernel,
                "tasks": [{**t, **self.procs.get(t.get("pid"), {})} for t in self.tasks],
                "pager_queues": self.pagers,
                "vm": {k: self.vm.get(k) for k in PAGEOUT_KEYS + RATE_KEYS},
                "rates": self.rates}


TASK_HEADERS = ["ID", "TASK", "ROLE", "PID", "THR", "RSS", "CPU%", "MAP", "NAMES", "RECV",
                "SUSP"]
PAGER_HEADERS = ["PAGER TASK", "PORTS", "QUEUED", "DEEPEST", "BLOCKED", "WAITING"]


def render_rich(f: Frame):
    """The frame as rich renderables (tasks, pager queues, pageout)."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    def table(headers, title):
        t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
        for i, h in enumerate(headers):
            t.add_column(h, justify="left" if i < 1 or h in ("TASK", "ROLE") else "right")
        return t

    tasks = table(TASK_HEADERS, "tasks")
    for r in f.task_rows():
        tasks.add_row(*r)
    pagers = table(PAGER_HEADERS, "pager ports (queued: data_returns and requests)")
    for r in f.pager_rows() or [["(none)", "", "", "", "", ""]]:
        pagers.add_row(*r)
    vm = Table("pageout", "", title="vm", title_justify="left", box=box.SIMPLE_HEAD)
    for k, v in f.vm_rows():
        vm.add_row(k, v)
    bottom = Table.grid(padding=(0, 2))
    bottom.add_row(vm, pagers)
    return Group(Text(f.title() + "   (Ctrl-C to quit)", style="bold"), tasks, bottom)


def render_plain(f: Frame) -> str:
    from lab.experiments.report import plain_table

    out = [f.title(), plain_table(TASK_HEADERS, f.task_rows())]
    if f.pagers:
        out.append(plain_table(PAGER_HEADERS, f.pager_rows()))
    w = max(len(k) for k, _ in f.vm_rows())
    out += [f"{k:<{w}}  {v}" for k, v in f.vm_rows()]
    return "\n".join(out) + "\n"


def watch(run_dir: str | None, interval: float = 1.0, count: int | None = None,
          as_json: bool = False) -> int:
    """The live view until Ctrl-C (or ``count`` refreshes); its exit status (0 for
    Ctrl-C: the way to leave it)."""
    try:
        return _watch(run_dir, interval, count, as_json)
    except KeyboardInterrupt:
        return 0


def _watch(run_dir, interval, count, as_json) -> int:
    procs = Processes()
    with Session(run_dir, "launch-watch", privileged=True) as session:
        frame = Frame(session, procs, None)
        live = terminal() and not as_json
        if not live:
            n = 0
            while True:
                if as_json:
                    print_json_line(frame.as_json())
                else:
                    print(render_plain(frame), flush=True)
                n += 1
                if count is not None and n >= count:
                    return 0
                time.sleep(interval)
                frame = Frame(session, procs, frame)
        from rich.live import Live

        from lab.tools.output import console

        n = 0
        with Live(render_rich(frame), console=console(), auto_refresh=False,
                  vertical_overflow="crop") as view:
            while count is None or n < count:
                time.sleep(interval)
                frame = Frame(session, procs, frame)
                view.update(render_rich(frame), refresh=True)
                n += 1
    return 0


def cli_watch(run_dir, interval, count, as_json) -> int:
    """``launch status --watch``: watch() with the tools' error handling."""
    if interval <= 0:
        print("launch status: --interval must be positive", file=sys.stderr)
        return 2
    return run_tool("launch status", lambda _argv: watch(run_dir, interval, count, as_json))
