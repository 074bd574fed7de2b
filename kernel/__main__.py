import sys

# The kernel logs JSON lines (protocol.logs) and draws nothing on a terminal, yet
# structlog.dev imports rich (and pygments) for pretty tracebacks when it is installed:
# 5 MiB of RSS beside the frames. Hide it; structlog then does without.
sys.modules.setdefault("rich", None)

from kernel.main import main  # noqa: E402

sys.exit(main())
