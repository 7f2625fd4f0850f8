"""Exact resume: a training run killed with SIGKILL and resumed ends where an unbroken run ends, bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from training_util import CHILD, child_env


def read_resume(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["resume"])


def last_per_step(losses_file: Path) -> dict[int, list[float]]:
    """Step -> (running loss, running accuracy), the last record of each step (a resumed run repeats a few)."""
    return {int(e): [loss, acc] for e, loss, acc in json.loads(losses_file.read_text())}


@pytest.mark.parametrize(
    "method,extra",
    [
        ("protonet", ["--augment"]),
        ("maml", ["--meta-batch", "2"]),
        ("maml", ["--meta-batch", "2", "--task-batch", "vmap"]),
        ("reptile", ["--meta-batch", "2"]),
    ],
)
def test_killed_run_resumes_to_the_same_weights(tmp_path, method, extra):
    py, env = sys.executable, child_env()
    whole, broken = tmp_path / "whole.safetensors", tmp_path / "broken.safetensors"
    subprocess.run([py, str(CHILD), str(whole), method, "12", *extra], env=env, check=True, timeout=120)

    # Validation at step 5 writes the resume state (resume_every=4 wrote one at 4 too); kill it at step 7.
    proc = subprocess.Popen([py, str(CHILD), str(broken), method, "12", "--hang-at", "7", *extra], env=env)
    try:
        deadline = time.monotonic() + 120
        while not broken.with_name(broken.name + ".hanging").exists():
            assert proc.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    _, meta = read_resume(broken.with_name(broken.name + ".resume"))
    assert meta["episode"] == 5 and meta["format_version"] == 2

    subprocess.run([py, str(CHILD), str(broken), method, "12", "--resume", *extra], env=env, check=True, timeout=120)
    a, meta_a = read_resume(whole.with_name(whole.name + ".resume"))
    b, meta_b = read_resume(broken.with_name(broken.name + ".resume"))
    assert meta_a["episode"] == meta_b["episode"] == 12
    assert a.keys() == b.keys() and "rng.torch" in a
    assert any(k.startswith("opt.") for k in a) == (method != "reptile")  # Reptile's SGD keeps no per-weight state
    for k in a:  # model, Adam moments and step, generator state: identical, no tolerance
        assert torch.equal(a[k], b[k]), k
    assert meta_a["scheduler"] == meta_b["scheduler"]
    assert meta_a["history"] == meta_b["history"]  # same validations, same running loss at each
    assert last_per_step(whole.with_name(whole.name + ".losses.json")) == last_per_step(
        broken.with_name(broken.name + ".losses.json")
    )
    with safe_open(str(whole), framework="pt") as f, safe_open(str(broken), framework="pt") as g:
        assert all(torch.equal(f.get_tensor(k), g.get_tensor(k)) for k in f.keys())  # the best checkpoint too
