"""How the tools print: rich tables where a person looks (a terminal), aligned plain
text otherwise, one JSON document with ``--json``."""

from __future__ import annotations

import json
import sys

from lab.experiments.report import plain_table


def terminal(stream=None) -> bool:
    """Whether ``stream`` (default stdout) is a terminal rich can draw on."""
    stream = stream or sys.stdout
    try:
        if not stream.isatty():
            return False
        import rich  # noqa: F401
    except (ImportError, AttributeError, ValueError):
        return False
    return True


def console(stream=None):
    """A rich Console on ``stream`` (default stdout)."""
    from rich.console import Console

    return Console(file=stream or sys.stdout, highlight=False)


def print_table(headers: list[str], rows: list[list], title: str | None = None,
                stream=None, rich: bool | None = None):
    """``rows`` under ``headers``: a rich table on a terminal (or if ``rich``), aligned
    text otherwise; every cell printed with str()."""
    stream = stream or sys.stdout
    cells = [[str(c) for c in r] for r in rows]
    if terminal(stream) if rich is None else rich:
        from rich.table import Table

        t = Table(*headers, title=title, title_justify="left")
        for r in cells:
            t.add_row(*r)
        console(stream).print(t)
        return
    if title:
        print(title, file=stream)
    print(plain_table(headers, cells), file=stream)


def print_json(obj, stream=None):
    """``obj`` as one indented JSON document."""
    print(json.dumps(obj, indent=2, sort_keys=True), file=stream or sys.stdout)


def print_json_line(obj, stream=None):
    """``obj`` as one JSON line (for a stream of samples), flushed."""
    stream = stream or sys.stdout
    print(json.dumps(obj, separators=(",", ":"), sort_keys=True), file=stream, flush=True)


def human_bytes(n) -> str:
    """A byte count as "512 B", "1.5 MiB"."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def vmstat_size(n: int) -> str:
    """A byte count as the Hurd's vmstat prints a SIZE field without a unit option: at
    most four digits and a K/M/G/T suffix (print_val: divide by 1024 while >= 10000,
    "%.3g" below 1000)."""
    v, units = float(n), " KMGT"
    u = 0
    while v >= 10000 and u < len(units) - 1:
        v /= 1024
        u += 1
    text = f"{v:.0f}" if v >= 1000 else f"{v:.3g}"
    return text + units[u].strip()
