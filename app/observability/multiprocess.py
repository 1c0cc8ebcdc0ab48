"""Where the workers of `serve --workers N` keep their metric values: one folder, named by
PROMETHEUS_MULTIPROC_DIR, set up before any worker (or prometheus-client) starts. Deliberately
free of prometheus-client imports: importing it reads the variable."""

from __future__ import annotations

import os
from pathlib import Path

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The folder of the workers' values when running with several workers, else None."""
    return os.environ.get(MULTIPROCESS_ENV) or None


def prepare_multiprocess_dir(path: Path) -> None:
    """Make `path` an empty folder for a new server's values (before any worker starts)."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
