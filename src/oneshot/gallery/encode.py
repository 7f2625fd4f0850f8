"""Encoders for the gallery: inputs -> embeddings, kept apart from storage.

The gallery only ever sees float32 embeddings (B, D). An :class:`Encoder` turns raw inputs (image files or
bytes today; text or molecules later, through another implementation) into them, and names itself with a
*fingerprint*: a JSON document that changes whenever the embeddings would (other weights, method,
preprocessing, dimension). A gallery refuses an encoder whose fingerprint differs from its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, Union

import numpy as np

from oneshot.errors import OneshotError

#: What ``enrol``/``identify`` accept as one example: a file path, raw bytes, or an embedding (D,).
Example = Union[str, Path, bytes, np.ndarray]


def fingerprint_id(fingerprint: dict[str, Any]) -> str:
    """A short stable id of a fingerprint (first 16 hex digits of the SHA-256 of its canonical JSON)."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


class Encoder(Protocol):
    """Anything that embeds raw inputs for a gallery."""

    fingerprint: dict[str, Any]
    dim: int

    def encode(self, inputs: Sequence[bytes], names: Sequence[str]) -> np.ndarray:
        """Raw input bytes (B items) -> float32 embeddings (B, D); ``names`` label errors."""
        ...


class CheckpointEncoder:
    """Images through a oneshot checkpoint: its own preprocessing, then ``method.embed``.

    Attributes:
        path: the checkpoint file.
        fingerprint: tensors SHA-256, method, encoder, their options and the preprocessing.
        dim: embedding size D.
    """

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 256) -> None:
        from oneshot.checkpoint import load_checkpoint

        self.path = Path(path)
        self.checkpoint = load_checkpoint(self.path, device=device)
        if not self.checkpoint.method.embeds_independently:
            raise OneshotError(f"{self.path} is a {self.checkpoint.metadata['method']} checkpoint, which does not embed "
                               "inputs independently: a gallery needs an embedding method such as protonet")
        self.device = device
        self.batch_size = batch_size
        self.preprocessing = self.checkpoint.preprocessing
        meta = self.checkpoint.metadata
        probe = np.zeros((1, self.preprocessing.channels, self.preprocessing.size, self.preprocessing.size), np.uint8)
        self.dim = int(self._embed(probe).shape[1])
        self.fingerprint = {
            "kind": "checkpoint",
            "tensors_sha256": meta["tensors_sha256"],
            "method": meta["method"],
            "method_options": meta.get("method_options", {}),
            "encoder": meta.get("encoder"),
            "encoder_options": meta.get("encoder_options", {}),
            "preprocessing": self.preprocessing.to_dict(),
            "dim": self.dim,
        }

    def _embed(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, C, H, W) -> float32 (B, D)."""
        import torch

        out = []
        method = self.checkpoint.method.eval()
        with torch.no_grad():
            for i in range(0, len(images), self.batch_size):
                x = torch.from_numpy(images[i:i + self.batch_size]).to(self.device).float().div_(255)
                out.append(method.embed(x).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    def encode(self, inputs: Sequence[bytes], names: Sequence[str]) -> np.ndarray:
        from oneshot.data.images import decode_image

        images = np.stack([decode_image(b, self.preprocessing, name=n) for b, n in zip(inputs, names)])
        return self._embed(images)

    def encode_images(self, images: np.ndarray) -> np.ndarray:
        """Already preprocessed uint8 images (B, C, H, W) -> float32 (B, D) (benchmarks, calibration)."""
        return self._embed(np.ascontiguousarray(images))


def vector_fingerprint(dim: int, name: str = "vectors") -> dict[str, Any]:
    """Fingerprint of a gallery fed precomputed embeddings (no encoder)."""
    return {"kind": "vectors", "name": name, "dim": int(dim)}


def read_input(x: str | Path | bytes, name: str | None = None) -> tuple[bytes, str, str | None]:
    """(bytes, display name, absolute path or None) of a file path or raw bytes; clear error when unreadable."""
    if isinstance(x, bytes):
        return x, name or "<bytes>", None
    p = Path(x)
    try:
        return p.read_bytes(), str(p), str(p.resolve())
    except FileNotFoundError:
        raise OneshotError(f"{p} does not exist: check the path") from None
    except IsADirectoryError:
        raise OneshotError(f"{p} is a folder, not an example file: give the files in it") from None
    except OSError as exc:
        raise OneshotError(f"cannot read {p} ({exc.strerror}): check the file and its permissions") from None


def check_vectors(v: np.ndarray, dim: int, what: str = "embedding") -> np.ndarray:
    """Validate and L2-normalise embeddings: (D,) or (B, D) finite, non-zero -> float32 (B, D) unit rows."""
    v = np.asarray(v)
    if v.ndim == 1:
        v = v[None]
    if v.ndim != 2 or v.shape[1] != dim:
        raise OneshotError(f"{what} has shape {tuple(v.shape)}, the gallery needs ({dim},) vectors: use the gallery's encoder")
    if not np.issubdtype(v.dtype, np.number):
        raise OneshotError(f"{what} is not numeric ({v.dtype})")
    v = v.astype(np.float32)
    if not np.isfinite(v).all():
        raise OneshotError(f"{what} contains NaN or infinite values: check the encoder's output")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if (norms == 0).any():
        raise OneshotError(f"{what} is an all-zero vector and has no direction: it cannot be compared")
    return v / norms
