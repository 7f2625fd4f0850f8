"""The resume format: everything a killed or stopped training run needs to continue exactly.

``<checkpoint>.resume`` (beside the checkpoint, written atomically at every validation, every
``resume_every`` episodes and when the time budget runs out) is a safetensors file holding

* ``model.<name>``: the method's tensors;
* ``opt.<param>.<name>``: the optimiser's per-parameter state (Adam's step, first and second moments);
* ``rng.torch`` and ``rng.cuda.<i>``: the CPU and CUDA random generators' states (uint8);

and, in the header's ``resume`` entry, JSON with the loop state (:class:`oneshot.training.TrainState`: steps
done -- the sampler's position, since episode ``e`` is drawn from ``(seed, e)`` alone --, best validation,
history, running averages), the optimiser's param groups, the learning-rate scheduler's state, Python's and
NumPy's global generator states, and ``format`` / ``format_version``. Version 1 files (no generator states)
still load. Nothing is unpickled.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from oneshot.checkpoint import state_tensors
from oneshot.errors import OneshotError
from oneshot.files import atomic_write_bytes
from oneshot.methods import Method

FORMAT = "oneshot-resume"
FORMAT_VERSION = 2


def resume_path(checkpoint: Path) -> Path:
    """The resume file beside a checkpoint: ``<checkpoint>.resume``."""
    return checkpoint.with_name(checkpoint.name + ".resume")


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return tensors


def _rng_json() -> dict[str, Any]:
    version, keys, gauss = random.getstate()
    name, np_keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    return {
        "python": [version, list(keys), gauss],
        "numpy": [name, np.asarray(np_keys).tolist(), int(pos), int(has_gauss), float(cached)],
    }


def _restore_rng(tensors: dict[str, torch.Tensor], saved: dict[str, Any] | None) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][: torch.cuda.device_count()])
    if saved:
        version, keys, gauss = saved["python"]
        random.setstate((version, tuple(keys), gauss))
        name, np_keys, pos, has_gauss, cached = saved["numpy"]
        np.random.set_state((name, np.asarray(np_keys, dtype=np.uint32), pos, has_gauss, cached))


def save_resume(path: Path, method: Method, opt: torch.optim.Optimizer, sched: Any, state: dict[str, Any]) -> None:
    """Write the resume file (model, optimiser, scheduler, generator states and the loop ``state``) atomically."""
    tensors = {f"model.{k}": v for k, v in state_tensors(method).items()}
    opt_state = opt.state_dict()
    for pid, pstate in opt_state["state"].items():
        for key, value in pstate.items():
            tensors[f"opt.{pid}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    tensors.update(_rng_tensors())
    meta = dict(
        state,
        param_groups=opt_state["param_groups"],
        scheduler=sched.state_dict(),
        rng=_rng_json(),
        format=FORMAT,
        format_version=FORMAT_VERSION,
    )
    atomic_write_bytes(path, save(tensors, metadata={"resume": json.dumps(meta)}))


def load_resume(path: Path, method: Method, opt: torch.optim.Optimizer, sched: Any) -> dict[str, Any]:
    """Restore ``method``, ``opt``, ``sched`` and the random generators from a resume file; returns the loop state."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["resume"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise OneshotError(f"resume state {path} is unreadable ({exc}): delete it to start afresh") from None
    if int(meta.pop("format_version", 1)) > FORMAT_VERSION:
        raise OneshotError(f"resume state {path} was written by a newer oneshot: upgrade, or delete it to start afresh")
    meta.pop("format", None)
    model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        method.load_state_dict(model, strict=True)
    except RuntimeError:
        raise OneshotError(f"resume state {path} belongs to another model: delete it or change --out") from None
    opt_state: dict[str, Any] = {"state": {}, "param_groups": meta.pop("param_groups")}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            opt_state["state"].setdefault(int(pid), {})[name] = value
    opt.load_state_dict(opt_state)
    sched.load_state_dict(meta.pop("scheduler"))
    _restore_rng(tensors, meta.pop("rng", None))
    return meta
