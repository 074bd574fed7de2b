"""The cluster config (TOML): the ``[kernel]`` table and the ``[[server]]`` list.

Every part is optional::

    [kernel]                 # written to DIR/kernel.toml, passed to the kernel as --config
    qlimit_default = 5

    [[server]]               # replaces the default set (DEFAULT_SERVERS)
    name = "demo"            # checked in with the name server under this name
    module = "translators.demo"
    args = ["--threads", "workers"]
    role = "server"          # "default-pager": started (and ready) before the others

``server = []`` starts the kernel alone.  The ``[kernel]`` keys are checked by the
kernel's own KernelConfig when the table is written (lab.rundir.RunDir.write_kernel_toml).
"""

from __future__ import annotations

import re

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore

DEFAULT_PAGER_ROLE = "default-pager"
DEFAULT_SERVERS = [
    {"name": "defpager", "module": "translators.defpager", "args": [], "role": DEFAULT_PAGER_ROLE},
    # ext2fs on a fresh image (DIR/ext2fs.img, made by its own mkfs: no e2fsprogs needed)
    {"name": "ext2fs", "module": "translators.ext2fs", "args": [], "role": "server"},
    {"name": "memfs", "module": "translators.memfs", "args": [], "role": "server"},
    {"name": "demo", "module": "translators.demo", "args": [], "role": "server"},
]
# The main job's kernel (``launch run``): 8 MiB of memory so that a few seconds of anon
# load page out for real; multi-page data_returns keep the classic pageout's
# 10 ms-per-page bursts from stretching the run to minutes.
RUN_KERNEL = {"physical_pages": 2048, "data_return_cluster": 32}
# Names of the run directory's own files (kernel.ready, launch.log, cluster.json).
RESERVED_NAMES = {"kernel", "launch", "cluster"}
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
MODULE_RE = re.compile(r"^[A-Za-z_][\w.]*$")
SERVER_KEYS = {"name", "module", "args", "role"}


class ConfigError(Exception):
    """A config that cannot be used; the message says where and why."""


def default_servers() -> list[dict]:
    """A fresh copy of DEFAULT_SERVERS (callers may change theirs)."""
    return [dict(s, args=list(s["args"])) for s in DEFAULT_SERVERS]


def load_config(path: str | None) -> tuple[dict | None, list[dict]]:
    """The config at ``path`` (None: no config): its [kernel] table (None if absent) and
    the servers to start, each ``{name, module, args, role}``.  ConfigError if the file
    cannot be read or parsed, or a part of it is not what a cluster can use."""
    if not path:
        return None, default_servers()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {path}: {e}") from None
    unknown = set(data) - {"kernel", "server"}
    if unknown:
        raise ConfigError(f"config {path}: unknown table(s) {', '.join(sorted(unknown))}")
    kernel = data.get("kernel")
    if kernel is not None and not isinstance(kernel, dict):
        raise ConfigError(f"config {path}: [kernel] must be a table")
    raw = data.get("server", DEFAULT_SERVERS)
    if not isinstance(raw, list):
        raise ConfigError(f"config {path}: server must be a list of tables ([[server]])")
    servers: list[dict] = []
    for i, s in enumerate(raw):
        servers.append(check_server(s, f"config {path}: server #{i + 1}",
                                    {x["name"] for x in servers}))
    return kernel, servers


def check_server(s, where: str, taken: set[str]) -> dict:
    """One [[server]] table checked (``where`` starts each message, ``taken`` are the
    names before it); returns it with its defaults filled in."""
    if not isinstance(s, dict):
        raise ConfigError(f"{where} is not a table")
    extra = set(s) - SERVER_KEYS
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
    name, module = s.get("name"), s.get("module")
    args, role = s.get("args", []), s.get("role", "server")
    if not isinstance(name, str) or not NAME_RE.match(name) or name in RESERVED_NAMES:
        raise ConfigError(f"{where}: bad or reserved name {name!r}")
    if name in taken:
        raise ConfigError(f"{where}: name {name!r} used twice")
    if not isinstance(module, str) or not MODULE_RE.match(module):
        raise ConfigError(f"{where}: bad module {module!r}")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ConfigError(f"{where}: args must be a list of strings")
    if not isinstance(role, str) or not role:
        raise ConfigError(f"{where}: bad role {role!r}")
    return {"name": name, "module": module, "args": list(args), "role": role}
