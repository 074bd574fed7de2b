"""Kernel configuration: defaults, overridden by a TOML file (``[kernel]`` table)."""

from __future__ import annotations

from dataclasses import dataclass, fields

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore


@dataclass
class KernelConfig:
    # IPC
    qlimit_default: int = 5  # MACH_PORT_QLIMIT_DEFAULT
    heartbeat_timeout: float = 10.0  # seconds without a word before a task is destroyed
    max_waiters_per_task: int = 8192  # suspended traps (threads) one task may have
    max_blocked_bytes_per_task: int = 64 << 20  # message bytes held for blocked sends
    max_blocked_bytes_total: int = 256 << 20  # the same, over all tasks
    max_tasks: int = 4096

    @classmethod
    def load(cls, path=None, **overrides) -> "KernelConfig":
        cfg = cls()
        data = {}
        if path:
            with open(path, "rb") as f:
                data = tomllib.load(f).get("kernel", {})
        data.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name: f for f in fields(cls)}
        for key, value in data.items():
            if key not in known:
                raise ValueError(f"unknown kernel setting {key!r}")
            setattr(cfg, key, type(getattr(cfg, key))(value))
        if not 0 <= cfg.qlimit_default <= 16:
            raise ValueError("qlimit_default must be within 0..16 (MACH_PORT_QLIMIT_MAX)")
        return cfg
