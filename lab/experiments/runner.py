"""One configuration of an experiment, run: a fresh real cluster in its own run
directory (OUT/EXPERIMENT/CONFIG, OUT/EXPERIMENT/CONFIG/rK for the K-th of several
runs with --repeat), the recorder sampling it, the workload steps one
after the other (each ``scripts/loadgen ... --json``: its summary to DIR/STEP.json, its
stderr to DIR/STEP.out), everything bounded by the experiment's timeout: a step still
running at the deadline is stopped (SIGINT, then SIGKILL) and the configuration is
reported "timed out".  The cluster is stopped whatever happens; the ext2 image and the
swap file (hundreds of MiB) are removed afterwards unless asked to keep them.

The result: ``status`` (ok, failed, timed out, not available, interrupted), ``reason``,
``wall_s``, ``steps`` (step -> exit status), ``results`` (step -> loadgen summary),
``failures`` (cluster processes that died), ``samples`` (how many), ``row`` (the
experiment's row of its table), ``disk`` (the server's disk statistics: calibration)
and ``run`` (which of the configuration's runs; None without --repeat).

``run_experiments`` runs every configuration of each experiment in the alternating
order of lab.experiments.repeat and makes each configuration's runs one result.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import structlog

from lab.client import ClusterError as ClientError
from lab.cluster import KILL_TIMEOUT, SERVER_STOP_TIMEOUT, Cluster, ClusterError
from lab.experiments import calibration, features
from lab.experiments.base import Configuration, Experiment, Step
from lab.experiments.progress import Quiet
from lab.experiments.recorder import ProcessSet, Recorder
from lab.experiments.repeat import aggregate, schedule
from lab.experiments.summary import load_samples
from lab.process import ROOT, Child, describe_exit, wait_exit
from lab.rundir import RunDir, RunDirError

OK, FAILED, TIMED_OUT, UNAVAILABLE, INTERRUPTED = (
    "ok", "failed", "timed out", "not available", "interrupted")
BIG_FILES = ("*.img", "swap")  # removed after a run unless kept
SAMPLES = "samples.jsonl"
START_SHARE = 0.5  # at most this share of the timeout goes to starting the cluster
TICK = 1.0         # seconds between progress reports while a step runs


def loadgen_argv(run_dir: Path, step: Step) -> list[str]:
    """``scripts/loadgen --run-dir DIR WORKLOAD ARGS --json``."""
    return [sys.executable, str(ROOT / "scripts" / "loadgen"), "--run-dir", str(run_dir),
            step.workload, *step.args, "--json"]


class ConfigRun:
    """The run of one configuration (``run()`` returns its result dict); ``run_index``:
    which of its runs (its own directory rK), None for the only one.  ``tick(info)``
    is called about every TICK seconds while a step runs (progress: the step, its
    elapsed time and bound, the recorder's latest sample)."""

    def __init__(self, exp: Experiment, config: Configuration, out: Path, quick: bool, *,
                 keep_big: bool = False, say=None, log=None, run_index: int | None = None,
                 tick=None):
        self.exp, self.config, self.quick, self.keep_big = exp, config, quick, keep_big
        self.config_dir = Path(out) / exp.name / config.name
        self.run_index = run_index
        self.dir = self.config_dir / f"r{run_index}" if run_index else self.config_dir
        self.say = say or (lambda text: None)
        self.tick = tick or (lambda info: None)
        self.log = log or structlog.get_logger("experiment")
        self.deadline = 0.0
        self.started = 0.0
        self.timed_out = False
        self.recorder: Recorder | None = None

    def result(self, status: str, reason: str = "", **kw) -> dict:
        return {"experiment": self.exp.name, "config": self.config.name,
                "description": self.config.description, "status": status,
                "reason": reason, "run_dir": str(self.dir), "run": self.run_index,
                "config_dir": str(self.config_dir), **kw}

    def run(self) -> dict:
        why = features.unavailable(self.config)
        if why:
            return self.result(UNAVAILABLE, why.removeprefix("not available: "))
        self.dir.mkdir(parents=True, exist_ok=True)
        rd = RunDir(self.dir)
        try:
            rd.check_socket_path()
        except RunDirError as e:
            return self.result(FAILED, str(e))
        limit = self.exp.timeout(self.quick)
        t0 = self.started = time.monotonic()
        self.deadline = t0 + limit
        kernel = self.config.kernel_table(self.exp.kernel_base(self.quick))
        cl = Cluster(rd, kernel, self.exp.servers(self.config, self.quick), warn=self.say,
                     log=self.log, launcher=False,
                     ready_timeout=max(30.0, limit * START_SHARE))
        procs = ProcessSet()
        recorder = None
        steps: dict[str, int | None] = {}
        results: dict[str, dict] = {}
        status, reason = OK, ""
        try:
            try:
                cl.prepare(fresh=True)
                cl.start()
            except (ClusterError, RunDirError) as e:
                return self.result(FAILED, f"cluster did not start: {e}",
                                   wall_s=round(time.monotonic() - t0, 2))
            for c in cl.children:
                procs.add(c.name, c.pid)
            (self.dir / SAMPLES).unlink(missing_ok=True)
            recorder = self.recorder = Recorder(rd, self.dir / SAMPLES, procs,
                                                server=self.exp.server)
            recorder.start()
            for step in self.exp.steps(self.config, self.quick):
                code, summary = self.run_step(cl, procs, step)
                steps[step.name] = code
                if summary is not None:
                    results[step.name] = summary
                if self.timed_out:
                    status, reason = TIMED_OUT, (f"step {step.name} still running after "
                                                 f"the {limit:.0f} s bound: stopped")
                    break
                if code != 0:
                    why = (summary or {}).get("failure") or describe_exit(code)
                    status, reason = FAILED, f"step {step.name}: {why}"
                    break
                if not cl.kernel.alive():
                    status, reason = FAILED, "the kernel died"
                    break
        except KeyboardInterrupt:
            status, reason = INTERRUPTED, "interrupted"
        except ClientError as e:
            status, reason = FAILED, f"recorder: {e}"
        finally:
            if recorder is not None:
                recorder.stop()
            cl.check_children()
            cl.stop()
            if not self.keep_big:
                for pattern in BIG_FILES:
                    for f in self.dir.glob(pattern):
                        f.unlink(missing_ok=True)
        if status == OK and cl.failures:
            status, reason = FAILED, "; ".join(cl.failures)
        samples = load_samples(self.dir / SAMPLES)
        row = self.exp.row(self.config, samples, results, kernel) if samples or results else {}
        return self.result(status, reason, wall_s=round(time.monotonic() - t0, 2),
                           steps=steps, results=results, failures=list(cl.failures),
                           samples=len(samples), kernel=kernel,
                           recorder_errors=recorder.errors if recorder else None, row=row,
                           disk=calibration.disk(self.dir, self.exp.server))

    def run_step(self, cl: Cluster, procs: ProcessSet, step: Step) -> tuple[int | None,
                                                                             dict | None]:
        """Run one loadgen step to its end or the deadline; (exit status, its JSON
        summary or None)."""
        out_json = self.dir / f"{step.name}.json"
        argv = loadgen_argv(self.dir, step)
        self.say(f"  {self.exp.name}/{self.config.name}: {step.name}: "
                 + " ".join(argv[2:]))
        with open(out_json, "wb") as f:
            wl = Child(step.name, argv, self.dir, role="workload", env=cl.env(),
                       out=self.dir / f"{step.name}.out", stdout=f)
        procs.add("loadgen", wl.pid, with_children=True)
        try:
            while wl.alive():
                left = self.deadline - time.monotonic()
                if left <= 0:
                    self.timed_out = True
                    break
                if not cl.check_children():
                    break  # the kernel is gone
                self.tick({"experiment": self.exp.name, "config": self.config.name,
                           "run": self.run_index, "step": step.name,
                           "elapsed_s": time.monotonic() - self.started,
                           "timeout_s": self.deadline - self.started,
                           "sample": self.recorder.last if self.recorder else None})
                wait_exit([wl, *cl.children], min(left, TICK))
            if wl.alive():
                wl.stop(SERVER_STOP_TIMEOUT, KILL_TIMEOUT, sig=signal.SIGINT)
        finally:
            procs.remove("loadgen")
            wl.close()
        code = wl.poll()
        try:
            summary = json.loads(out_json.read_text().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            summary = None
        self.log.info("step finished", config=self.config.name, step=step.name,
                      returncode=code)
        return code, summary


def run_experiments(exps: list[Experiment], out: Path, quick: bool, *, repeat: int = 1,
                    only=(), keep_big: bool = False, progress=None,
                    log=None) -> tuple[dict[str, list[dict]], bool]:
    """Every configuration of each of ``exps`` (those named in ``only``, if any), each
    ``repeat`` times in the alternating order (``schedule``), one after the other.
    ``progress`` (lab.experiments.progress) is told of each run and step.  Returns
    (experiment -> one result per configuration in declared order, aggregated over its
    runs; whether an interrupt stopped the invocation).  A configuration "not
    available" is tried once."""
    progress = progress or Quiet()
    plan = []
    for exp in exps:
        configs = [c for c in exp.configurations if not only or c.name in only]
        plan += [(exp, k, c) for k, c in schedule(configs, repeat)]
    progress.begin(len(plan))
    runs: dict[tuple[str, str], list[dict]] = {}
    interrupted = False
    for exp, k, config in plan:
        mine = runs.setdefault((exp.name, config.name), [])
        if interrupted or (mine and mine[0]["status"] == UNAVAILABLE):
            progress.skip()
            continue
        progress.run_started(exp, config, k if repeat > 1 else None, repeat)
        r = ConfigRun(exp, config, out, quick, keep_big=keep_big, say=progress.say, log=log,
                      run_index=k if repeat > 1 else None, tick=progress.tick).run()
        mine.append(r)
        progress.run_finished(r)
        interrupted = r["status"] == INTERRUPTED
    by_exp = {exp.name: [aggregate(runs[(exp.name, c.name)]) for c in exp.configurations
                         if runs.get((exp.name, c.name))]
              for exp in exps}
    return by_exp, interrupted
