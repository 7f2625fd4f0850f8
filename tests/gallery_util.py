"""Helpers shared by the gallery tests (not a test module)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from oneshot.checkpoint import save_checkpoint
from oneshot.data.images import Preprocessing
from oneshot.encoders import build_encoder
from oneshot.methods import build_method


def make_checkpoint(path: Path, seed: int) -> Path:
    """An untrained ProtoNet/Conv-4 checkpoint (its own fingerprint per seed)."""
    torch.manual_seed(seed)
    method = build_method("protonet", build_encoder("conv4", in_channels=1))
    meta = {"encoder": "conv4", "encoder_options": {"in_channels": 1}, "preprocessing": Preprocessing().to_dict()}
    return save_checkpoint(path, method, meta)


def write_pngs(folder: Path, images: np.ndarray, prefix: str = "img") -> list[Path]:
    """Save uint8 (N, 1, H, W) model inputs (ink high) as PNG drawings (ink dark), so decoding with the
    default preprocessing gives back exactly ``images``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, img in enumerate(images):
        p = folder / f"{prefix}{i:04d}.png"
        Image.fromarray(255 - img[0]).save(p)
        out.append(p)
    return out


def snapshot(path: Path) -> dict:
    """Everything observable about a gallery, to check an operation left it unchanged."""
    from oneshot.gallery import Gallery

    with Gallery.open(path, create=False) as g:
        rows = g.store.conn.execute("SELECT id, label, template, n_examples FROM classes ORDER BY id").fetchall()
        ex = g.store.conn.execute("SELECT class_id, embedding FROM examples ORDER BY id").fetchall()
        return {"classes": rows, "examples": ex, "generation": g.store.generation(), "meta": g.store.all_meta()}


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
