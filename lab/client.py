"""A task of a lab tool attached to a running cluster.

A lab tool (the load generator, later ``launch status`` and the inspection tools) finds the
cluster of a run directory through ``lab.rundir`` (cluster.json, the kernel's ready file
or its socket), becomes a task of its kernel, and asks it and the name server what it
needs: the kernel's own report (``machemu_kernel_info``), a server's port
(``netname_look_up``), the pid of a cluster process.
"""

from __future__ import annotations

import os

import psutil

from lab.rundir import CLUSTER_JSON, RunDir
from protocol import runtime
from protocol.defs.machemu import machemu_kernel_info
from protocol.defs.netname import netname_look_up
from protocol.host_secret import HostSecretError
from protocol.kern_return import MachError, code_name

# netname's own return codes (CMU Mach 3 netname_defs.h), which code_name does not know.
NETNAME_CODES = {2801: "NETNAME_NOT_YOUR_ENTRY", 2802: "NETNAME_NOT_CHECKED_IN",
                 2803: "NETNAME_INVALID_PORT"}


def err_name(code: int) -> str:
    """The name of a Mach, MIG or netname return code ("MACH_RCV_TIMED_OUT", ...)."""
    return NETNAME_CODES.get(code) or code_name(code)


class ClusterError(Exception):
    """The cluster (kernel, or the server a tool needs) could not be reached."""


def connect_task(endpoint: str, name: str, timeout: float, role: str = "client",
                 secret: bytes | None = None) -> runtime.TaskRuntime:
    """Make this process a task named ``name`` of the kernel at ``endpoint`` (with the
    owner's ``secret``: one holding host_priv); returns its TaskRuntime, or raises
    ClusterError when there is no kernel or it does not answer within ``timeout``
    seconds."""
    if endpoint.startswith("ipc://") and not os.path.exists(endpoint[len("ipc://"):]):
        raise ClusterError(f"no kernel at {endpoint} (socket missing)")
    try:
        return runtime.TaskRuntime(endpoint, name, role=role, connect_timeout=timeout,
                                   secret=secret)
    except MachError as e:
        raise ClusterError(f"kernel at {endpoint} not answering: {err_name(e.code)}") from None


def reset_reply_port(rt: runtime.TaskRuntime):
    """After an RPC gave up waiting, drop this thread's reply port (MIG's
    mig_dealloc_reply_port) so a late reply cannot be taken for the next call's."""
    rt.thread_exit()


class ClusterClient:
    """The cluster of a run directory, reached through DIR/cluster.json (written by the
    launcher) or, without one, through the kernel's ready file or DIR/kernel.sock.

    ``connect`` makes this process a task of the kernel named ``name`` with ``role``;
    until then only ``info`` (cluster.json, {} without one) and ``endpoint`` are known.
    Usable as a context manager (closed on exit).
    """

    def __init__(self, run_dir: str | os.PathLike | RunDir, connect_timeout: float = 10.0,
                 name: str = "lab", role: str = "client"):
        self.run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.connect_timeout = connect_timeout
        self.name, self.role = name, role
        cj = self.run_dir.file(CLUSTER_JSON)
        info = self.run_dir.read_cluster()
        if info is None and cj.exists():
            raise ClusterError(f"{cj}: unreadable")
        self.info: dict = info or {}
        try:
            self.endpoint = self.run_dir.kernel_endpoint()
        except (KeyError, TypeError, ValueError) as e:
            raise ClusterError(f"{cj}: no kernel endpoint ({e})") from None
        self.rt: runtime.TaskRuntime | None = None

    def __enter__(self) -> "ClusterClient":
        return self

    def __exit__(self, *exc):
        self.close()

    def connect(self, name: str | None = None) -> runtime.TaskRuntime:
        """Become a task of the cluster's kernel (named ``name``, default the client's
        name), privileged (host_priv) with the run directory's secret if it has one;
        returns its TaskRuntime, or raises ClusterError."""
        try:
            secret = self.run_dir.host_secret()
        except HostSecretError as e:
            raise ClusterError(str(e)) from None
        self.rt = connect_task(self.endpoint, name or self.name, self.connect_timeout,
                               self.role, secret)
        return self.rt

    def close(self):
        """Leave the kernel (if connected)."""
        if self.rt is not None:
            self.rt.close()
            self.rt = None

    def kernel_info(self, timeout: float = 10.0) -> dict | None:
        """machemu_kernel_info (the kernel's pid, RSS, tasks, statistics: every task's
        with host_priv, only our own without), or None when the kernel does not answer."""
        try:
            return machemu_kernel_info(self.rt.host_priv or self.rt.host, timeout=timeout,
                                       rt=self.rt)
        except MachError:
            return None

    def look_up(self, name: str, timeout: float = 10.0) -> int:
        """netname_look_up of a server's port: a send right name in this task; raises
        ClusterError when the name server does not know ``name``."""
        try:
            return netname_look_up(self.rt.name_server, "", name, timeout=timeout, rt=self.rt)
        except MachError as e:
            raise ClusterError(f"server {name!r} not found in the name server: "
                               f"{err_name(e.code)}") from None

    def kernel_pid(self) -> int | None:
        """The kernel's pid: cluster.json's, else the kernel's own report, else None."""
        pid = (self.info.get("kernel") or {}).get("pid")
        if pid:
            return int(pid)
        ki = self.kernel_info()
        return ki["kernel"]["pid"] if ki else None

    def process_pid(self, name: str) -> int | None:
        """A live cluster process's pid: cluster.json "processes", else the kernel's task
        list (the newest task of that name, not this process), else DIR/NAME.ready;
        None when none of them names a live process."""
        for p in self.info.get("processes") or []:
            if p.get("name") == name and p.get("pid") and psutil.pid_exists(int(p["pid"])):
                return int(p["pid"])
        ki = self.kernel_info()
        if ki:
            cands = [t for t in ki.get("tasks", []) if t.get("name") == name
                     and t.get("pid") and t["pid"] != os.getpid()
                     and psutil.pid_exists(t["pid"])]
            if cands:
                return max(cands, key=lambda t: t["id"])["pid"]
        pid = self.run_dir.ready_pid(name)
        if pid and psutil.pid_exists(pid):
            return pid
        return None
