"""Helpers for the reliability tests (not a test module): a tiny deterministic embedder of raw bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from oneshot.modalities import RawInput
from oneshot.modalities.base import Inline

D = 8


class HashEmbedder:
    """Bytes -> a unit (D,) vector drawn from a generator seeded by ``seed`` and the bytes' SHA-256; two seeds
    are two encoders (two fingerprints). ``hook`` (if set) runs once, on the first ``embed`` call, to race
    another writer against whatever is embedding."""

    modality = "bytes"
    dim = D
    spec = None

    def __init__(self, seed: int, hook: Callable[[], None] | None = None) -> None:
        self.seed = seed
        self.fingerprint = {"modality": "bytes", "kind": "hash", "seed": seed, "dim": D}
        self.hook = hook

    def read(self, example: str | Path | bytes | Inline) -> RawInput:
        data = example if isinstance(example, bytes) else str(example).encode()
        return RawInput(data, data[:20].decode(errors="replace"))

    def vector(self, data: bytes) -> np.ndarray:
        h = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
        v = np.random.default_rng([self.seed, h]).normal(size=D)
        return (v / np.linalg.norm(v)).astype(np.float32)

    def embed(self, inputs: Sequence[bytes], names: Sequence[str]) -> np.ndarray:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return np.stack([self.vector(x) for x in inputs])
