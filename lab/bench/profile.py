"""Where the kernel's time goes during a bench stage: py-spy attached to the kernel
process, its raw stacks summed per function.

``scripts/bench --profile DIR`` records the kernel while the RPC client runs and while
the routed stream runs, and writes DIR/kernel-STAGE.raw (py-spy's collapsed stacks, for
flamegraph.pl or speedscope) and DIR/kernel-STAGE.txt (the summary below).  Idle time in
poll(2) is not sampled (py-spy's default), so the percentages are of the kernel's busy
time.  py-spy comes with ``pip install -e '.[profile]'``.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

RATE = 500            # samples per second
LINE = re.compile(r":\d+\)$")


class Profiler:
    """py-spy recording one process until ``stop``; ``summary`` sums what it saw."""

    def __init__(self, pid: int, raw: Path):
        exe = shutil.which("py-spy")
        if exe is None:
            raise RuntimeError("--profile needs py-spy: pip install -e '.[profile]'")
        self.raw = raw
        self.popen = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw",
             "--output", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self, timeout: float = 60.0) -> str:
        """SIGINT py-spy (it writes its file and exits); the summary text."""
        self.popen.send_signal(signal.SIGINT)
        try:
            _, err = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            _, err = self.popen.communicate()
        if not self.raw.exists():
            raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')}")
        return summary(self.raw.read_text())


def frame_key(frame: str) -> str:
    """``fn (file.py:123)`` without the line: one key per function."""
    return LINE.sub(")", frame)


def aggregate(raw: str) -> tuple[int, Counter, Counter]:
    """(samples, inclusive, self) per function of py-spy's raw (collapsed) stacks:
    inclusive counts a sample once for each function on its stack."""
    total, incl, own = 0, Counter(), Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = [frame_key(f) for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        total += int(n)
        for f in set(frames):
            incl[f] += int(n)
        own[frames[-1]] += int(n)
    return total, incl, own


def summary(raw: str, top: int = 30) -> str:
    """The ``top`` functions by inclusive and by self samples, in percent of all."""
    total, incl, own = aggregate(raw)
    if not total:
        return "no samples\n"
    out = [f"{total} samples at {RATE}/s (busy time only)", "", "inclusive:"]
    out += [f"{100 * v / total:6.1f}%  {k}" for k, v in incl.most_common(top)]
    out += ["", "self:"]
    out += [f"{100 * v / total:6.1f}%  {k}" for k, v in own.most_common(top)]
    return "\n".join(out) + "\n"
