"""The run directory of a cluster: the one place the lab tools read and write its files.

Layout (DESIGN §2, README "Logs")::

    kernel.sock      the kernel's ipc:// endpoint (a Unix socket: the path must be short)
    kernel.ready     written by the kernel when it serves: its endpoint
    kernel.toml      the [kernel] table of the cluster config, passed as --config
    NAME.ready       written by a server when it serves: its pid
    NAME.log         a process's structlog JSON lines; NAME.out its stdout and stderr
    cluster.json     written by the launcher once all are ready: endpoint, processes
    launch.pid       the supervising launcher
    host_priv.secret the owner's secret (mode 0600): a task showing it to the kernel gets
                     host_priv (protocol.host_secret); made by ``prepare``

The kernel and the translators write their own ready files (they do not import ``lab``);
everything else here goes through this module.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from protocol import host_secret, runtime

SUN_PATH_LIMIT = 100  # sockaddr_un.sun_path is 108 bytes; keep a margin
CLUSTER_JSON = "cluster.json"
LAUNCH_PID = "launch.pid"
KERNEL_TOML = "kernel.toml"
KERNEL_SOCK = "kernel.sock"
# What a fresh run removes: last run's state, logs and outputs, nothing else.
FRESH_FILES = {CLUSTER_JSON, LAUNCH_PID, KERNEL_TOML, KERNEL_SOCK, host_secret.SECRET_FILE}
FRESH_SUFFIXES = (".log", ".out", ".ready")


class RunDirError(Exception):
    """A run directory that cannot be used (path too long, a cluster already there)."""


def write_atomic(path: Path, text: str):
    """Replace ``path`` with ``text`` so that a reader sees the old or the new whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_pid(path: Path) -> int | None:
    """The pid at the start of a file (NAME.ready, launch.pid), or None."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def unix_listening(path: Path) -> bool:
    """Whether something accepts connections on the Unix socket ``path``."""
    if not path.exists():
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


class RunDir:
    """One run directory (``path``), resolved to an absolute path."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path).resolve()

    def __repr__(self):
        return f"RunDir({str(self.path)!r})"

    def __str__(self):
        return str(self.path)

    def __fspath__(self):
        return str(self.path)

    @classmethod
    def resolve(cls, arg: str | os.PathLike | None = None, check: bool = True) -> "RunDir":
        """The run directory of a command: ``arg``, else $MACHEMU_RUN_DIR, else ./run;
        refused (RunDirError) if its kernel socket path would not fit a sockaddr_un."""
        rd = cls(arg or os.environ.get("MACHEMU_RUN_DIR") or "run")
        if check:
            rd.check_socket_path()
        return rd

    def check_socket_path(self):
        sock = str(self.socket)
        n = len(sock.encode())
        if n > SUN_PATH_LIMIT:
            raise RunDirError(
                f"run directory too long for an ipc:// endpoint: {sock} is {n} bytes, Unix"
                f" socket paths hold about {SUN_PATH_LIMIT}; use a short one, e.g."
                " --run-dir $(mktemp -d /tmp/mxXXXX)")

    # ------------------------------------------------------------ files

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def socket(self) -> Path:
        return self.path / KERNEL_SOCK

    def ready_file(self, name: str) -> Path:
        return self.path / f"{name}.ready"

    def log_file(self, name: str) -> Path:
        return self.path / f"{name}.log"

    def out_file(self, name: str) -> Path:
        return self.path / f"{name}.out"

    def ready_pid(self, name: str) -> int | None:
        """The pid a server wrote to NAME.ready, or None."""
        return read_pid(self.ready_file(name))

    def kernel_endpoint(self) -> str:
        """The kernel's endpoint: what it wrote to kernel.ready, else cluster.json's, else
        ipc://DIR/kernel.sock (the kernel's default)."""
        try:
            ep = self.ready_file("kernel").read_text().strip()
        except OSError:
            ep = ""
        return ep or runtime.kernel_endpoint(self.path)

    def host_secret(self) -> bytes | None:
        """The owner's secret for host_priv, None if the directory has none;
        HostSecretError if its file must not be trusted (readable by others)."""
        return host_secret.read_host_secret(self.path)

    def make_host_secret(self) -> bytes:
        """The owner's secret, made (mode 0600) if the directory has none yet."""
        return host_secret.make_host_secret(self.path)

    def kernel_listening(self) -> bool:
        return unix_listening(self.socket)

    # ------------------------------------------------------------ cluster.json

    def read_cluster(self) -> dict | None:
        """cluster.json as written by the launcher, None if there is none (or it is
        unreadable: the launcher writes it atomically, so that means no cluster)."""
        try:
            return json.loads(self.file(CLUSTER_JSON).read_text())
        except (OSError, ValueError):
            return None

    def write_cluster(self, description: dict):
        write_atomic(self.file(CLUSTER_JSON), json.dumps(description, indent=2) + "\n")

    def mark_exit(self, pid: int, returncode: int | None):
        """Note in cluster.json that the process ``pid`` exited, so status shows it gone."""
        d = self.read_cluster()
        if d is None:
            return
        for e in d.get("processes", []):
            if e.get("pid") == pid:
                e["exit"] = returncode
        self.write_cluster(d)

    def launcher_pid(self) -> int | None:
        return read_pid(self.file(LAUNCH_PID))

    def write_launcher_pid(self, pid: int | None = None):
        write_atomic(self.file(LAUNCH_PID), f"{pid or os.getpid()}\n")

    def remove_cluster_files(self, launcher_pid: int | None = None):
        """Remove cluster.json and launch.pid (launch.pid only if it names
        ``launcher_pid``, when given: another launcher's stays)."""
        self.file(CLUSTER_JSON).unlink(missing_ok=True)
        if launcher_pid is None or self.launcher_pid() == launcher_pid:
            self.file(LAUNCH_PID).unlink(missing_ok=True)

    # ------------------------------------------------------------ preparing

    def prepare(self, names: list[str], fresh: bool = False):
        """Make the directory ready for processes ``names``: created if missing; with
        ``fresh`` last run's logs and state removed (the host secret too: a new one for a
        new run); stale ready files of ``names`` and cluster files removed (a stale ready
        file would make a process look ready before it started); the host secret made."""
        self.path.mkdir(parents=True, exist_ok=True)
        if fresh:
            for f in self.path.iterdir():
                if f.is_file() and (f.suffix in FRESH_SUFFIXES or f.name in FRESH_FILES):
                    f.unlink()
        for name in names:
            self.ready_file(name).unlink(missing_ok=True)
        self.remove_cluster_files()
        self.make_host_secret()

    def write_kernel_toml(self, table: dict) -> Path:
        """Write the [kernel] table to kernel.toml and check it with the kernel's own
        KernelConfig before anything starts; ValueError says what is wrong."""
        from kernel.config import KernelConfig

        lines = ["# written by the machemu launcher from the cluster config", "[kernel]"]
        for k, v in table.items():
            if isinstance(v, dict):
                raise ValueError(f"[kernel]: nested table {k!r} is not a kernel setting")
            lines.append(f"{k} = {toml_value(v)}")
        path = self.file(KERNEL_TOML)
        path.write_text("\n".join(lines) + "\n")
        try:
            KernelConfig.load(path)
        except (ValueError, TypeError) as e:
            raise ValueError(f"[kernel]: {e}") from None
        return path


def toml_value(v) -> str:
    """A Python value as a TOML value (the kinds a kernel setting can have)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise ValueError(f"[kernel]: cannot pass value {v!r} on to the kernel")
