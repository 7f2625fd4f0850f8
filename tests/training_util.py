"""Helpers of the resume and data-parallel tests: the child training script and its environment."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).resolve().parent / "train_child.py"


def child_env() -> dict[str, str]:
    """This environment with the worktree's src first on the path and one thread per process."""
    src = str(ROOT / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
