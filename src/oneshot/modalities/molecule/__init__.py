"""Molecules as a modality: SMILES in (RDKit), ECFP fingerprints with exact Tanimoto search, or a learned
one-shot model's embedding. See docs/molecules.md."""

from oneshot.modalities.molecule.embedders import (
    EcfpEmbedder,
    MoleculeCheckpointEmbedder,
    read_molecule,
)
from oneshot.modalities.molecule.smiles import (
    SALT_POLICIES,
    canonical_smiles,
    parse_smiles,
)

__all__ = ["SALT_POLICIES", "EcfpEmbedder", "MoleculeCheckpointEmbedder", "canonical_smiles", "parse_smiles", "read_molecule"]
