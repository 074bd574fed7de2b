"""The log format every machemu process writes: structlog, JSON lines, one file per
process, with bound context (task, port, object, offset)."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def setup(process: str, path: str | os.PathLike | None = None, level: str = "info"):
    """Send this process's structlog output, as JSON lines, to ``path`` (stderr if None)."""
    stream = open(path, "a", buffering=1) if path else sys.stderr
    pid = os.getpid()

    def add_process(_logger, _method, event):
        # every thread's lines, not only the main thread's (contextvars are per thread)
        event.setdefault("process", process)
        event.setdefault("pid", pid)
        return event

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_process,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    return structlog.get_logger(process)
