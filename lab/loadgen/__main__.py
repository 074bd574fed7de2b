"""python -m lab.loadgen: the load generator (as scripts/loadgen)."""

import sys

from lab.loadgen.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="loadgen"))
