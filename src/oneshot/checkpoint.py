"""Checkpoints: safetensors weights with the JSON metadata needed to rebuild and trust them.

One ``.safetensors`` file holds the method's tensors; its header's ``oneshot`` entry is a JSON document with
the method and its options, the encoder and its options, the preprocessing, the embedding size, the data
split, the training command, seed and commit, and a SHA-256 of the tensors. Loading rebuilds the method
from the metadata and refuses a file whose tensors do not match it (wrong method, wrong shapes, edited or
truncated bytes). Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from oneshot.data.images import Preprocessing
from oneshot.data.paths import atomic_write_bytes
from oneshot.encoders import build_encoder
from oneshot.errors import OneshotError
from oneshot.methods import Method, build_method

FORMAT = "oneshot-checkpoint"
FORMAT_VERSION = 1


def git_commit() -> str:
    """The current commit of the source tree, or ``"unknown"`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
            capture_output=True, text=True, timeout=5,
        )
        if out.returncode == 0:
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def machine_description() -> dict[str, Any]:
    """Where a number was measured: CPU, cores, accelerator, library versions."""
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
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
