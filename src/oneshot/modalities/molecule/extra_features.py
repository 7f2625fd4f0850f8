"""Optional extra input blocks for the learned molecule model, named in its encoder options (``extra``).

Each block has a fixed width (:data:`EXTRA_WIDTHS`) so that an encoder knows its input size without RDKit:

- ``morgan_counts``: Morgan radius 2 hashed *counts* (2048), log1p-scaled;
- ``fcfp``: feature-invariant Morgan radius 2 (FCFP4) bits (1024);
- ``atom_pair``: RDKit atom-pair hashed counts (1024), log1p;
- ``torsion``: RDKit topological-torsion hashed counts (1024), log1p;
- ``avalon``: Avalon fingerprint bits (1024);
- ``descriptors_extra``: the :data:`EXTRA_DESCRIPTORS` RDKit descriptors, signed-log1p scaled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from oneshot.modalities.molecule.smiles import require_rdkit

#: Extra RDKit descriptors (``rdkit.Chem.Descriptors`` names): topological indices and the MOE-type VSA bins.
EXTRA_DESCRIPTORS = (
    ("BertzCT", "BalabanJ", "HallKierAlpha", "Kappa1", "Kappa2", "Kappa3", "NumValenceElectrons")
    + ("Chi0v", "Chi1v", "Chi2v", "Chi3v", "Chi4v", "NumAliphaticRings", "NumSaturatedRings", "NHOHCount", "NOCount")
    + tuple(f"PEOE_VSA{i}" for i in range(1, 15))
    + tuple(f"SMR_VSA{i}" for i in range(1, 11))
    + tuple(f"SlogP_VSA{i}" for i in range(1, 13))
    + tuple(f"EState_VSA{i}" for i in range(1, 12))
)

EXTRA_WIDTHS = {
    "morgan_counts": 2048,
    "fcfp": 1024,
    "atom_pair": 1024,
    "torsion": 1024,
    "avalon": 1024,
    "descriptors_extra": len(EXTRA_DESCRIPTORS),
}


def _generator_block(make: Callable[[Any], Any], counts: bool) -> Callable[[Sequence[Any]], np.ndarray]:
    def block(mols: Sequence[Any]) -> np.ndarray:
        from rdkit.Chem import rdFingerprintGenerator as g

        gen = make(g)
        fp = gen.GetCountFingerprintAsNumPy if counts else gen.GetFingerprintAsNumPy
        out = np.stack([fp(m) for m in mols]).astype(np.float32) if len(mols) else np.zeros((0, 0), np.float32)
        return np.log1p(out) if counts else out

    return block


def _avalon(mols: Sequence[Any]) -> np.ndarray:
    from rdkit import DataStructs
    from rdkit.Avalon import pyAvalonTools

    out = np.zeros((len(mols), EXTRA_WIDTHS["avalon"]), np.float32)
    for i, m in enumerate(mols):
        DataStructs.ConvertToNumpyArray(pyAvalonTools.GetAvalonFP(m, nBits=EXTRA_WIDTHS["avalon"]), out[i])
    return out


def _descriptors_extra(mols: Sequence[Any]) -> np.ndarray:
    from rdkit.Chem import Descriptors

    fns = [getattr(Descriptors, n) for n in EXTRA_DESCRIPTORS]
    out = np.zeros((len(mols), len(fns)), np.float64)
    for i, m in enumerate(mols):
        for j, fn in enumerate(fns):
            try:
                out[i, j] = float(fn(m))
            except Exception:  # noqa: BLE001 -- RDKit raises assorted errors on exotic molecules
                out[i, j] = 0.0
    out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    return (np.sign(out) * np.log1p(np.abs(out))).astype(np.float32)


_BLOCKS: dict[str, Callable[[Sequence[Any]], np.ndarray]] = {
    "morgan_counts": _generator_block(lambda g: g.GetMorganGenerator(radius=2, fpSize=2048), counts=True),
    "fcfp": _generator_block(
        lambda g: g.GetMorganGenerator(radius=2, fpSize=1024, atomInvariantsGenerator=g.GetMorganFeatureAtomInvGen()),
        counts=False,
    ),
    "atom_pair": _generator_block(lambda g: g.GetAtomPairGenerator(fpSize=1024), counts=True),
    "torsion": _generator_block(lambda g: g.GetTopologicalTorsionGenerator(fpSize=1024), counts=True),
    "avalon": _avalon,
    "descriptors_extra": _descriptors_extra,
}


def extra_width(names: Sequence[str]) -> int:
    """Total width of the named blocks; an unknown name is a ValueError listing the known ones."""
    unknown = [n for n in names if n not in EXTRA_WIDTHS]
    if unknown:
        raise ValueError(f"unknown extra feature block(s) {unknown}; known: {sorted(EXTRA_WIDTHS)}")
    return sum(EXTRA_WIDTHS[n] for n in names)


def extra_features(mols: Sequence[Any], names: Sequence[str]) -> np.ndarray:
    """The named blocks of RDKit molecules, concatenated in order -> float32 (N, :func:`extra_width`)."""
    require_rdkit()
    extra_width(names)
    parts = [_BLOCKS[n](mols).reshape(len(mols), EXTRA_WIDTHS[n]) for n in names]
    return np.concatenate(parts, 1) if parts else np.zeros((len(mols), 0), np.float32)
