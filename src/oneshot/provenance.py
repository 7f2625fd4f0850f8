"""Where a number or a model came from: one provenance record (command, commit, machine, date, versions).

Checkpoints (``metadata["provenance"]``, with ``commit`` and ``created`` kept at the top level as before) and
every benchmark's ``benchmarks/results/*.json`` carry :func:`provenance`, so a figure can be traced to the
command and the code that produced it and the machine it was measured on.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any


def git_commit() -> str:
    """The current commit of the source tree, or ``"unknown"`` outside a git checkout; ``$ONESHOT_COMMIT``, when
    set, names it for a copy of the tree without its ``.git`` (a lent GPU machine)."""
    if os.environ.get("ONESHOT_COMMIT"):
        return os.environ["ONESHOT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0:
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def machine_description() -> dict[str, Any]:
    """Where a number was measured: CPU, cores, accelerator, library versions."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions of oneshot and the libraries that shape its numbers (those installed)."""
    out = {"python": platform.python_version()}
    for dist in ("oneshot", "torch", "numpy", "faiss-cpu", "safetensors"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def command_line(argv: list[str] | None = None, program: str = "python") -> str:
    """The command that is running, quoted so it can be pasted into a shell (``program`` replaces argv[0]'s
    interpreter: ``python benchmarks/x.py ...`` or ``oneshot train ...``)."""
    args = sys.argv if argv is None else argv
    return " ".join([program, *(shlex.quote(a) for a in args)])


def provenance(command: str | None = None) -> dict[str, Any]:
    """The record: ``command`` (default: this process's), ``commit``, ``date`` (UTC, ISO 8601), ``machine``
    (:func:`machine_description`) and ``versions`` (:func:`versions`)."""
    return {
        "command": command if command is not None else command_line(),
        "commit": git_commit(),
        "date": now_iso(),
        "machine": machine_description(),
        "versions": versions(),
    }
