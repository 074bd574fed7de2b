"""The workload interface of the load generator, its registry, and what every family uses.

A workload is a class registered with ``@workload``.  It declares its options, looks up
what it needs once in the parent (``prepare``), sets each task up (``task_setup``) and
makes the operation a thread repeats (``make_op``); ``lab.loadgen.driver`` runs it.
"""

from __future__ import annotations

import argparse
import importlib

from lab.client import ClusterClient, ClusterError, err_name
from protocol.defs.netname import netname_look_up
from protocol.kern_return import MachError, MachMsgReturn

# The workload families, in the order the command line lists their workloads.
FAMILIES = ("lab.loadgen.ipc", "lab.loadgen.vm", "lab.loadgen.ext2", "lab.loadgen.storm",
            "lab.loadgen.cachemix", "lab.loadgen.reopen",
            "lab.loadgen.mixed")

WORKLOADS: dict[str, type["Workload"]] = {}


def workload(cls):
    """Register a workload class under ``cls.name``; returns the class."""
    WORKLOADS[cls.name] = cls
    return cls


def workloads() -> dict[str, type["Workload"]]:
    """Every workload class by name, in the command line's order: by family, then in
    the order each family defines them, whichever module was imported first (importing
    the families registers them)."""
    for module in FAMILIES:
        importlib.import_module(module)
    rank = {m: i for i, m in enumerate(FAMILIES)}
    return dict(sorted(WORKLOADS.items(),
                       key=lambda kv: rank.get(kv[1].__module__, len(rank))))


class VerifyError(Exception):
    """An operation returned data other than what was sent or written; ``count`` is how
    many units (pages) were wrong."""

    def __init__(self, msg: str = "", count: int = 1):
        super().__init__(msg)
        self.count = count


class Done(Exception):
    """Raised by the op of a fixed-work workload when its thread's share is done."""


def positive_int(v) -> int:
    """An argparse type: an int >= 1."""
    n = int(v)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return n


def positive_float(v) -> float:
    """An argparse type: a float > 0."""
    x = float(v)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return x


def task_look_up(rt, name: str, timeout: float) -> int:
    """Task side: netname_look_up of server ``name`` (a send right name in the task);
    ClusterError if the name server does not give it."""
    try:
        return netname_look_up(rt.name_server, "", name, timeout=timeout, rt=rt)
    except MachError as e:
        raise ClusterError(f"netname_look_up {name!r}: {err_name(e.code)}") from None


class Workload:
    """A named load.  Subclasses set ``name``, ``help``, ``unit`` and override hooks.

    Parent side: ``add_arguments``, ``check_args``, ``prepare`` (look-ups; returns a
    picklable dict handed to every task), ``watch`` (processes to sample), ``summarize``.
    Task side (in each task process): ``task_setup`` (returns per-task state) and
    ``make_op`` (per thread: returns ``op(seq)``, which raises MachError on a Mach error
    and VerifyError on wrong data, and returns True when it verified data).
    """

    name = ""
    help = ""
    unit = "ops"
    default_duration = 10.0
    # A fixed amount of work (each thread's op raises Done when its share is done) rather
    # than a duration or a count; --duration is then only a time limit.
    fixed_work = False
    progress_unit: str | None = None  # what task_progress counts, if not ops
    # Errors after which a thread stops: its destination is a dead name for good.
    fatal_codes = frozenset({MachMsgReturn.MACH_SEND_INVALID_DEST})

    def add_arguments(self, p: argparse.ArgumentParser):
        """Add the workload's own options to its subcommand's parser."""

    def check_args(self, args, parser):
        """Check (and complete) the parsed options; ``parser.error`` on a bad one."""

    def prepare(self, cluster: ClusterClient, args) -> dict:
        """Parent side, before the tasks start: the picklable dict every task gets."""
        return {}

    def watch(self, cluster: ClusterClient, args, prepared) -> dict[str, int | None]:
        """The processes to sample, label -> pid."""
        return {}

    def task_setup(self, rt, args, index: int, prepared: dict):
        """Task side, before the start: the task's state, shared by its threads."""
        return None

    def make_op(self, rt, args, state, task: int, thread: int):
        """Task side, per thread: the ``op(seq)`` the thread repeats."""
        raise NotImplementedError

    def task_counters(self, rt, args, state) -> dict:
        """Task side, after its threads ended: numbers summed over tasks into
        summary["counters"]."""
        return {}

    def task_extra(self, state) -> dict | None:
        """Task side, after its threads ended: a picklable dict that is not summed (its
        latencies of one kind of operation, times); the parent's ``summarize`` finds the
        tasks' in ``prepared["task_extra"]``.  None: nothing."""
        return None

    def task_progress(self, state) -> int | None:
        """Task side: the progress count shown (None: operations)."""
        return None

    def progress_extra(self, cluster: ClusterClient, args, prepared) -> str:
        """Parent side: more text for the progress line (kernel counters, ...)."""
        return ""

    def finish(self, cluster: ClusterClient, args, prepared: dict):
        """Parent side, once the tasks are done and while still connected."""

    def summarize(self, summary: dict, args, prepared: dict):
        """Parent side: add the workload's own keys to the summary."""

    def check(self, summary: dict) -> str | None:
        """A failure of the workload's own (work not done, ...), or None."""
        return None

    def table(self, summary: dict) -> list[tuple[str, str]]:
        """The workload's own rows of the printed summary."""
        return []
