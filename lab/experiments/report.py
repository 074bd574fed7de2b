"""The report of an invocation: the table of each experiment (one row per
configuration; rich on a terminal when it is installed, plain text otherwise), and the
files DIR/summary.json (everything, one JSON object), DIR/report.md and DIR/index.html.

report.md and index.html say the same thing, rendered from one document
(``document``): the calibration of the invocation (transport floor, kernel null RPC,
host), then per experiment the claim beside the measured result in one table, the
configurations, the table of every configuration (with --repeat: medians, and the
min-max of the runs in brackets), the plots, the calibration of its runs (physical
memory, the disk as ext2fs saw it) and the recorder's cost.  index.html is drawn by
lab.experiments.report_html.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from lab.experiments.base import physical_pages
from lab.experiments.repeat import is_number, runs_of
from lab.experiments.summary import load_samples, series

MIB = 1 << 20
FIGURES = ("timeseries", "latency", "bars")  # the PNGs of an experiment, in order
FIGURE_NAMES = {"timeseries": "time series", "latency": "latency CDFs",
                "bars": "summary figures"}


def number(v) -> str:
    """A number as the tables print it."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if 0 < abs(v) < 0.1:
            return f"{v:.2g}"  # 0.021 ms per write, not 0.02
        return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def cell(key: str, row: dict, result: dict) -> str:
    """One cell of the table as text ("-" for nothing); a figure that differed between
    the runs of a configuration is followed by their min-max."""
    if key == "status":
        s = result["status"]
        return f"{s}, {result.get('runs_ok', 0)}/{result['repeat']} ok" \
            if result.get("repeat") else s
    spread = (result.get("spread") or {}).get(key)
    if key == "wall_s":
        v = result.get("wall_s")
        if v is None:
            return "-"
        walls = [r["wall_s"] for r in runs_of(result) if is_number(r.get("wall_s"))]
        return f"{v:.0f}" + between(f"{min(walls):.0f}", f"{max(walls):.0f}")
    v = row.get(key)
    if v is None:
        return "-"
    if key == "bytes_verified":
        exp = row.get("bytes_expected")
        mark = " (all)" if row.get("verified_all") else (f" of {exp / MIB:.1f}"
                                                       if exp else "")
        return f"{v / MIB:.1f} MiB{mark}"
    return number(v) + (between(number(spread[0]), number(spread[1])) if spread else "")


def between(lo: str, hi: str) -> str:
    """" (lo–hi)", or nothing where they print alike."""
    return "" if lo == hi else f" ({lo}–{hi})"


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


def md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", "<br>")


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(md_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def print_tables(exps: list, by_exp: dict[str, list[dict]], stream=None):
    """Print each experiment's table: rich on a terminal if it is installed and the
    table fits its width (rich would cut every heading short), plain otherwise; then
    its findings and the reasons of runs that did not succeed."""
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
        plain = plain_table(headers, rows)
        # rich draws a border and padding: 3 more columns a cell
        if console is not None and len(plain.splitlines()[0]) + len(headers) * 3 \
                <= console.width:
            t = Table(*headers)
            for r in rows:
                t.add_row(*r)
            console.print(t)
        else:
            print(plain, file=stream)
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
        for run in runs_of(r):
            samples = load_samples(Path(run["run_dir"]) / "samples.jsonl")
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
    DIR/CONFIG/STEP.json already) left out, its runs' too."""
    r = dict(result)
    if "results" in result:
        r["results"] = {step: {k: v for k, v in s.items()
                               if not (isinstance(v, dict) and isinstance(v.get("samples"),
                                                                          list))}
                        for step, s in (result.get("results") or {}).items()}
    if "runs" in result:
        r["runs"] = [strip(x) for x in result["runs"]]
    return r


def figures(drawn) -> dict:
    """kind -> path of the PNGs drawn (an older caller's single path: the time series)."""
    if isinstance(drawn, dict):
        return {k: v for k, v in drawn.items() if v}
    return {"timeseries": drawn} if drawn else {}


def summary_object(out: Path, quick: bool, exps: list, by_exp: dict, plots: dict,
                   started: float, finished: float, *, repeat: int = 1,
                   calibration: dict | None = None) -> dict:
    """The invocation as one JSON object; ``plots``: experiment -> its PNGs (kind ->
    path, as plot.plot_experiment returns them)."""
    return {"out": str(out), "quick": quick, "repeat": repeat, "started": started,
            "finished": finished, "wall_s": round(finished - started, 1),
            "calibration": calibration,
            "experiments": {e.name: {**e.describe(),
                                     "plot": figures(plots.get(e.name)).get("timeseries"),
                                     "figures": figures(plots.get(e.name)),
                                     "findings": e.findings(by_exp.get(e.name, [])),
                                     "recorder": recorder_cost(by_exp.get(e.name, [])),
                                     "results": [strip(r) for r in by_exp.get(e.name, [])]}
                            for e in exps}}


def write_summary(out: Path, obj: dict):
    (out / "summary.json").write_text(json.dumps(obj, indent=1, default=str) + "\n")


# ---------------------------------------------------------------- the document

def us(d: dict | None) -> str:
    return "-" if not d else f"{d['p50']:.0f} µs (p99 {d['p99']:.0f} µs)"


def calibration_rows(cal: dict | None) -> list[list[str]]:
    """[quantity, value] rows of the invocation's calibration."""
    if not cal:
        return [["calibration", "not measured (--no-calibration)"]]
    h = cal.get("host") or {}
    out = [["host", f"{h.get('cores', '-')} cores, "
                    f"{h.get('memory_bytes', 0) / (1 << 30):.1f} GiB of memory"]]
    if cal.get("error"):
        return out + [["floor and null RPC", f"not measured: {cal['error']}"]]
    return out + [
        ["transport floor round trip (zmq + msgpack, 4 KiB)", us(cal.get("floor_rtt_us"))],
        ["transport floor pipelined", f"{cal.get('floor_rate_msg_s', 0):,} msg/s"],
        ["kernel null RPC (demo_null, two hops)",
         f"{us(cal.get('null_rpc_us'))}, {cal.get('null_rpc_floor_ratio')}x the floor"],
        ["kernel-served RPC (mach_port_type, one hop)", us(cal.get("kobject_rpc_us"))],
        ["measured", f"at the start, {cal.get('rounds')} round trips each, "
                     f"{cal.get('wall_s')} s"],
    ]


def run_calibration(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): each configuration's physical memory and disk per write (the
    median over its runs)."""
    headers = ["config", "physical memory", "disk writes", "ms per write (device)",
               "ms queued per write", "bytes per write", "emulated latency ms"]
    rows = []
    for r in results:
        pages = (r.get("row") or {}).get("physical_pages") or (
            physical_pages(r["kernel"]) if r.get("kernel") is not None else None)
        mem = "-" if pages is None else f"{pages} pages ({pages * 4096 / MIB:.0f} MiB)"
        d = r.get("disk") or {}
        rows.append([r["config"], mem, *("-" if d.get(k) is None else number(d[k])
                                         for k in ("writes", "ms_per_write",
                                                   "wait_ms_per_write", "avg_write_bytes",
                                                   "latency_ms"))])
    return headers, rows


def document(obj: dict, exps: list, by_exp: dict) -> dict:
    """What report.md and index.html say, as data: ``title``, ``intro``,
    ``calibration`` ([quantity, value] rows) and ``experiments``, each with its claim
    and source, ``verdict`` (the claim beside the measured result: one table),
    configurations, ``table``, ``notes`` (runs that did not succeed), ``figures``
    ([caption, file name]), ``run_calibration`` (a table), ``recorder`` (a sentence)
    and ``run_dirs``."""
    rep = obj.get("repeat") or 1
    intro = (f"{'Quick' if obj['quick'] else 'Full'} run in `{obj['out']}`, "
             f"{obj['wall_s']:.0f} s wall time"
             + (f"; every configuration run {rep} times in alternating order, each "
                "figure the median of its runs that succeeded, their min-max in brackets"
                if rep > 1 else "") + ".")
    doc = {"title": "machemu experiments", "intro": intro,
           "calibration": calibration_rows(obj.get("calibration")), "experiments": []}
    for exp in exps:
        e = obj["experiments"][exp.name]
        results = by_exp.get(exp.name, [])
        measured = e["findings"] or ["see the table of every configuration below"]
        claim = (f"{exp.claim.text}\nSource: {exp.claim.source}.\n"
                 f"Published: {exp.claim.figure}.")
        rc = e["recorder"]
        recorder = (f"Recorder: {rc['samples']} samples; vm_statistics "
                    f"{rc['vm_statistics_ms_median']} ms (median), every sample; "
                    f"machemu_kernel_info {rc['kernel_info_ms_median']} ms (median, max "
                    f"{rc['kernel_info_ms_max']}), asked every "
                    f"{rc['kernel_info_every_s_median']} s (median).")
        doc["experiments"].append({
            "name": exp.name, "title": exp.title, "claim": exp.claim.text,
            "verdict": (["claim", "measured"], [[claim, "\n".join(measured)]]),
            "workload": exp.workload, "samples": exp.samples,
            "configurations": [[c.name, c.description] for c in exp.configurations],
            "table": table_rows(exp, results),
            "notes": [f"{r['config']} {r['status']}: {r.get('reason', '')}"
                      for r in results if r["status"] != "ok"],
            "figures": [[FIGURE_NAMES[k], Path(e["figures"][k]).name]
                        for k in FIGURES if e.get("figures", {}).get(k)],
            "run_calibration": run_calibration(results),
            "recorder": recorder,
            "run_dirs": sorted({str(Path(run["run_dir"]).parent.parent) + "/CONFIG/rK"
                                if run.get("run") else
                                str(Path(run["run_dir"]).parent) + "/CONFIG"
                                for r in results for run in runs_of(r)})})
    return doc


def markdown(obj: dict, exps: list, by_exp: dict) -> str:
    """DIR/report.md."""
    doc = document(obj, exps, by_exp)
    lines = [f"# {doc['title']}", "", doc["intro"], "", "**Calibration.**", "",
             markdown_table(["quantity", "value"], doc["calibration"]), ""]
    for e in doc["experiments"]:
        lines += [f"## {e['title']}", "", markdown_table(*e["verdict"]), "",
                  f"**Workload.** {e['workload']}.", "", f"**Sampled.** {e['samples']}.",
                  "", "**Configurations.**", ""]
        lines += [f"- `{name}`: {d}" for name, d in e["configurations"]]
        lines += ["", "**Measured.**", "", markdown_table(*e["table"]), ""]
        lines += [f"- {n}" for n in e["notes"]]
        lines += [x for caption, f in e["figures"] for x in (f"![{e['name']} {caption}]({f})",
                                                            "")]
        lines += ["**Calibration of the runs.**", "", markdown_table(*e["run_calibration"]),
                  "", e["recorder"], ""]
        lines += [f"Run directories: `{d}`" for d in e["run_dirs"]]
        lines.append("")
    return "\n".join(lines)


def write_report(out: Path, obj: dict, exps: list, by_exp: dict) -> dict[str, Path]:
    """summary.json, report.md and index.html in ``out``; their paths by name."""
    from lab.experiments import report_html

    out = Path(out)
    write_summary(out, obj)
    paths = {"summary": out / "summary.json", "report": out / "report.md",
             "html": out / "index.html"}
    paths["report"].write_text(markdown(obj, exps, by_exp))
    paths["html"].write_text(report_html.render(document(obj, exps, by_exp), out))
    return paths
