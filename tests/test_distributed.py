"""Data-parallel training (torchrun, DistributedDataParallel over gloo): two processes with two tasks each
follow the same loss curve and reach the same weights as one process with the four-task meta-batch (the tasks
of each process one by one, or at once under vmap)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from training_util import CHILD, child_env

from oneshot.distributed import Parallel, check_tasks, shard_tasks
from oneshot.errors import OneshotError

#: Conv biases feed batch norm, which subtracts them again: their gradient is zero up to rounding, and Adam
#: turns that rounding noise into lr-sized steps that differ between runs. The function does not depend on them.
CANCELLED = ("encoder.features.0.bias", "encoder.features.4.bias", "encoder.features.8.bias", "encoder.features.12.bias")


def test_tasks_are_split_evenly_across_ranks():
    x = np.arange(4 * 3)  # 4 tasks of 3 rows, task-major
    assert shard_tasks(x, 4, Parallel(0, 2)).tolist() == [0, 1, 2, 3, 4, 5]
    assert shard_tasks(x, 4, Parallel(1, 2)).tolist() == [6, 7, 8, 9, 10, 11]
    check_tasks(4, Parallel(1, 2))
    with pytest.raises(OneshotError, match="meta_batch"):
        check_tasks(1, Parallel(0, 2))


@pytest.mark.parametrize("task_batch", ["loop", "vmap"])  # each rank's two tasks one by one, or under vmap
def test_two_processes_match_one(tmp_path, task_batch):
    env = child_env()
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    args = ["maml", "8", "--meta-batch", "4", "--augment", "--task-batch", task_batch]
    subprocess.run([sys.executable, str(CHILD), str(one), *args], env=env, check=True, timeout=120)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    subprocess.run([*torchrun, str(CHILD), str(two), *args], env=env, check=True, timeout=180)

    curve = lambda p: np.array(json.loads(p.with_name(p.name + ".losses.json").read_text()))  # noqa: E731
    c1, c2 = curve(one), curve(two)  # rank 0 logs the loss and accuracy averaged over ranks
    assert c1.shape == c2.shape == (8, 3)
    np.testing.assert_allclose(c2, c1, rtol=1e-6, atol=1e-6)
    resume = lambda p: str(p.with_name(p.name + ".resume"))  # noqa: E731  (the final weights)
    with safe_open(resume(one), framework="pt") as f, safe_open(resume(two), framework="pt") as g:
        assert f.keys() == g.keys()
        for k in f.keys():
            if k.startswith("model.") and k[len("model.") :] not in CANCELLED:
                torch.testing.assert_close(g.get_tensor(k), f.get_tensor(k), rtol=0, atol=1e-5, msg=k)
