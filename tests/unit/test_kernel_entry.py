"""``python -m kernel``'s entry point: the kernel process leaves rich (and pygments) out,
which structlog.dev would import for pretty tracebacks although the kernel logs JSON
lines — 5 MiB of RSS the bench's per-page figure counts."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

PROBE = """
import runpy, sys
sys.argv = ["kernel", "--help"]
try:
    runpy.run_module("kernel", run_name="__main__")
except SystemExit:
    pass
loaded = lambda m: sys.modules.get(m) is not None
print(loaded("structlog"), loaded("kernel.main"), loaded("rich"), loaded("pygments"))
"""


def test_the_kernel_process_does_not_load_rich():
    pytest.importorskip("rich")  # installed with the project: structlog would take it
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                       timeout=50)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-4:] == ["True", "True", "False", "False"], r.stdout
