"""Molecule featurisation: Morgan / ECFP bit vectors (Rogers & Hahn, J. Chem. Inf. Model. 2010), MACCS keys and a
few cheap RDKit physico-chemical descriptors, for the fingerprint embedder and the learned model's encoder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from oneshot.modalities.molecule.smiles import require_rdkit

#: ECFP4 = Morgan radius 2 (diameter 4), folded to 2048 bits: the default everywhere.
DEFAULT_RADIUS = 2
DEFAULT_BITS = 2048


def _descriptor_table() -> list[tuple[str, Callable[[Any], float]]]:
    from rdkit.Chem import Crippen, Descriptors, Lipinski, rdMolDescriptors

    return [
        ("MolWt", Descriptors.MolWt),
        ("MolLogP", Crippen.MolLogP),
        ("MolMR", Crippen.MolMR),
        ("TPSA", rdMolDescriptors.CalcTPSA),
        ("NumHDonors", Lipinski.NumHDonors),
        ("NumHAcceptors", Lipinski.NumHAcceptors),
        ("NumRotatableBonds", Lipinski.NumRotatableBonds),
        ("RingCount", Lipinski.RingCount),
        ("NumAromaticRings", Lipinski.NumAromaticRings),
        ("HeavyAtomCount", Lipinski.HeavyAtomCount),
        ("FractionCSP3", Lipinski.FractionCSP3),
        ("NumHeteroatoms", Lipinski.NumHeteroatoms),
        ("FormalCharge", lambda m: float(sum(a.GetFormalCharge() for a in m.GetAtoms()))),
        ("NumHalogens", lambda m: float(sum(a.GetSymbol() in ("F", "Cl", "Br", "I") for a in m.GetAtoms()))),
        ("NumMetals", lambda m: float(sum(a.GetSymbol() not in _ORGANIC for a in m.GetAtoms()))),
        ("LabuteASA", rdMolDescriptors.CalcLabuteASA),
    ]


_ORGANIC = {"C", "N", "O", "S", "P", "F", "Cl", "Br", "I", "B", "Si", "Se", "H", "*"}
DESCRIPTOR_NAMES = (
    "MolWt",
    "MolLogP",
    "MolMR",
    "TPSA",
    "NumHDonors",
    "NumHAcceptors",
    "NumRotatableBonds",
    "RingCount",
    "NumAromaticRings",
    "HeavyAtomCount",
    "FractionCSP3",
    "NumHeteroatoms",
    "FormalCharge",
    "NumHalogens",
    "NumMetals",
    "LabuteASA",
)


def morgan_bits(mols: Sequence[Any], radius: int = DEFAULT_RADIUS, n_bits: int = DEFAULT_BITS) -> np.ndarray:
    """Morgan fingerprints of RDKit molecules -> uint8 (N, n_bits) of 0/1 (RDKit's ``MorganGenerator``)."""
    require_rdkit()
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=int(radius), fpSize=int(n_bits))
    out = np.zeros((len(mols), int(n_bits)), np.uint8)
    for i, m in enumerate(mols):
        out[i] = gen.GetFingerprintAsNumPy(m)
    return out


#: MACCS structural keys (RDKit's 167-bit ``GenMACCSKeys``; bit 0 is unused).
N_MACCS = 167


def maccs_keys(mols: Sequence[Any]) -> np.ndarray:
    """MACCS keys of RDKit molecules -> float32 (N, 167) of 0/1 (Durant et al., J. Chem. Inf. Comput. Sci. 2002)."""
    require_rdkit()
    from rdkit.Chem import MACCSkeys

    out = np.zeros((len(mols), N_MACCS), np.float32)
    for i, m in enumerate(mols):
        out[i] = np.frombuffer(MACCSkeys.GenMACCSKeys(m).ToBitString().encode(), np.uint8) - ord("0")
    return out


def descriptors(mols: Sequence[Any]) -> np.ndarray:
    """The :data:`DESCRIPTOR_NAMES` descriptors -> float32 (N, 16); a descriptor RDKit cannot compute is 0."""
    table = _descriptor_table()
    out = np.zeros((len(mols), len(table)), np.float32)
    for i, m in enumerate(mols):
        for j, (_, fn) in enumerate(table):
            try:
                out[i, j] = float(fn(m))
            except Exception:  # noqa: BLE001 -- RDKit raises assorted errors on exotic molecules
                out[i, j] = 0.0
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def molecule_features(
    mols: Sequence[Any],
    radius: int = DEFAULT_RADIUS,
    n_bits: int = DEFAULT_BITS,
    with_descriptors: bool = True,
    with_maccs: bool = False,
    extra: Sequence[str] = (),
) -> np.ndarray:
    """The learned model's input: Morgan bits, then (optionally) MACCS keys, then (optionally) descriptors, then
    the named :data:`~oneshot.modalities.molecule.extra_features.EXTRA_BLOCKS` in order ->
    float32 (N, n_bits [+ 167] [+ 16] [+ extra widths])."""
    parts = [morgan_bits(mols, radius, n_bits).astype(np.float32)]
    if with_maccs:
        parts.append(maccs_keys(mols))
    if with_descriptors:
        parts.append(descriptors(mols))
    if extra:
        from oneshot.modalities.molecule.extra_features import extra_features

        parts.append(extra_features(mols, extra))
    return np.concatenate(parts, 1)
