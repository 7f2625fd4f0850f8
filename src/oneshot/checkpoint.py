"""Checkpoints: safetensors weights with the JSON metadata needed to rebuild and trust them.

One ``.safetensors`` file holds the method's tensors; its header's ``oneshot`` entry is a JSON document with
the method and its options, the encoder and its options, the preprocessing, the embedding size, the data
split, the training command, seed and commit, and a SHA-256 of the tensors. Loading rebuilds the method
from the metadata and refuses a file whose tensors do not match it (wrong method, wrong shapes, edited or
truncated bytes). Nothing is unpickled.

Beside it, the *resume* format (``<checkpoint>.resume``, written at every validation): a safetensors file with
the model's and the optimiser's tensors and the training loop's state as JSON, so an interrupted run
continues exactly where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from oneshot.data.images import Preprocessing
from oneshot.encoders import build_encoder
from oneshot.errors import OneshotError
from oneshot.files import atomic_write_bytes
from oneshot.methods import Method, build_method

FORMAT = "oneshot-checkpoint"
FORMAT_VERSION = 1


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class Checkpoint:
    """A loaded checkpoint: the method (in eval mode) and its metadata."""

    method: Method
    metadata: dict[str, Any]

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.metadata.get("preprocessing"))

    @property
    def input_envelope(self) -> dict[str, Any] | None:
        """Range of training inputs' pixel statistics (:func:`oneshot.data.images.checkpoint_envelope`)."""
        from oneshot.data.images import checkpoint_envelope

        return checkpoint_envelope(self.metadata)

    @property
    def domain(self) -> str:
        """What the encoder was trained on, e.g. ``omniglot``, ``att_faces``, ``neu_det``."""
        return str((self.metadata.get("data") or {}).get("dataset", "omniglot"))


def state_tensors(method: Method) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in method.state_dict().items()}


def save_checkpoint(path: str | Path, method: Method, metadata: dict[str, Any]) -> Path:
    """Write ``method``'s tensors and ``metadata`` (plus format, digest) to ``path`` atomically."""
    path = Path(path)
    tensors = state_tensors(method)
    meta = dict(metadata)
    meta.update(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        method=method.name,
        method_options=method.options(),
        tensors_sha256=_tensor_digest(tensors),
    )
    atomic_write_bytes(path, save(tensors, metadata={"oneshot": json.dumps(meta, sort_keys=True)}))
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a checkpoint without building the model; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise OneshotError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise OneshotError(f"{path} is truncated or not a safetensors checkpoint ({exc}): re-download or retrain it") from None
    if "oneshot" not in header:
        raise OneshotError(f"{path} is a safetensors file but not a oneshot checkpoint (no 'oneshot' metadata)")
    try:
        meta = json.loads(header["oneshot"])
    except json.JSONDecodeError:
        raise OneshotError(f"{path} has corrupt metadata: re-download or retrain it") from None
    if meta.get("format") != FORMAT:
        raise OneshotError(f"{path} is not a oneshot checkpoint")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise OneshotError(f"{path} was written by a newer oneshot (format {meta['format_version']}): upgrade oneshot")
    return meta


def load_checkpoint(
    path: str | Path, expect_method: str | None = None, device: str | torch.device = "cpu",
    method_options: dict[str, Any] | None = None,
) -> Checkpoint:
    """Rebuild the method a checkpoint describes and load its weights; refuse anything inconsistent.

    Args:
        path: the ``.safetensors`` file.
        expect_method: if given, refuse a checkpoint of another method.
        device: where to put the model.
        method_options: options to change when rebuilding (e.g. a transfer baseline's one-shot rule);
            only options that do not change the tensors can be changed.
    """
    path = Path(path)
    meta = read_metadata(path)
    try:
        if meta.get("modality", "image") == "image":  # molecule checkpoints featurise SMILES, no image preprocessing
            Preprocessing.from_dict(meta.get("preprocessing"))
    except OneshotError as exc:
        raise OneshotError(f"{path} has invalid preprocessing metadata ({exc}): re-download or retrain it") from None
    if expect_method is not None and meta["method"] != expect_method:
        raise OneshotError(f"{path} is a {meta['method']} checkpoint, not {expect_method}")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise OneshotError(f"{path} is truncated or corrupt ({exc}): re-download or retrain it") from None
    if _tensor_digest(tensors) != meta.get("tensors_sha256"):
        raise OneshotError(f"{path} is corrupt: its weights do not match the checksum in its metadata")
    encoder = build_encoder(meta["encoder"], **meta.get("encoder_options", {}))
    options = {**meta.get("method_options", {}), **(method_options or {})}
    method = build_method(meta["method"], encoder, **options)
    try:
        method.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise OneshotError(f"{path}: weights do not match the {meta['method']}/{meta['encoder']} model its metadata describes ({first})") from None
    method.to(device).eval()
    return Checkpoint(method, meta)


# ------------------------------------------------------------------------------------------- resume files
def resume_path(checkpoint: Path) -> Path:
    """The resume file beside a checkpoint: ``<checkpoint>.resume``."""
    return checkpoint.with_name(checkpoint.name + ".resume")


def save_resume(path: Path, method: Method, opt: torch.optim.Optimizer, sched: Any, state: dict[str, Any]) -> None:
    """Write the resume file: model tensors (``model.*``), optimiser state tensors (``opt.<param>.<name>``)
    and, in the safetensors header's ``resume`` entry, ``state`` plus the optimiser's param groups and the
    scheduler's state as JSON. Written atomically."""
    tensors = {f"model.{k}": v for k, v in state_tensors(method).items()}
    opt_state = opt.state_dict()
    for pid, pstate in opt_state["state"].items():
        for key, value in pstate.items():
            tensors[f"opt.{pid}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    meta = dict(state, param_groups=opt_state["param_groups"], scheduler=sched.state_dict())
    atomic_write_bytes(path, save(tensors, metadata={"resume": json.dumps(meta)}))


def load_resume(path: Path, method: Method, opt: torch.optim.Optimizer, sched: Any) -> dict[str, Any]:
    """Restore ``method``, ``opt`` and ``sched`` from a resume file; returns the saved loop state."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["resume"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise OneshotError(f"resume state {path} is unreadable ({exc}): delete it to start afresh") from None
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
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
    return meta
