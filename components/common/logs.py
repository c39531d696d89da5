"""The progress lines of the CLIs (train, tune): time and message on stderr."""

from __future__ import annotations

import logging
import sys


def configure_logging() -> None:
    """Progress lines of the ``components`` loggers on stderr (once per process; with DDP, rank 0 of a job
    prints them)."""
    logger = logging.getLogger("components")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
