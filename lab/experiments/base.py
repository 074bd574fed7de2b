"""What an experiment declares, and the registry.

An experiment (one module under lab/experiments/) is a subclass of ``Experiment``
registered with ``@experiment``: its claim (one sentence, its source, the published
figure), its configurations (data: pageout policy, [kernel] keys, ext2fs arguments and
thread model), its workload (loadgen steps, sized from the configuration and --quick),
what it samples, and how a configuration's samples and workload summaries become a row
of its table.  What it draws has defaults, so an experiment declares only what it adds:
time series (its own ``plots``, then the standard panels that have data), the bars of
its table's numeric columns, the CDF of every latency its steps' summaries carry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

# The experiment modules, in the order ``list`` shows them.
MODULES = ("lab.experiments.storm", "lab.experiments.fragmentation",
           "lab.experiments.multipage", "lab.experiments.cache_entry",
           "lab.experiments.cache_vs_anon")

EXPERIMENTS: dict[str, type["Experiment"]] = {}

# --quick: 8 MiB of memory; advisory's 3,000-page hard limit is more than half of it,
# so its limits are scaled (kernel.config)
QUICK_KERNEL = {"physical_pages": 2048, "advisory_scale_limits": True}
MIB = 1 << 20


def physical_pages(kernel: dict) -> int:
    """The physical memory a [kernel] table gives (the kernel's default if unset)."""
    from kernel.config import KernelConfig

    return int(kernel.get("physical_pages", KernelConfig().physical_pages))


def image_mib(pages: int, factor: float) -> int:
    """An ext2 image that holds ``factor`` x ``pages`` of file data with room for
    metadata (block maps, directories) to spare."""
    from protocol.vm_param import PAGE_SIZE

    return int(factor * pages * PAGE_SIZE / MIB * 1.25) + 32


def ext2fs_servers(config: "Configuration", size_mib: int, *args: str) -> list[dict]:
    """The default pager and ext2fs (a fresh image of ``size_mib``, statistics every
    second, ``args``, the configuration's own arguments and thread model)."""
    a = ["--size-mib", str(size_mib), "--stats-interval", "1", *args, *config.ext2fs_args]
    if "--threads" not in a:
        a += ["--threads", config.threads]
    return [{"name": "defpager", "module": "translators.defpager", "args": [],
             "role": "default-pager"},
            {"name": "ext2fs", "module": "translators.ext2fs", "args": a, "role": "server"}]


# Columns never drawn as bars: they say whether the run was sound, not what it measured.
# The columns every experiment's table ends with (the runner fills wall_s and status).
RESULT_COLUMNS = (("bytes_verified", "bytes verified"), ("wall_s", "wall s"),
                  ("status", "status"))
BAR_SKIP = ("status", "wall_s", "bytes_verified", "bytes_expected", "verified_all")


def standard_panels(server: str) -> tuple[tuple[tuple[str, ...], str], ...]:
    """The time series every experiment gets beside its own (each dropped where no run
    has a non-zero value): the pager's threads, free, dirty and potentially dirty
    pages, data_returns in flight (else queued at the pager's ports), map entries."""
    return ((("procs.%s.threads" % server,), f"{server} threads"),
            (("vm.free_count",), "free pages"),
            (("vm.dirty_count",), "dirty pages"),
            (("vm.potentially_dirty",), "potentially dirty pages"),
            (("vm.returns_in_flight", "ports.pager_depth"), "data_returns in flight / queued"),
            (("map_entries.%s" % server,), f"{server} map entries"))


@dataclass(frozen=True)
class Claim:
    """What the experiment shows: ``text`` (one sentence), ``source`` (who said it,
    where), ``figure`` (the published number it is measured against)."""

    text: str
    source: str
    figure: str


@dataclass(frozen=True)
class Configuration:
    """One configuration compared: a name (its run directory), a one-line description,
    the pageout policy, more [kernel] keys, ext2fs's arguments and thread model."""

    name: str
    description: str
    policy: str = "classic"
    kernel: dict = field(default_factory=dict)
    ext2fs_args: tuple[str, ...] = ()
    threads: str = "multithread"

    def kernel_table(self, base: dict) -> dict:
        """The [kernel] table: ``base`` (the experiment's sizes), the policy, then the
        configuration's own keys (which win)."""
        return {**base, "pageout_policy": self.policy, **self.kernel}

    def needs(self) -> dict:
        """What this configuration needs of the tree: its policy, its kernel keys, its
        ext2fs options (names starting with --)."""
        return {"policy": self.policy, "kernel_keys": sorted(self.kernel),
                "ext2fs_options": sorted({a for a in (*self.ext2fs_args, "--threads")
                                          if a.startswith("--")})}


@dataclass(frozen=True)
class Step:
    """A workload step: ``scripts/loadgen WORKLOAD ARGS --json`` run against the cluster,
    named ``name`` (its files: DIR/NAME.json, DIR/NAME.out)."""

    name: str
    workload: str
    args: tuple[str, ...]


class Experiment:
    """An experiment.  Subclasses set ``name``, ``aliases``, ``title``, ``claim``,
    ``configurations``, ``samples`` (what the recorder is asked for, in words) and
    ``columns``, and implement ``kernel_base``, ``servers``, ``steps`` and ``row``."""

    name = ""
    aliases: tuple[str, ...] = ()
    title = ""
    claim: Claim
    configurations: tuple[Configuration, ...] = ()
    # what ``scripts/launch run`` runs of it as the main job's headline; () = all
    headline: tuple[str, ...] = ()
    workload = ""   # the workload in words
    samples = ""    # what is sampled, in words
    # (key of a row, column heading) in table order
    columns: tuple[tuple[str, str], ...] = ()
    # the plot's panels: (sample paths, the first a run has wins; y label)
    plots: tuple[tuple[tuple[str, ...], str], ...] = ()
    standard_plots = True  # the standard panels (standard_panels) after its own
    # (key of a row, label) drawn as bars; () = every numeric column but BAR_SKIP's
    bars: tuple[tuple[str, str], ...] = ()
    # (step, key of its summary, label) drawn as CDFs; () = every "*latency_ms" with a
    # "cdf" in any step's summary
    latencies: tuple[tuple[str, str, str], ...] = ()
    server = "ext2fs"  # the pager whose threads and port queues the recorder follows

    def timeout(self, quick: bool) -> float:
        """Seconds one configuration may take, cluster start to stop; past it the run
        is stopped and reported as timed out."""
        raise NotImplementedError

    def kernel_base(self, quick: bool) -> dict:
        """The [kernel] keys every configuration shares: by default the kernel's own
        memory size, QUICK_KERNEL with --quick."""
        return dict(QUICK_KERNEL) if quick else {}

    def servers(self, config: Configuration, quick: bool) -> list[dict]:
        """The cluster's servers, ``{name, module, args, role}`` each (lab.config)."""
        raise NotImplementedError

    def steps(self, config: Configuration, quick: bool) -> list[Step]:
        """The workload steps, run one after the other on the configuration's cluster."""
        raise NotImplementedError

    def row(self, config: Configuration, samples: list[dict], results: dict,
            kernel: dict) -> dict:
        """The configuration's row of the table, from its recorder ``samples``, the
        loadgen summaries of its steps (``results``: step name -> summary) and its
        [kernel] table."""
        raise NotImplementedError

    def findings(self, results: list[dict]) -> list[str]:
        """Sentences setting the measured results beside the claim (default none)."""
        return []

    def timeseries(self) -> list[list]:
        """The time-series panels: [paths, label, optional] each, its own ``plots``
        (always drawn) then the standard panels whose paths it does not plot already
        (optional: drawn only where a run has a non-zero value)."""
        own = [[list(paths), label, False] for paths, label in self.plots]
        seen = {p for paths, _, _ in own for p in paths}
        extra = ([[list(paths), label, True] for paths, label in standard_panels(self.server)
                  if not seen & set(paths)] if self.standard_plots else [])
        return own + extra

    def bar_columns(self) -> list[list[str]]:
        """[key, label] of each figure drawn as a bar (``bars``, else the columns)."""
        return [[k, h] for k, h in (self.bars or self.columns) if k not in BAR_SKIP]

    def describe(self) -> dict:
        """What ``list`` prints: names, claim, configurations, workload, samples."""
        return {"name": self.name, "aliases": list(self.aliases), "title": self.title,
                "claim": {"text": self.claim.text, "source": self.claim.source,
                          "figure": self.claim.figure},
                "configurations": [{"name": c.name, "description": c.description,
                                    "policy": c.policy, "kernel": c.kernel,
                                    "ext2fs_args": list(c.ext2fs_args), "threads": c.threads}
                                   for c in self.configurations],
                "workload": self.workload, "samples": self.samples,
                "plots": [[list(paths), label] for paths, label in self.plots],
                "timeseries": self.timeseries(), "bars": self.bar_columns(),
                "latencies": [list(x) for x in self.latencies],
                "columns": [list(c) for c in self.columns], "server": self.server}


def experiment(cls):
    """Register an experiment class under its name; returns the class."""
    EXPERIMENTS[cls.name] = cls
    return cls


def experiments() -> dict[str, type[Experiment]]:
    """Every experiment class by name, in ``list`` order (MODULES', whichever was
    imported first)."""
    for m in MODULES:
        importlib.import_module(m)
    rank = {m: i for i, m in enumerate(MODULES)}
    return dict(sorted(EXPERIMENTS.items(),
                       key=lambda kv: rank.get(kv[1].__module__, len(rank))))


def find(name: str) -> type[Experiment] | None:
    """The experiment called ``name`` or with that alias (E1, ...; any case)."""
    exps = experiments()
    if name in exps:
        return exps[name]
    return next((c for c in exps.values()
                 if name.lower() in (a.lower() for a in (c.name, *c.aliases))), None)
