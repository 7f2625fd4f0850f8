"""Molecule embedders: ECFP fingerprints searched by exact Tanimoto, and a learned checkpoint.

``read`` accepts a SMILES ``str``, ``Inline(kind="molecule")``, bytes holding a SMILES, or a ``Path`` to a file
whose first token is a SMILES (``.smi``); images and other inline kinds are refused naming both modalities.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oneshot.errors import OneshotError
from oneshot.modalities.base import Inline, RawInput, read_file, sniff, wrong_modality
from oneshot.modalities.molecule.features import (
    DEFAULT_BITS,
    DEFAULT_RADIUS,
    molecule_features,
    morgan_bits,
)
from oneshot.modalities.molecule.smiles import canonical_smiles, parse_smiles

MODALITY = "molecule"


def read_molecule(example: str | Path | bytes | Inline, salts: str = "largest") -> RawInput:
    """One example -> RawInput holding the canonical SMILES (UTF-8) of the kept fragment."""
    path = None
    if isinstance(example, Inline):
        if example.kind != MODALITY:
            raise wrong_modality("molecule (SMILES)", f"{example.kind} ({example.value[:40]!r})")
        text, where = example.value, ""
    elif isinstance(example, Path):
        raw = read_file(example)
        data, where, path = raw.data, str(example), raw.path
        kind = sniff(data)
        if kind != "text":
            raise wrong_modality("molecule (SMILES)", kind)
        parts = data.decode("utf-8").split()
        text = parts[0] if parts else ""
    elif isinstance(example, bytes):
        kind = sniff(example)
        if kind != "text":
            raise wrong_modality("molecule (SMILES)", kind)
        text, where = example.decode("utf-8"), "<bytes>"
    elif isinstance(example, str):
        text, where = example, ""
    else:
        raise OneshotError(f"a molecule example is a SMILES string or file, not {type(example).__name__}")
    mol = parse_smiles(text, where, salts)
    smi = canonical_smiles(mol)
    name = where if where and where != "<bytes>" else (smi if len(smi) <= 60 else smi[:57] + "...")
    return RawInput(smi.encode(), name, path)


def _mols(inputs: Sequence[bytes], names: Sequence[str]) -> list[Any]:
    return [parse_smiles(b.decode("utf-8"), n) for b, n in zip(inputs, names, strict=True)]


class EcfpEmbedder:
    """Morgan / ECFP fingerprints as 0/1 vectors, searched by exact Tanimoto.

    Attributes:
        radius: Morgan radius (2 = ECFP4).
        n_bits: folded size D.
        salts: ``largest`` or ``refuse`` (reading only; the vectors of accepted molecules do not depend on it).
    """

    modality = MODALITY
    similarity = "tanimoto"

    def __init__(self, radius: int = DEFAULT_RADIUS, bits: int = DEFAULT_BITS, salts: str = "largest") -> None:
        if not 0 <= int(radius) <= 6 or not 64 <= int(bits) <= 65536 or int(bits) % 8:
            raise OneshotError(
                f"ECFP options radius={radius}, bits={bits} are out of range: radius 0..6, bits a multiple of 8 in 64..65536"
            )
        self.radius, self.n_bits, self.salts = int(radius), int(bits), salts
        self.dim = self.n_bits
        defaults = self.radius == DEFAULT_RADIUS and self.n_bits == DEFAULT_BITS
        self.spec: str | None = "ecfp" if defaults else f"ecfp:radius={self.radius},bits={self.n_bits}"
        self.fingerprint: dict[str, Any] = {
            "kind": "ecfp",
            "modality": MODALITY,
            "similarity": "tanimoto",
            "radius": self.radius,
            "n_bits": self.n_bits,
            "dim": self.dim,
        }

    def read(self, example: str | Path | bytes | Inline) -> RawInput:
        return read_molecule(example, self.salts)

    def embed(self, inputs: Sequence[bytes], names: Sequence[str]) -> np.ndarray:
        """SMILES bytes of B molecules -> float32 (B, n_bits) 0/1 vectors."""
        bits = morgan_bits(_mols(inputs, names), self.radius, self.n_bits).astype(np.float32)
        empty = np.flatnonzero(bits.sum(1) == 0)
        if len(empty):
            raise OneshotError(f"molecule {names[int(empty[0])]} sets no fingerprint bit: it cannot be compared")
        return bits


class MoleculeCheckpointEmbedder:
    """Molecules through a learned oneshot checkpoint (metadata ``modality: molecule``): its encoder's own
    featurisation (Morgan bits [+ MACCS keys] + descriptors, options in ``encoder_options``), then ``method.embed``."""

    modality = MODALITY
    similarity = "cosine"

    def __init__(self, path: str | Path, device: str = "cpu", salts: str = "largest") -> None:
        from oneshot.checkpoint import load_checkpoint
        from oneshot.encoders.molecule_mlp import MoleculeMLP

        self.path = Path(path)
        self.spec: str | None = str(self.path.resolve())
        self.checkpoint = load_checkpoint(self.path, device=device)
        self.device, self.salts = device, salts
        meta = self.checkpoint.metadata
        self.options = meta.get("encoder_options", {})
        encoder = self.checkpoint.method.encoder
        if not isinstance(encoder, MoleculeMLP):
            raise OneshotError(f"{path} is a molecule checkpoint without a molecule encoder ({type(encoder).__name__})")
        self.dim = encoder.out_dim
        self.fingerprint: dict[str, Any] = {
            "kind": "checkpoint",
            "modality": MODALITY,
            "tensors_sha256": meta["tensors_sha256"],
            "method": meta["method"],
            "method_options": meta.get("method_options", {}),
            "encoder": meta.get("encoder"),
            "encoder_options": self.options,
            "dim": self.dim,
        }

    def read(self, example: str | Path | bytes | Inline) -> RawInput:
        return read_molecule(example, self.salts)

    def features(self, mols: Sequence[Any]) -> np.ndarray:
        """The encoder's input (N, F) for RDKit molecules."""
        o = self.options
        return molecule_features(
            mols,
            int(o.get("radius", DEFAULT_RADIUS)),
            int(o.get("n_bits", DEFAULT_BITS)),
            bool(o.get("descriptors", True)),
            bool(o.get("maccs", False)),
            tuple(o.get("extra", ())),
        )

    def embed_features(self, x: np.ndarray) -> np.ndarray:
        """Features (N, F) -> float32 (N, D)."""
        import torch

        method = self.checkpoint.method.eval()
        with torch.no_grad():
            return method.embed(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)).float().cpu().numpy()

    def embed(self, inputs: Sequence[bytes], names: Sequence[str]) -> np.ndarray:
        return self.embed_features(self.features(_mols(inputs, names)))


def ecfp(**options: Any) -> EcfpEmbedder:
    """The ``ecfp`` built-in (``ecfp:radius=3,bits=1024`` for other options)."""
    return EcfpEmbedder(**options)
