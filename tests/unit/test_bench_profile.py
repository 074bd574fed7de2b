"""lab.bench.profile: py-spy's collapsed stacks summed per function."""

from __future__ import annotations

import pytest

from lab.bench.profile import aggregate, summary

pytestmark = pytest.mark.timeout(30)

RAW = """\
process 7:"python -m kernel";run (kernel/main.py:536);poll (zmq/poll.py:80) 6
process 7:"python -m kernel";run (kernel/main.py:544);handle (kernel/main.py:410) 3
process 7:"python -m kernel";run (kernel/main.py:546);handle (kernel/main.py:420);trap (kernel/mach_msg.py:40) 1
garbage line
"""


def test_samples_summed_per_function_whatever_the_line():
    total, incl, own = aggregate(RAW)
    assert total == 10
    assert incl["run (kernel/main.py)"] == 10       # three lines of run, one function
    assert incl["handle (kernel/main.py)"] == 4
    assert own["handle (kernel/main.py)"] == 3 and own["trap (kernel/mach_msg.py)"] == 1
    assert not any(k.startswith("process") for k in incl)


def test_summary_in_percent():
    text = summary(RAW)
    assert "10 samples" in text and "100.0%  run (kernel/main.py)" in text
    assert "60.0%  poll (zmq/poll.py)" in text
    assert summary("") == "no samples\n"
