"""SMILES in, checked RDKit molecules out: parsing, empty molecules, salts, and where a bad one came from.

Salts and mixtures (a SMILES with several disconnected fragments, e.g. ``CC(=O)O.[Na+]``) are handled by a
policy: ``largest`` (default) keeps the fragment with the most heavy atoms (ties: the first written) and
drops the counter-ions and solvents; ``refuse`` rejects the SMILES so that the user decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from oneshot.errors import OneshotError

SALT_POLICIES = ("largest", "refuse")


def require_rdkit() -> Any:
    """The ``rdkit.Chem`` module, or a one-line error naming the extra to install."""
    try:
        from rdkit import Chem
    except ImportError:
        raise OneshotError("molecules need RDKit: pip install 'oneshot[molecules]'") from None
    return Chem


@contextmanager
def quiet_rdkit() -> Iterator[None]:
    """Silence RDKit's own stderr logging (our errors say what went wrong, once)."""
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    try:
        yield
    finally:
        RDLogger.EnableLog("rdApp.*")


def parse_smiles(smiles: str, where: str = "", salts: str = "largest") -> Any:
    """One SMILES -> an RDKit ``Mol`` of a single fragment.

    Args:
        smiles: the SMILES text (surrounding whitespace ignored).
        where: what to name in errors (``"tox21.csv line 12"``); the SMILES itself is named too.
        salts: ``largest`` (keep the largest fragment) or ``refuse`` (error on several fragments).
    """
    Chem = require_rdkit()
    if salts not in SALT_POLICIES:
        raise OneshotError(f"unknown salt policy {salts!r}: choose one of {', '.join(SALT_POLICIES)}")
    at = f" ({where})" if where else ""
    text = smiles.strip()
    if not text:
        raise OneshotError(f"empty SMILES{at}: give a molecule")
    if any(c.isspace() for c in text):
        raise OneshotError(f"SMILES {text[:60]!r}{at} contains whitespace: give one SMILES per example")
    with quiet_rdkit():
        mol = Chem.MolFromSmiles(text)
    if mol is None:
        raise OneshotError(f"invalid SMILES {text[:60]!r}{at}: RDKit cannot parse it; fix or remove it")
    if mol.GetNumAtoms() == 0:
        raise OneshotError(f"SMILES {text[:60]!r}{at} is an empty molecule (no atoms): give a molecule")
    frags = Chem.GetMolFrags(mol, asMols=True)
    if len(frags) > 1:
        if salts == "refuse":
            raise OneshotError(
                f"SMILES {text[:60]!r}{at} has {len(frags)} fragments (a salt or mixture) and salts are "
                "refused: give the parent compound, or allow salts (keep the largest fragment)"
            )
        sizes = [f.GetNumHeavyAtoms() for f in frags]
        mol = frags[sizes.index(max(sizes))]
    return mol


def canonical_smiles(mol: Any) -> str:
    """RDKit's canonical SMILES of ``mol`` (isomeric)."""
    Chem = require_rdkit()
    return str(Chem.MolToSmiles(mol))
