"""What ``scripts/experiment run`` shows while it runs, on stderr: on a terminal (with
rich) a live bar of the invocation's runs and one of the current run against its time
bound, with the pager's threads and the free and dirty pages of the recorder's latest
sample; otherwise plain lines (a run starting and ending, its steps, and a status
line every PLAIN_EVERY seconds), which is what logs and CI keep.

Every reporter has the same methods: ``begin(total)``, ``run_started(exp, config,
run, repeat)``, ``tick(info)`` (lab.experiments.runner.ConfigRun's), ``say(text)``,
``run_finished(result)``, ``skip()`` and ``close()``.
"""

from __future__ import annotations

import sys
import time

from lab.experiments.summary import value

PLAIN_EVERY = 30.0  # seconds between plain status lines of a running step


def live_numbers(sample: dict | None, server: str) -> str:
    """The recorder's latest numbers in words ("" without a sample)."""
    if not sample:
        return ""
    parts = []
    for path, label in ((f"procs.{server}.threads", f"{server} threads"),
                        ("vm.free_count", "free"), ("vm.dirty_count", "dirty"),
                        ("vm.potentially_dirty", "potentially dirty")):
        v = value(sample, path)
        if v is not None and (v or label != "potentially dirty"):
            parts.append(f"{label} {v}")
    return ", ".join(parts)


def run_name(exp, config, run, repeat) -> str:
    return f"{exp.name}/{config.name}" + (f" (run {run} of {repeat})" if run else "")


def outcome(r: dict) -> str:
    """A finished run in words: status, reason, wall time."""
    return (r["status"] + (f" ({r['reason']})" if r.get("reason") else "")
            + (f", {r['wall_s']:.0f} s" if r.get("wall_s") is not None else ""))


class Quiet:
    """Shows nothing."""

    def begin(self, total: int):
        self.total, self.done = total, 0

    def run_started(self, exp, config, run, repeat):
        self.exp = exp

    def tick(self, info: dict):
        pass

    def say(self, text: str):
        pass

    def run_finished(self, result: dict):
        self.done += 1

    def skip(self):
        self.done += 1

    def close(self):
        pass


class Plain(Quiet):
    """Plain lines on ``stream``."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.last_line = 0.0

    def say(self, text: str):
        print(text, file=self.stream, flush=True)

    def run_started(self, exp, config, run, repeat):
        super().run_started(exp, config, run, repeat)
        self.last_line = time.monotonic()
        self.say(f"experiment [{self.done + 1}/{self.total}] {run_name(exp, config, run, repeat)}"
                 f": {config.description}")

    def tick(self, info: dict):
        now = time.monotonic()
        if now - self.last_line < PLAIN_EVERY:
            return
        self.last_line = now
        nums = live_numbers(info.get("sample"), self.exp.server)
        self.say(f"  {info['experiment']}/{info['config']}: {info['step']} "
                 f"{info['elapsed_s']:.0f} s of {info['timeout_s']:.0f} s"
                 + (f"; {nums}" if nums else ""))

    def run_finished(self, result: dict):
        super().run_finished(result)
        run = f" run {result['run']}" if result.get("run") else ""
        self.say(f"experiment {result['experiment']}: {result['config']}{run}: "
                 f"{outcome(result)}")


class Rich(Plain):
    """rich's live bars on a terminal ``stream``; messages printed above them."""

    def __init__(self, stream=None):
        super().__init__(stream)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.fields[live]}"),
                                 console=Console(file=self.stream), transient=True)
        self.all = self.current = None

    def say(self, text: str):
        self.progress.console.print(text, markup=False, highlight=False)

    def begin(self, total: int):
        super().begin(total)
        self.progress.start()
        self.all = self.progress.add_task("runs", total=total, live="")

    def run_started(self, exp, config, run, repeat):
        Quiet.run_started(self, exp, config, run, repeat)
        self.name = run_name(exp, config, run, repeat)
        self.say(f"experiment [{self.done + 1}/{self.total}] {self.name}: "
                 f"{config.description}")
        self.current = self.progress.add_task(self.name, total=None, live="")

    def tick(self, info: dict):
        if self.current is None:
            return
        self.progress.update(self.current, total=round(info["timeout_s"]),
                             completed=round(info["elapsed_s"]),
                             description=f"{self.name}: {info['step']}",
                             live=live_numbers(info.get("sample"), self.exp.server))

    def run_finished(self, result: dict):
        Plain.run_finished(self, result)
        if self.current is not None:
            self.progress.remove_task(self.current)
            self.current = None
        self.progress.update(self.all, completed=self.done)

    def skip(self):
        super().skip()
        self.progress.update(self.all, completed=self.done)

    def close(self):
        self.progress.stop()


def reporter(stream=None) -> Quiet:
    """Rich on a terminal where rich is installed, plain lines otherwise."""
    stream = stream or sys.stderr
    if stream.isatty():
        try:
            return Rich(stream)
        except ImportError:
            pass
    return Plain(stream)
