"""machemu cluster launcher: start a kernel and its servers, supervise them, stop them.

  launch cluster [--run-dir DIR] [--config cluster.toml] [--threads multithread|workers]
  launch status  [--run-dir DIR] [--all] [--json] [--watch]
  launch stop    [--run-dir DIR]
  launch run     [--run-dir DIR] [--duration S] [--tasks N] [--anon-factor F]
                 [--config F] [--threads T]

``cluster`` runs a lab.cluster.Cluster of a config (lab.config) in the foreground with the
launcher's signal handling: Ctrl-C, SIGTERM, SIGHUP or ``launch stop`` stop it cleanly;
a server that dies makes the exit status 1, a dead kernel ends the cluster.

``run`` is the main job.  First the headline experiment (--experiment, default storm:
E1) runs --quick with its headline configurations (E1: classic-page and advisory;
--all-configurations for every one), each on a fresh cluster of its own, and prints its
table, findings and report path.  Then the default cluster with a small physical memory
(RUN_KERNEL, under any [kernel] table of --config) and three workloads one after the
other, each a ``scripts/loadgen`` process: ``anon`` (anonymous memory of --anon-factor x
physical memory written, paged out to the default pager, paged back and verified),
``mmap`` (memfs files mapped, written, verified through io_read and a fresh mapping) and
``flood`` (RPCs to the demo server for --duration seconds).  It fails if the experiment
or any workload fails.

``stop`` signals the launcher of DIR/launch.pid; without one (or if it does not finish)
it stops the processes of DIR/cluster.json itself.  ``status``: lab.status; its live
view (``--watch``): lab.tools.watch.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Callable

import psutil

from lab import status as st
from lab.cluster import (
    KERNEL_STOP_TIMEOUT,
    KILL_TIMEOUT,
    SERVER_STOP_TIMEOUT,
    Cluster,
    ClusterError,
    live_launcher,
    recorded_processes,
)
from lab.config import RUN_KERNEL, ConfigError, load_config
from lab.process import ROOT, describe_exit, wait_gone
from lab.rundir import RunDir, RunDirError
from protocol import logs

LAUNCHER_STOP_TIMEOUT = 2 * (SERVER_STOP_TIMEOUT + KERNEL_STOP_TIMEOUT + KILL_TIMEOUT)
WORKLOAD_GRACE = 120.0  # beyond --duration before the workload counts as hung


class LaunchError(Exception):
    """Something the user must fix; printed without a traceback."""


def say(*args):
    print(*args, flush=True)


def warn(*args):
    print("launch:", *args, file=sys.stderr, flush=True)


def open_cluster(args, fresh: bool = False) -> Cluster:
    """The cluster of a command's --config, --run-dir and --threads, its run directory
    prepared and the launcher's log (DIR/launch.log) opened."""
    kernel_table, servers = load_config(args.config)
    rd = RunDir.resolve(args.run_dir)
    cl = Cluster(rd, kernel_table, servers, args.threads, warn=warn)
    cl.prepare(fresh)  # before the log is opened: a fresh run removes the old one
    cl.log = logs.setup("launch", rd.log_file("launch"))
    return cl


def print_summary(cl: Cluster):
    """Where everything of a ready cluster is."""
    say(f"machemu cluster ready in {cl.run_dir} (launcher pid {os.getpid()})")
    say(f"  kernel endpoint  {cl.endpoint}")
    w = max(len(c.name) for c in cl.children)
    say(f"  {'NAME':<{w}}  {'ROLE':<8} {'PID':>7}  LOG")
    for c in cl.children:
        say(f"  {c.name:<{w}}  {c.role:<8} {c.pid:>7}  {c.log}")
    say(f"  stdout/stderr of each process: {cl.run_dir}/NAME.out;"
        f" launcher log: {cl.run_dir}/launch.log")


# ---------------------------------------------------------------- cluster, run


def run_supervised(cl: Cluster, body: Callable[[Cluster], None]) -> bool:
    """Start ``cl`` under the launcher's signal handling, print where it is, run
    ``body(cl)``, and stop the cluster whatever happens; False if it did not start (the
    reason warned)."""
    cl.install_signals()
    try:
        try:
            cl.start()
        except ClusterError as e:
            warn(str(e))
            return False
        print_summary(cl)
        body(cl)
    finally:
        cl.check_children()
        cl.stop()
        cl.restore_signals()
    return True


def warn_failures(header: str, failures: list[str]):
    warn(header)
    for f in failures:
        warn("  " + f)


def cmd_cluster(args) -> int:
    def supervise(cl: Cluster):
        say(f"stop with Ctrl-C or: {sys.argv[0]} stop --run-dir {cl.run_dir}")
        cl.supervise()

    cl = open_cluster(args)
    if not run_supervised(cl, supervise):
        return 1
    if cl.failures:
        warn_failures(f"{len(cl.failures)} process(es) died unexpectedly:", cl.failures)
        return 1
    say("cluster stopped")
    return 0


def run_jobs(args, run_dir) -> list[tuple[str, list[str], float | None]]:
    """The main job's workloads: (name, argv, duration) each."""
    base = [sys.executable, str(ROOT / "scripts" / "loadgen"), "--run-dir", str(run_dir)]
    tasks = ["--tasks", str(args.tasks)]
    jobs = []
    if args.anon_factor > 0:
        jobs.append(("anon", base + ["anon", "--factor", str(args.anon_factor), *tasks], None))
    # memfs files, mapped, written, verified through io_read and a fresh mapping
    jobs.append(("mmap", base + ["mmap", *tasks, "--files", "2", "--file-mib", "1"], None))
    jobs.append(("flood", base + ["flood", "--duration", str(args.duration), *tasks],
                 args.duration))
    return jobs


INTERRUPTED = 128 + signal.SIGINT  # a headline stopped by Ctrl-C: no checks after it


def cmd_run(args) -> int:
    """The main job: the headline experiment (run_headline), then the default cluster
    with a small memory and the anon workload (memory pressure through the default
    pager), the mmap workload (memfs files through the kernel's page cache) and the flood
    workload (RPCs).  Returns the first failure's status (the experiment's first)."""
    loadgen = ROOT / "scripts" / "loadgen"
    if not loadgen.exists():
        raise LaunchError(f"{loadgen} not found")
    # The run directory is prepared first: a busy one (a launcher or kernel there) is
    # refused before minutes of experiment, and a fresh run's old logs go now.
    cl = open_cluster(args, fresh=args.run_dir is None and not os.environ.get("MACHEMU_RUN_DIR"))
    headline = run_headline(args, cl.run_dir) if args.experiment else 0
    if headline == INTERRUPTED:
        return headline
    status = run_checks(args, cl)
    return headline or status


def run_checks(args, cl: Cluster) -> int:
    """The main job's IPC and VM checks: the anon, mmap and flood workloads on the
    default cluster ``cl`` (prepared); the first failure's status."""
    cl.kernel_table = {**RUN_KERNEL, **(cl.kernel_table or {})}  # the config's win
    statuses: list[tuple[str, int]] = []

    def workloads(cl: Cluster):
        for name, argv, duration in run_jobs(args, cl.run_dir):
            say(f"workload {name}: " + " ".join(argv[1:]))
            code = cl.run_workload(name, argv, (duration or 0) + WORKLOAD_GRACE)
            say(f"workload {name}: {describe_exit(code)}")
            statuses.append((name, code))
            if cl.stop_signal is not None or not cl.kernel.alive():
                break

    if not run_supervised(cl, workloads):
        return 1
    failed = [c for _, c in statuses if c != 0]
    expected = 3 if args.anon_factor > 0 else 2
    status = failed[0] if failed else (0 if len(statuses) == expected else 1)
    # One line for the whole job (what callers look for), then each workload's.
    say(f"workload: {describe_exit(status)} ("
        + ", ".join(f"{n} {describe_exit(c)}" for n, c in statuses) + ")")
    if status < 0:
        status = 128 - status
    if status == 0 and cl.failures:
        warn_failures("workloads succeeded but cluster processes died:", cl.failures)
        return 1
    say("cluster stopped")
    return status


def headline_argv(args, run_dir) -> list[str]:
    """``scripts/experiment run NAME --quick --out RUN_DIR/experiment`` with a --config
    for each of the experiment's ``headline`` configurations (E1: classic-page and
    advisory, the seed's comparison); none, so all of them, with --all-configurations or
    when the experiment names none (or is unknown: the experiment CLI says so)."""
    from lab.experiments.base import find

    argv = [sys.executable, str(ROOT / "scripts" / "experiment"), "run", args.experiment,
            "--quick", "--out", str(Path(run_dir) / "experiment")]
    cls = find(args.experiment)
    if cls is not None and not args.all_configurations:
        for name in cls.headline:
            argv += ["--config", name]
    return argv


def run_headline(args, run_dir) -> int:
    """The main job's first part: headline_argv run (each configuration on a cluster of
    its own), its table and findings printed as they come, then the report's path; its
    exit status (INTERRUPTED after Ctrl-C)."""
    import subprocess

    argv = headline_argv(args, run_dir)
    say(f"experiment {args.experiment} (--quick): " + " ".join(argv[1:]))
    try:
        code = subprocess.call(argv, cwd=ROOT)
    except KeyboardInterrupt:
        code = INTERRUPTED
    report = Path(run_dir) / "experiment" / "report.md"
    say(f"experiment {args.experiment}: {describe_exit(code)}; report {report}")
    return code if code >= 0 else 128 - code


# ---------------------------------------------------------------- stop, status


def _signal(p: psutil.Process, sig):
    try:
        p.send_signal(sig)
    except psutil.NoSuchProcess:
        pass


def cmd_stop(args) -> int:
    """Ask the launcher to stop its cluster; if there is none, or it does not finish,
    stop the processes named in cluster.json (servers first, then the kernel)."""
    rd = RunDir.resolve(args.run_dir)
    snapshot = rd.read_cluster()
    launcher = live_launcher(rd)
    if launcher is None and snapshot is None:
        warn(f"no cluster running in {rd}")
        return 1
    if launcher is not None:
        say(f"stopping launcher pid {launcher.pid} in {rd}")
        _signal(launcher, signal.SIGTERM)
        if wait_gone([launcher], LAUNCHER_STOP_TIMEOUT):
            warn(f"launcher pid {launcher.pid} still running after"
                 f" {LAUNCHER_STOP_TIMEOUT:.0f}s: SIGKILL, then stopping its processes")
            _signal(launcher, signal.SIGKILL)
            wait_gone([launcher], KILL_TIMEOUT)
        elif snapshot is None or not recorded_processes(snapshot, rd):
            say("stopped")
            return 0
        else:
            warn("the launcher exited but processes of its cluster remain")
    if snapshot is None:
        return 1
    procs = recorded_processes(snapshot, rd)
    servers = [p for e, p in procs if e.get("role") != "kernel"]
    kernels = [p for e, p in procs if e.get("role") == "kernel"]
    for group, timeout in ((servers, SERVER_STOP_TIMEOUT), (kernels, KERNEL_STOP_TIMEOUT)):
        for p in group:
            _signal(p, signal.SIGTERM)
        for p in wait_gone(group, timeout):
            warn(f"pid {p.pid} did not stop within {timeout:.0f}s: SIGKILL")
            _signal(p, signal.SIGKILL)
        alive = wait_gone(group, KILL_TIMEOUT)
        if alive:
            warn("still running: " + " ".join(str(p.pid) for p in alive))
            return 1
    rd.remove_cluster_files()
    say(f"stopped {len(procs)} process(es) of {rd}")
    return 0


def cmd_status(args) -> int:
    if args.watch:
        from lab.tools.watch import cli_watch

        return cli_watch(args.run_dir, args.interval, args.count, args.json)
    rd = RunDir.resolve(args.run_dir)
    logs.setup("launch-status", os.devnull)  # failures are reported below, on stderr
    try:
        result = st.collect(rd, args.all)
    except st.StatusError as e:
        warn(str(e))
        return 1
    print(st.to_json(result) if args.json else st.render(result))
    return 0


# ---------------------------------------------------------------- command line


def main(argv=None) -> int:
    """``launch`` with ``argv`` (default sys.argv[1:]); returns its exit status."""
    ap = argparse.ArgumentParser(
        prog="launch", description="Start, inspect and stop a machemu cluster.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def run_dir_arg(p, help_default="./run"):
        p.add_argument("--run-dir", help=f"run directory (default {help_default})")

    def threads_arg(p):
        p.add_argument("--threads", choices=["multithread", "workers"],
                       help="libports thread model passed to every server")

    p = sub.add_parser("cluster", help="start a cluster and supervise it until stopped")
    run_dir_arg(p)
    p.add_argument("--config", help="cluster TOML: [kernel] table, [[server]] list")
    threads_arg(p)
    p.set_defaults(fn=cmd_cluster)

    p = sub.add_parser("stop", help="stop the cluster of a run directory")
    run_dir_arg(p)
    p.set_defaults(fn=cmd_stop)

    p = sub.add_parser("status", help="tasks, ports, counters and processes of a cluster")
    run_dir_arg(p)
    p.add_argument("--all", action="store_true", help="list idle ports too")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--watch", action="store_true",
                   help="a live view refreshed every --interval seconds (Ctrl-C quits)")
    p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("run", help="the headline experiment (E1 --quick: classic-page and "
                                   "advisory), then the default cluster (small memory) "
                                   "with the anon, mmap and flood workloads")
    run_dir_arg(p, "a fresh ./run")
    p.add_argument("--duration", type=float, default=4.0,
                   help="seconds of flood (default 4)")
    p.add_argument("--tasks", type=int, default=2, help="client tasks (default 2)")
    p.add_argument("--anon-factor", type=float, default=2.0, metavar="F",
                   help="anon uses F x the kernel's physical memory (default 2; 0: no anon)")
    p.add_argument("--config", help="cluster TOML, as for cluster")
    p.add_argument("--experiment", default="storm", metavar="NAME",
                   help="the headline experiment run --quick before the workloads "
                        "(default storm, E1; see scripts/experiment list)")
    p.add_argument("--no-experiment", dest="experiment", action="store_const", const="",
                   help="only the workloads")
    p.add_argument("--all-configurations", action="store_true",
                   help="run every configuration of the headline experiment (default: "
                        "its headline ones; E1: classic-page and advisory)")
    threads_arg(p)
    p.set_defaults(fn=cmd_run)

    args = ap.parse_args(argv)
    if args.cmd == "run" and (args.duration <= 0 or args.tasks <= 0 or args.anon_factor < 0):
        ap.error("--duration and --tasks must be positive, --anon-factor not negative")
    try:
        return args.fn(args)
    except (LaunchError, ConfigError, RunDirError, ClusterError) as e:
        warn(str(e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
