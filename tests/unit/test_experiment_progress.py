"""What ``experiment run`` shows while it runs: plain lines off a terminal (the runs,
their outcome, a status line now and then with the recorder's latest numbers)."""

from __future__ import annotations

import io

import pytest

from lab.experiments import progress
from lab.experiments.base import Configuration
from lab.experiments.progress import Plain, live_numbers, reporter

pytestmark = pytest.mark.timeout(60)


class Exp:
    name = "e"
    server = "ext2fs"

    def timeout(self, quick):
        return 100.0


def test_live_numbers():
    s = {"vm": {"free_count": 10, "dirty_count": 3, "potentially_dirty": 0},
         "procs": {"ext2fs": {"threads": 300}}}
    assert live_numbers(s, "ext2fs") == "ext2fs threads 300, free 10, dirty 3"
    s["vm"]["potentially_dirty"] = 7
    assert live_numbers(s, "ext2fs").endswith("potentially dirty 7")
    assert live_numbers(None, "ext2fs") == ""


def test_plain_lines(monkeypatch):
    out = io.StringIO()
    p = reporter(out)
    assert isinstance(p, Plain)  # not a terminal
    p.begin(2)
    p.run_started(Exp(), Configuration("c", "the c"), 1, 2)
    p.tick({"experiment": "e", "config": "c", "step": "s", "elapsed_s": 1, "timeout_s": 9,
            "sample": None})  # too soon for a status line
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.0)
    p.tick({"experiment": "e", "config": "c", "step": "s", "elapsed_s": 31.2,
            "timeout_s": 100, "sample": {"vm": {"free_count": 5}}})
    p.run_finished({"experiment": "e", "config": "c", "run": 1, "status": "failed",
                    "reason": "step s: exit 1", "wall_s": 40.4})
    p.skip()
    p.close()
    assert out.getvalue().splitlines() == [
        "experiment [1/2] e/c (run 1 of 2): the c",
        "  e/c: s 31 s of 100 s; free 5",
        "experiment e: c run 1: failed (step s: exit 1), 40 s"]
    assert p.done == 2


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_rich_bars_on_a_terminal():
    pytest.importorskip("rich")
    out = Terminal()
    p = reporter(out)
    assert isinstance(p, progress.Rich)
    p.begin(1)
    p.run_started(Exp(), Configuration("c", "the c"), None, 1)
    p.tick({"experiment": "e", "config": "c", "step": "s", "elapsed_s": 3, "timeout_s": 9,
            "sample": {"procs": {"ext2fs": {"threads": 42}}}})
    p.run_finished({"experiment": "e", "config": "c", "run": None, "status": "ok",
                    "wall_s": 4.0})
    p.close()
    text = out.getvalue()
    assert "experiment [1/1] e/c: the c" in text and "experiment e: c: ok, 4 s" in text
    assert p.done == 1 and p.current is None
