"""What every inspection tool shares: its task in the cluster of a run directory (with
host_priv when it needs it), TASK arguments resolved to a task and its kernel port,
Mach return codes as people read them, and one way to end (a clear message on stderr
and a non-zero exit status).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lab.client import ClusterClient, ClusterError, err_name
from lab.rundir import RunDir, RunDirError, unix_listening
from protocol import logs
from protocol.defs import fs as F
from protocol.defs import machemu as X
from protocol.defs.mach_port import mach_port_deallocate
from protocol.kern_return import MachError

CALL_TIMEOUT = 15.0  # seconds any one call of a tool may take
EXIT_ERROR = 1       # a tool's exit status for a clear failure (bad argument, no cluster)

# The Hurd's error_t names for the errnos fs servers return (protocol.defs.fs).
FS_ERRNO_NAMES = {getattr(F, n): n for n in dir(F)
              if n.startswith("E") and isinstance(getattr(F, n), int)}


class ToolError(Exception):
    """A failure the tool reports in one line and exits non-zero for."""


def code_text(code: int) -> str:
    """A Mach, MIG, netname or Hurd fs return code by name ("ENOENT", "KERN_NO_SPACE")."""
    return FS_ERRNO_NAMES.get(code) or err_name(code)


def mach_error(e: MachError, what: str) -> ToolError:
    """A ToolError saying that ``what`` failed with ``e``'s code."""
    return ToolError(f"{what}: {code_text(e.code)}")


class Session:
    """The task a tool runs as, in the cluster of ``run_dir`` (default ./run, or
    $MACHEMU_RUN_DIR).  ``privileged``: the tool needs host_priv (the run directory's
    owner secret); without it a ToolError says why.  Usable as a context manager; the
    task leaves the kernel when it is closed."""

    def __init__(self, run_dir: str | None, tool: str, privileged: bool = False,
                 connect_timeout: float = 10.0):
        logs.setup(tool, os.devnull)  # the tool reports its failures itself, on stderr
        try:
            rd = RunDir.resolve(run_dir)
        except RunDirError as e:
            raise ToolError(str(e)) from None
        if not rd.path.is_dir():
            raise ToolError(f"no run directory {rd}")
        self.run_dir = rd
        try:
            self.client = ClusterClient(rd, connect_timeout, name=tool, role="tool")
        except ClusterError as e:
            raise ToolError(str(e)) from None
        endpoint = self.client.endpoint
        if endpoint.startswith("ipc://") and not unix_listening(Path(endpoint[6:])):
            raise ToolError(f"no kernel listening on {endpoint} (is a cluster running in "
                            f"{rd}?)")
        try:
            self.rt = self.client.connect()
        except ClusterError as e:
            raise ToolError(str(e)) from None
        self.tool = tool
        self._ports: list[int] = []
        if privileged and not self.rt.host_priv:
            self.close()
            raise ToolError(self.no_priv_reason())

    def no_priv_reason(self) -> str:
        """Why this task has no host_priv, as a sentence."""
        secret = self.run_dir.file("host_priv.secret")
        if not secret.exists():
            why = f"{secret} does not exist"
        elif not os.access(secret, os.R_OK):
            why = f"{secret} is not readable by this user"
        else:
            why = f"the kernel refused {secret} (not this kernel's secret)"
        return (f"{self.tool} shows other tasks' maps and ports: it needs the privileged "
                f"host port, given only to the cluster's owner; {why}")

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Give back the task ports this session took, and leave the kernel."""
        rt = getattr(self, "rt", None)
        if rt is not None and not rt.dead:
            for name in self._ports:
                try:
                    mach_port_deallocate(rt.task_self, name, timeout=CALL_TIMEOUT, rt=rt)
                except MachError:
                    pass
        self._ports = []
        self.client.close()
        self.rt = None

    def kernel_info(self) -> dict:
        """machemu_kernel_info (every task on host_priv, our own without)."""
        info = self.client.kernel_info(timeout=CALL_TIMEOUT)
        if info is None:
            raise ToolError(f"the kernel at {self.client.endpoint} did not answer "
                            "machemu_kernel_info")
        return info

    def pages(self, routine, task_port: int, count: int):
        """Every reply of a paged host_priv routine on a task (machemu_vm_map_info,
        machemu_space_info: ``count`` items each), following its ``next`` from 0."""
        cursor = 0
        while True:
            try:
                info = routine(self.rt.host_priv, task_port, cursor, count,
                               timeout=CALL_TIMEOUT, rt=self.rt)
            except MachError as e:
                raise mach_error(e, routine.name) from None
            yield info
            cursor = info["next"]
            if not cursor:
                return

    def tasks(self) -> list[dict]:
        """The kernel's tasks (id, name, role, pid, names, map_entries...), this
        session's own task left out."""
        return [t for t in self.kernel_info().get("tasks", [])
                if t["id"] != self.rt.task_id]

    def task(self, spec: str) -> tuple[dict, int]:
        """TASK as a tool's argument names it — a task name, a pid, a task id, or
        ``pid:N`` / ``id:N`` to say which a number is — as (the kernel's task row, a send
        right to its kernel port in this task).  A bare number is a pid when a task has
        that pid, else a task id; a name that several tasks have is the newest."""
        row = resolve_task(self.tasks(), spec)
        try:
            port = X.machemu_task_for_id(self.rt.host_priv, row["id"], X.TASK_BY_ID,
                                         timeout=CALL_TIMEOUT, rt=self.rt)
        except MachError as e:
            raise ToolError(f"task {spec!r} ({row['name']}, id {row['id']}): "
                            f"{code_text(e.code)} (gone?)") from None
        self._ports.append(port)
        return row, port


def find_tasks(tasks: list[dict], spec: str) -> list[dict]:
    """Every row of ``tasks`` (machemu_kernel_info's) that TASK ``spec`` names: ``pid:N``,
    ``id:N``, a number (a pid, else a task id) or a name; ToolError if ``spec`` is
    malformed, ToolError with the names there are if it names none."""
    spec = spec.strip()
    kind, _, value = spec.partition(":")
    if value and kind in ("pid", "id"):
        if not value.isdigit():
            raise ToolError(f"{spec!r}: {kind} must be a number")
        key = "pid" if kind == "pid" else "id"
        found = [t for t in tasks if t.get(key) == int(value)]
    elif spec.isdigit():
        n = int(spec)
        found = [t for t in tasks if t.get("pid") == n] or [t for t in tasks if t["id"] == n]
    else:
        found = [t for t in tasks if t.get("name") == spec]
    if not found:
        names = sorted({t["name"] for t in tasks})
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise ToolError(f"no task {spec!r} in the kernel (tasks: {shown or 'none'})")
    return found


def resolve_task(tasks: list[dict], spec: str) -> dict:
    """The task TASK ``spec`` names (find_tasks; the newest of several)."""
    return max(find_tasks(tasks, spec), key=lambda t: t["id"])


TASK_HELP = "TASK: a task name (the newest of that name), a pid, a task id, or pid:N / id:N."


def tool_parser(prog: str, description: str, epilog: str = "", task: bool = False,
                json_help: str = "one JSON object") -> argparse.ArgumentParser:
    """The argument parser of a tool with what all of them take: --run-dir, --json and,
    if ``task``, TASK first (its forms said in the epilog)."""
    ap = argparse.ArgumentParser(prog=prog, description=description,
                                 epilog=" ".join(filter(None, (TASK_HELP if task else "",
                                                               epilog))))
    if task:
        ap.add_argument("task", metavar="TASK")
    ap.add_argument("--run-dir", help="run directory (default ./run, or $MACHEMU_RUN_DIR)")
    ap.add_argument("--json", action="store_true", help=json_help)
    return ap


def run_tool(prog: str, main, argv=None) -> int:
    """Run a tool's ``main(argv)``: its exit status; a ToolError (or a cluster that
    went away) is one line on stderr and EXIT_ERROR, Ctrl-C exits 130, a closed pipe
    (``vminfo ... | head``) ends quietly."""
    try:
        return main(argv)
    except ToolError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return EXIT_ERROR
    except MachError as e:
        print(f"{prog}: {code_text(e.code)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout's reader is gone: nothing more to say, and nothing to flush at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
