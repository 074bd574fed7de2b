"""What translators write about themselves in their logs (DIR/NAME.log): the JSON
records at its head or tail, their times, the latest statistics record."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path


def log_records(path: Path, head: bool, limit: int = 256 * 1024) -> list[dict]:
    """The JSON records in the first (``head``) or last ``limit`` bytes of a log; []
    when it cannot be read."""
    try:
        with open(path, "rb") as f:
            if not head:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - limit))
            text = f.read(limit).decode(errors="replace")
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict):
            out.append(r)
    return out


def record_time(r: dict) -> float | None:
    """A record's ISO 8601 timestamp as a Unix time, None without a valid one."""
    ts = r.get("timestamp")
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def server_stats(run_dir: str, name: str, keys, since: float | None = None,
                 wait: float = 0.0) -> dict | None:
    """The ``keys`` of the last "stats" (or "... stopping") record of a translator's log
    DIR/NAME.log, with ``fresh`` (logged after ``since``) and ``age_s``; None without
    one.  With ``since``, waits up to ``wait`` seconds for a fresh one (the translator
    logs one every --stats-interval)."""
    log = Path(run_dir) / f"{name}.log"
    deadline = time.monotonic() + wait
    while True:
        last, t = None, None
        for r in log_records(log, head=False):
            if r.get("event") == "stats" or str(r.get("event", "")).endswith(" stopping"):
                last = r
        if last is not None:
            t = record_time(last)
        fresh = last is not None and (since is None or (t is not None and t >= since))
        if fresh or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if last is None:
        return None
    d = {k: last[k] for k in keys if k in last}
    d["fresh"] = bool(fresh)
    if t is not None:
        d["age_s"] = round(time.time() - t, 2)
    return d
