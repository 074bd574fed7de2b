"""The report of an invocation without a cluster: cells with the spread of repeated
runs, summary.json (what it keeps of the loadgen summaries, the runs), the calibration
rows, and report.md and index.html saying the same from one document."""

from __future__ import annotations

import html
import json
import re

import pytest

from lab.experiments import report, report_html
from lab.experiments.base import Claim, Configuration, Experiment
from lab.experiments.repeat import aggregate

pytestmark = pytest.mark.timeout(60)

CAL = {"host": {"cores": 2, "memory_bytes": 8 << 30}, "floor_rtt_us": {"p50": 210.0,
       "p99": 390.0}, "floor_rate_msg_s": 95000, "null_rpc_us": {"p50": 420.0, "p99": 900.0},
       "kobject_rpc_us": {"p50": 190.0, "p99": 380.0}, "null_rpc_floor_ratio": 2.0,
       "rounds": 400, "wall_s": 1.6}


class Two(Experiment):
    name = "two"
    title = "two <configurations> & a | bar"
    claim = Claim("A claim with <angle> brackets & a | pipe", "a source", "42 things")
    configurations = (Configuration("a", "first"), Configuration("b", "second"))
    workload = "work"
    samples = "samples"
    columns = (("peak", "peak"), ("rate", "MiB/s"), ("wall_s", "wall s"),
               ("status", "status"))

    def findings(self, results):
        return [f"{r['config']}: peak {r['row'].get('peak')}" for r in results
                if r["status"] == "ok"]


def result(config, k=None, status="ok", tmp=None, **row):
    d = f"{tmp}/two/{config}" + (f"/r{k}" if k else "")
    return {"experiment": "two", "config": config, "description": config, "status": status,
            "reason": "" if status == "ok" else "it broke", "run_dir": d,
            "config_dir": f"{tmp}/two/{config}", "run": k, "wall_s": 10.0 + (k or 0),
            "samples": 0, "kernel": {"physical_pages": 2048},
            "disk": {"writes": 100, "ms_per_write": 5.25, "wait_ms_per_write": 40.0,
                     "avg_write_bytes": 4096, "latency_ms": 5.0},
            "results": {"s": {"latency_ms": {"p50": 1.0, "samples": 3,
                                             "cdf": [[0.5, 0.34], [1.0, 0.67], [2.0, 1.0]]},
                              "server": {"samples": [[0, 1], [1, 2]]}, "ok": 3}},
            "row": row}


def test_cells_show_the_spread_of_repeated_runs(tmp_path):
    a = aggregate([result("a", 1, tmp=tmp_path, peak=10, rate=1.5),
                   result("a", 2, tmp=tmp_path, peak=30, rate=1.5)])
    headers, rows = report.table_rows(Two(), [a])
    cells = dict(zip(headers, rows[0]))
    assert cells["peak"] == "20 (10–30)"     # the median, then the runs' min-max
    assert cells["MiB/s"] == "1.50"          # the same in every run: no spread
    assert cells["wall s"] == "12 (11–12)"
    assert cells["status"] == "ok, 2/2 ok"
    one = result("b", tmp=tmp_path, peak=5)
    assert dict(zip(headers, report.table_rows(Two(), [one])[1][0]))["status"] == "ok"


def test_summary_json_keeps_runs_and_cdfs_but_not_sample_lists(tmp_path):
    a = aggregate([result("a", 1, tmp=tmp_path, peak=1), result("a", 2, tmp=tmp_path,
                                                                 peak=3)])
    s = report.strip(a)
    for run in s["runs"]:
        step = run["results"]["s"]
        assert "server" not in step and step["ok"] == 3
        assert step["latency_ms"]["cdf"][-1] == [2.0, 1.0]  # a count named samples stays
    assert a["runs"][0]["results"]["s"]["server"]  # the result itself is untouched


def invocation(tmp_path, cal=CAL):
    exp = Two()
    by = {"two": [aggregate([result("a", 1, tmp=tmp_path, peak=10, rate=1.0),
                             result("a", 2, tmp=tmp_path, peak=30, rate=2.0)]),
                  aggregate([result("b", 1, "failed", tmp=tmp_path, peak=7),
                             result("b", 2, tmp=tmp_path, peak=9)])]}
    png = tmp_path / "two.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nnot really a picture")
    obj = report.summary_object(tmp_path, True, [exp], by, {"two": {"timeseries": str(png)}},
                                100.0, 130.0, repeat=2, calibration=cal)
    return exp, by, obj


def test_markdown_and_html_say_the_same(tmp_path):
    exp, by, obj = invocation(tmp_path)
    paths = report.write_report(tmp_path, obj, [exp], by)
    md, page = paths["report"].read_text(), paths["html"].read_text()
    saved = json.loads(paths["summary"].read_text())
    assert saved["repeat"] == 2 and saved["calibration"]["null_rpc_floor_ratio"] == 2.0
    assert saved["experiments"]["two"]["figures"] == {"timeseries": str(tmp_path / "two.png")}
    doc = report.document(obj, [exp], by)
    e = doc["experiments"][0]
    # the claim beside the measured result, in one table
    assert e["verdict"][1][0][0].startswith(exp.claim.text)
    assert "a: peak 20" in e["verdict"][1][0][1]
    # every cell of every table is in both, escaped for each
    for headers, rows in (e["verdict"], e["table"], e["run_calibration"],
                          (["q", "v"], doc["calibration"])):
        for c in [*headers, *(c for r in rows for c in r)]:
            for line in str(c).split("\n"):
                assert report.md_cell(line) in md, line
                assert report_html.esc(line) in page, line
    assert "A claim with &lt;angle&gt; brackets &amp; a | pipe" in page
    assert "A claim with <angle> brackets & a \\| pipe" in md
    assert "b failed: run 1: failed: it broke" in md and "run 1: failed: it broke" in page
    assert "2048 pages (8 MiB)" in md and "5.25" in md and "40.00" in md
    assert "210 µs (p99 390 µs)" in md and "2.0x the floor" in page
    # the plot: linked from the markdown, inside the page
    assert "![two time series](two.png)" in md
    assert 'src="data:image/png;base64,' in page and "<script" not in page
    # the page is well formed enough: every table closed
    assert page.count("<table") == page.count("</table>") == 4
    assert re.search(r"<title>machemu experiments</title>", page)


def test_calibration_rows_say_what_is_missing(tmp_path):
    assert "not measured" in report.calibration_rows(None)[0][1]
    rows = report.calibration_rows({"host": {"cores": 2, "memory_bytes": 1 << 30},
                                    "error": "BenchError: kernel did not start"})
    assert rows[0] == ["host", "2 cores, 1.0 GiB of memory"]
    assert rows[1][1] == "not measured: BenchError: kernel did not start"
    exp, by, obj = invocation(tmp_path, cal=None)
    assert "--no-calibration" in report.markdown(obj, [exp], by)


def test_a_figure_that_cannot_be_read_is_said_so(tmp_path):
    out = report_html.image(tmp_path / "absent.png", "alt")
    assert out.startswith('<p class="bad">alt:') and "<img" not in out
    assert report_html.esc("a `b<c>` d\ne") == "a <code>b&lt;c&gt;</code> d<br>e"
    # numbers aligned right, except in the first column (the configuration's name)
    t = html.unescape(report_html.table(["config", "h"], [["1", "1 (2–3)"], ["x", "y"]]))
    assert t.count('<td class="n">') == 1 and '<td class="n">1 (2–3)</td>' in t
