"""One configuration of an experiment, run: a fresh real cluster in its own run
directory (OUT/EXPERIMENT/CONFIG), the recorder sampling it, the workload steps one
after the other (each ``scripts/loadgen ... --json``: its summary to DIR/STEP.json, its
stderr to DIR/STEP.out), everything bounded by the experiment's timeout: a step still
running at the deadline is stopped (SIGINT, then SIGKILL) and the configuration is
reported "timed out".  The cluster is stopped whatever happens; the ext2 image and the
swap file (hundreds of MiB) are removed afterwards unless asked to keep them.

The result: ``status`` (ok, failed, timed out, not available, interrupted), ``reason``,
``wall_s``, ``steps`` (step -> exit status), ``results`` (step -> loadgen summary),
``failures`` (cluster processes that died), ``samples`` (how many) and ``row`` (the
experiment's row of its table).
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
from lab.experiments import features
from lab.experiments.base import Configuration, Experiment, Step
from lab.experiments.recorder import ProcessSet, Recorder
from lab.experiments.summary import load_samples
from lab.process import ROOT, Child, describe_exit, wait_exit
from lab.rundir import RunDir, RunDirError

OK, FAILED, TIMED_OUT, UNAVAILABLE, INTERRUPTED = (
    "ok", "failed", "timed out", "not available", "interrupted")
BIG_FILES = ("*.img", "swap")  # removed after a run unless kept
SAMPLES = "samples.jsonl"
START_SHARE = 0.5  # at most this share of the timeout goes to starting the cluster


def loadgen_argv(run_dir: Path, step: Step) -> list[str]:
    """``scripts/loadgen --run-dir DIR WORKLOAD ARGS --json``."""
    return [sys.executable, str(ROOT / "scripts" / "loadgen"), "--run-dir", str(run_dir),
            step.workload, *step.args, "--json"]


class ConfigRun:
    """The run of one configuration (``run()`` returns its result dict)."""

    def __init__(self, exp: Experiment, config: Configuration, out: Path, quick: bool, *,
                 keep_big: bool = False, say=None, log=None):
        self.exp, self.config, self.quick, self.keep_big = exp, config, quick, keep_big
        self.dir = Path(out) / exp.name / config.name
        self.say = say or (lambda text: None)
        self.log = log or structlog.get_logger("experiment")
        self.deadline = 0.0
        self.timed_out = False

    def result(self, status: str, reason: str = "", **kw) -> dict:
        return {"experiment": self.exp.name, "config": self.config.name,
                "description": self.config.description, "status": status,
                "reason": reason, "run_dir": str(self.dir), **kw}

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
        t0 = time.monotonic()
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
            recorder = Recorder(rd, self.dir / SAMPLES, procs, server=self.exp.server)
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
                           recorder_errors=recorder.errors if recorder else None, row=row)

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
                wait_exit([wl, *cl.children], min(left, 5.0))
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
