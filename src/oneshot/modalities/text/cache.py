"""Embeddings of a dataset's texts cached on disk, keyed by the embedder's fingerprint and the texts themselves."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from oneshot.data.paths import cache_dir
from oneshot.files import atomic_write_bytes
from oneshot.modalities.base import fingerprint_id
from oneshot.modalities.text.embedder import TextEmbedder


def cached_embeddings(embedder: TextEmbedder, texts: Sequence[str], name: str = "texts") -> np.ndarray:
    """``embedder.embed_texts(texts)`` (B, D) float32, read from the cache when the same embedder embedded the
    same texts before; the file is ``$ONESHOT_CACHE/text-embeddings/<name>-<fingerprint>-<texts>.npy``."""
    path = cache_path(embedder, texts, name)
    if path.is_file():
        try:
            v = np.load(path, allow_pickle=False)
            if v.shape == (len(texts), embedder.dim) and v.dtype == np.float32 and np.isfinite(v).all():
                return v
        except (OSError, ValueError):
            pass  # damaged: embed again
    v = embedder.embed_texts(texts, warn=False)
    store(path, v)
    return v


def cache_path(embedder: TextEmbedder, texts: Sequence[str], name: str) -> Path:
    """Where :func:`cached_embeddings` keeps the embeddings of ``texts`` by ``embedder``."""
    h = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:16]
    return cache_dir() / "text-embeddings" / f"{name}-{fingerprint_id(embedder.fingerprint)}-{h}.npy"


def store(path: Path, vectors: np.ndarray) -> None:
    """Write (N, D) float32 embeddings atomically as .npy (no pickle)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(vectors, np.float32), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
