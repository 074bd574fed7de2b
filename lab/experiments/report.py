"""The summary of an invocation: the table of each experiment (one row per
configuration; rich on a terminal when it is installed, plain text otherwise), and the
files DIR/summary.json (everything, one JSON object) and DIR/report.md (the claim beside
the measured rows, the findings, the plot, the recorder's cost)."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from lab.experiments.summary import load_samples, series

MIB = 1 << 20


def cell(key: str, row: dict, result: dict) -> str:
    """One cell of the table as text ("-" for nothing)."""
    if key == "status":
        return result["status"]
    if key == "wall_s":
        v = result.get("wall_s")
        return "-" if v is None else f"{v:.0f}"
    v = row.get(key)
    if v is None:
        return "-"
    if key == "bytes_verified":
        exp = row.get("bytes_expected")
        mark = " (all)" if row.get("verified_all") else (f" of {exp / MIB:.1f}"
                                                       if exp else "")
        return f"{v / MIB:.1f} MiB{mark}"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def table_rows(exp, results: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of an experiment's table."""
    headers = ["config", *(h for _, h in exp.columns)]
    rows = [[r["config"], *(cell(k, r.get("row") or {}, r) for k, _ in exp.columns)]
            for r in results]
    return headers, rows


def plain_table(headers: list[str], rows: list[list[str]]) -> str:
    """Aligned columns, a rule under the headers."""
    w = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w[i]) for i, h in enumerate(headers))
    out = [line, "  ".join("-" * x for x in w)]
    out += ["  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r))
            for r in rows]
    return "\n".join(out)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def print_tables(exps: list, by_exp: dict[str, list[dict]], stream=None):
    """Print each experiment's table: rich on a terminal if it is installed, plain
    otherwise; then its findings and the reasons of runs that did not succeed."""
    stream = stream or sys.stdout
    console = None
    if stream.isatty():
        try:
            from rich.console import Console
            from rich.table import Table

            console = Console(file=stream)
        except ImportError:
            console = None
    for exp in exps:
        results = by_exp.get(exp.name, [])
        headers, rows = table_rows(exp, results)
        print(f"\n{exp.title}", file=stream)
        if console is not None:
            t = Table(*headers)
            for r in rows:
                t.add_row(*r)
            console.print(t)
        else:
            print(plain_table(headers, rows), file=stream)
        for r in results:
            if r["status"] != "ok":
                print(f"  {r['config']}: {r['status']}: {r.get('reason', '')}", file=stream)
        for f in exp.findings(results):
            print(f"  {f}", file=stream)


def recorder_cost(results: list[dict]) -> dict:
    """What sampling cost, over every run: median vm_statistics and kernel_info times
    (ms, as the recorder saw them), the median kernel_info period, the samples."""
    vm, info, every, n = [], [], [], 0
    for r in results:
        samples = load_samples(Path(r["run_dir"]) / "samples.jsonl")
        n += len(samples)
        vm += [v for _, v in series(samples, "vm_ms")]
        info += [v for _, v in series(samples, "info_ms")]
        every += [v for _, v in series(samples, "info_every_s")]

    def med(xs):
        return round(statistics.median(xs), 2) if xs else None

    return {"samples": n, "vm_statistics_ms_median": med(vm),
            "kernel_info_ms_median": med(info), "kernel_info_ms_max": max(info, default=None),
            "kernel_info_every_s_median": med(every)}


def strip(result: dict) -> dict:
    """A result as summary.json keeps it: the loadgen summaries' own sample lists (in
    DIR/CONFIG/STEP.json already) left out."""
    r = dict(result)
    res = {}
    for step, s in (result.get("results") or {}).items():
        s = {k: v for k, v in s.items() if not isinstance(v, dict) or "samples" not in v}
        res[step] = s
    r["results"] = res
    return r


def summary_object(out: Path, quick: bool, exps: list, by_exp: dict, plots: dict,
                   started: float, finished: float) -> dict:
    """The invocation as one JSON object."""
    return {"out": str(out), "quick": quick, "started": started, "finished": finished,
            "wall_s": round(finished - started, 1),
            "experiments": {e.name: {**e.describe(), "plot": plots.get(e.name),
                                     "findings": e.findings(by_exp.get(e.name, [])),
                                     "recorder": recorder_cost(by_exp.get(e.name, [])),
                                     "results": [strip(r) for r in by_exp.get(e.name, [])]}
                            for e in exps}}


def write_summary(out: Path, obj: dict):
    (out / "summary.json").write_text(json.dumps(obj, indent=1, default=str) + "\n")


def markdown(obj: dict, exps: list, by_exp: dict) -> str:
    """DIR/report.md."""
    lines = ["# machemu experiments", "",
             f"{'Quick' if obj['quick'] else 'Full'} run in `{obj['out']}`, "
             f"{obj['wall_s']:.0f} s wall time.", ""]
    for exp in exps:
        e = obj["experiments"][exp.name]
        results = by_exp.get(exp.name, [])
        lines += [f"## {exp.title}", "",
                  f"**Claim.** {exp.claim.text}", "",
                  f"*Source:* {exp.claim.source}. *Published:* {exp.claim.figure}.", "",
                  f"**Workload.** {exp.workload}.", "",
                  f"**Sampled.** {exp.samples}.", "", "**Configurations.**", ""]
        lines += [f"- `{c.name}`: {c.description}" for c in exp.configurations]
        headers, rows = table_rows(exp, results)
        lines += ["", "**Measured.**", "", markdown_table(headers, rows), ""]
        for r in results:
            if r["status"] != "ok":
                lines.append(f"- `{r['config']}` {r['status']}: {r.get('reason', '')}")
        lines += [f"- {f}" for f in e["findings"]]
        if e.get("plot"):
            lines += ["", f"![{exp.name}]({Path(e['plot']).name})"]
        rc = e["recorder"]
        phys = sorted({(r.get("row") or {}).get("physical_pages") for r in results} - {None})
        lines += ["", f"Physical memory: {', '.join(map(str, phys)) or '-'} pages. "
                      f"Recorder: {rc['samples']} samples; vm_statistics "
                      f"{rc['vm_statistics_ms_median']} ms (median), every sample; "
                      f"machemu_kernel_info "
                      f"{rc['kernel_info_ms_median']} ms (median, max "
                      f"{rc['kernel_info_ms_max']}), asked every "
                      f"{rc['kernel_info_every_s_median']} s (median).", ""]
        lines += [f"Run directories: `{r['run_dir']}`" for r in results[:1]]
        lines.append("")
    return "\n".join(lines)
