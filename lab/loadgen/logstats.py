"""What translators write about themselves in their logs (DIR/NAME.log): the JSON
records at its head or tail, and their times."""

from __future__ import annotations

import json
import os
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
