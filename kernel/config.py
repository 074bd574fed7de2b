"""Kernel configuration: defaults, overridden by a TOML file (``[kernel]`` table).

The ``advisory`` pageout policy's dirty page limits keep the original's static numbers
(2,700 soft, 3,000 hard; "XXX These limits should be dynamic"): 3,000 pages (11.7 MiB)
are 18.3 % of the default 16,384 pages (64 MiB), 73 % of 4,096 (16 MiB) and more than
all of 2,048 (8 MiB).  ``advisory_scale_limits`` scales both by physical_pages / 16,384,
so they keep that 16.5 % / 18.3 % share of any memory size.  The hard limit may be at
most half of physical memory: dirty external pages are left to their pagers, and more
of them than that could starve the free list.
"""

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
    # seconds without a word before a task whose process the kernel cannot see (no
    # pidfd: another host) is destroyed; a local process is watched through its pidfd
    heartbeat_timeout: float = 10.0
    max_waiters_per_task: int = 8192  # suspended traps (threads) one task may have
    max_blocked_bytes_per_task: int = 64 << 20  # message bytes held for blocked sends
    max_blocked_bytes_total: int = 256 << 20  # the same, over all tasks
    max_tasks: int = 4096
    max_kernel_threads: int = 16384  # suspended kernel routines (faults waiting for pagers)
    # VM
    physical_pages: int = 16384  # 64 MiB of 4 KiB frames
    pageout_policy: str = "classic"
    map_lookup: str = "tree"  # "list" (Mach before 2012) or "tree"
    map_merge: str = "classic"  # "classic" (extend previous) or "coalesce" (GNU Mach 2023)
    # time every vm_map_lookup_entry and first-fit search (machemu_kernel_info's
    # map_cost, E2); off by default: two clock reads a lookup on the fault path
    map_lookup_timing: bool = False
    deactivate_on_cache: bool = True  # classic: an object entering the cache loses its pages' activity
    data_return_cluster: int = 1  # pages per data_return (classic: 1; clustering: up to 32)
    # maintain vm_page_external_count (GNU Mach 2011 never did: it stayed 0, so the
    # external page limit and target never acted); see kernel.vm_page
    external_page_count: bool = False
    object_cache_max: int = 4000  # classic vm_object_cached_max
    absent_max: int = 50  # vm_object_absent_max
    # seconds a thread waits for a free page while nothing can be paged out (no default
    # pager for dirty anonymous pages) before its fault fails with KERN_RESOURCE_SHORTAGE
    page_wait_timeout: float = 10.0
    # throttle pageout (Linux vm.dirty_background_ratio, vm.dirty_ratio, MAX_PAUSE):
    # percent of physical memory dirty (file pages plus laundry) at which background
    # writeback starts, above which a dirtying writer pauses; the longest pause
    dirty_background_ratio: int = 10
    dirty_ratio: int = 20
    dirty_pause_max_ms: int = 200
    # advisory pageout: potentially dirty pages above which data_unlock asks the pager
    # to write back (soft) and writers sleep (hard); scaled to physical memory if asked
    advisory_soft_limit: int = 2700
    advisory_hard_limit: int = 3000
    advisory_scale_limits: bool = False

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
            default = getattr(cfg, key)
            if isinstance(default, bool) and not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false")
            setattr(cfg, key, type(default)(value))
        from kernel.vm_pageout import POLICIES  # config is loaded before any policy runs

        if cfg.pageout_policy not in POLICIES:
            raise ValueError(f"pageout_policy must be one of {', '.join(sorted(POLICIES))}")
        if cfg.map_lookup not in ("list", "tree"):
            raise ValueError("map_lookup must be 'list' or 'tree'")
        if cfg.map_merge not in ("classic", "coalesce"):
            raise ValueError("map_merge must be 'classic' or 'coalesce'")
        if not 1 <= cfg.data_return_cluster <= 32:
            raise ValueError("data_return_cluster must be within 1..32 (DATA_WRITE_MAX)")
        if not 64 <= cfg.physical_pages <= 1 << 22:
            raise ValueError("physical_pages must be within 64..4194304")
        if not 0 < cfg.page_wait_timeout <= 3600:
            raise ValueError("page_wait_timeout must be within (0, 3600] seconds")
        if not 0 <= cfg.qlimit_default <= 16:
            raise ValueError("qlimit_default must be within 0..16 (MACH_PORT_QLIMIT_MAX)")
        if not 1 <= cfg.dirty_ratio <= 100:
            raise ValueError("dirty_ratio must be within 1..100 (percent)")
        if not 0 <= cfg.dirty_background_ratio < cfg.dirty_ratio:
            raise ValueError("dirty_background_ratio must be within 0..dirty_ratio - 1")
        if not 1 <= cfg.dirty_pause_max_ms <= 10000:
            raise ValueError("dirty_pause_max_ms must be within 1..10000")
        if not 1 <= cfg.advisory_soft_limit <= cfg.advisory_hard_limit:
            raise ValueError("advisory_soft_limit must be within 1..advisory_hard_limit")
        if cfg.pageout_policy == "advisory":
            from kernel.vm_pageout_advisory import advisory_limits
            _, hard = advisory_limits(cfg)
            if hard > cfg.physical_pages // 2:
                raise ValueError("advisory_hard_limit (after scaling) must be at most half "
                                 "of physical_pages; set advisory_scale_limits")
        return cfg
