"""Extra input blocks of the learned molecule model (:mod:`oneshot.modalities.molecule.extra_features`): each block
against RDKit's own per-molecule functions, the encoder option ``extra`` through a checkpoint and the gallery
embedder, and checkpoints written without the option keeping their features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oneshot.encoders.molecule_mlp import MoleculeMLP

rdkit = pytest.importorskip("rdkit")
SMILES = ("CC(=O)Oc1ccccc1C(=O)O", "Cn1cnc2c1c(=O)n(C)c(=O)n2C", "CCN(CC)CCOC(=O)c1ccc(N)cc1", "Clc1ccc(Cl)cc1")


def _mols():
    from rdkit import Chem

    return [Chem.MolFromSmiles(s) for s in SMILES]


def _from_counts(fp, width: int) -> np.ndarray:
    out = np.zeros(width)
    for k, v in fp.GetNonzeroElements().items():
        out[k] = v
    return np.log1p(out)


def _from_bits(fp, width: int) -> np.ndarray:
    out = np.zeros(width)
    out[list(fp.GetOnBits())] = 1
    return out


def test_each_block_matches_rdkit_per_molecule():
    from rdkit.Avalon import pyAvalonTools
    from rdkit.Chem import Descriptors
    from rdkit.Chem import rdFingerprintGenerator as g

    from oneshot.modalities.molecule.extra_features import EXTRA_DESCRIPTORS, EXTRA_WIDTHS, extra_features

    mols = _mols()
    gens = {
        "morgan_counts": (g.GetMorganGenerator(radius=2, fpSize=2048), True),
        "fcfp": (g.GetMorganGenerator(radius=2, fpSize=1024, atomInvariantsGenerator=g.GetMorganFeatureAtomInvGen()), False),
        "atom_pair": (g.GetAtomPairGenerator(fpSize=1024), True),
        "torsion": (g.GetTopologicalTorsionGenerator(fpSize=1024), True),
    }
    for name, (gen, counts) in gens.items():
        got = extra_features(mols, [name])
        for i, m in enumerate(mols):
            ref = _from_counts(gen.GetCountFingerprint(m), 2048 if name == "morgan_counts" else 1024)
            ref = ref if counts else _from_bits(gen.GetFingerprint(m), 1024)
            assert np.allclose(got[i], ref, atol=1e-6), name
    got = extra_features(mols, ["avalon"])
    for i, m in enumerate(mols):
        assert np.array_equal(got[i], _from_bits(pyAvalonTools.GetAvalonFP(m, nBits=1024), 1024))
    got = extra_features(mols, ["descriptors_extra"])
    table = dict(Descriptors.descList)
    for i, m in enumerate(mols):
        ref = np.array([table[n](m) for n in EXTRA_DESCRIPTORS])
        assert np.allclose(got[i], np.sign(ref) * np.log1p(np.abs(ref)), rtol=1e-5, atol=1e-5)
    both = extra_features(mols, ["fcfp", "descriptors_extra"])
    assert both.shape == (len(mols), EXTRA_WIDTHS["fcfp"] + len(EXTRA_DESCRIPTORS))
    with pytest.raises(ValueError, match="unknown extra feature block"):
        extra_features(mols, ["nope"])


def test_encoder_option_layout_and_old_options_unchanged():
    from oneshot.modalities.molecule.extra_features import EXTRA_WIDTHS
    from oneshot.modalities.molecule.features import molecule_features

    mols = _mols()
    old = molecule_features(mols, with_maccs=True)
    new = molecule_features(mols, with_maccs=True, extra=["avalon"])
    assert np.array_equal(new[:, : old.shape[1]], old) and new.shape[1] == old.shape[1] + EXTRA_WIDTHS["avalon"]
    assert MoleculeMLP(maccs=True, hidden=[]).in_features == old.shape[1]  # no option: today's input
    enc = MoleculeMLP(maccs=True, hidden=[], out_dim=4, extra=["avalon"])
    assert enc.in_features == new.shape[1] and enc.desc_mean.shape == (167 + 16 + 1024,)


def test_checkpoint_with_extra_blocks_serves_the_gallery_embedder(tmp_path):
    from oneshot.checkpoint import load_checkpoint, save_checkpoint
    from oneshot.methods.activity_prior import ActivityPrior
    from oneshot.modalities import load_embedder
    from oneshot.modalities.molecule.features import molecule_features

    opts = {"n_bits": 2048, "radius": 2, "descriptors": True, "maccs": True, "hidden": [], "out_dim": 8, "dropout": 0.0}
    for extra in (None, ["torsion", "descriptors_extra"]):
        o = dict(opts, **({"extra": extra} if extra else {}))
        torch.manual_seed(0)
        model = ActivityPrior(MoleculeMLP(**o), num_tasks=3, evidence_weights={"1": 1.0})
        meta = {"modality": "molecule", "encoder": "molecule_mlp", "encoder_options": o, "data": {"train_tasks": ["NR-AR"]}}
        path = save_checkpoint(tmp_path / f"{bool(extra)}.safetensors", model, meta)
        assert load_checkpoint(path).method.encoder.extra == tuple(extra or ())
        emb = load_embedder(str(path))
        x = molecule_features(_mols(), with_maccs=True, extra=extra or ())
        assert np.array_equal(emb.features(_mols()), x)
        with torch.no_grad():
            ref = model.eval().embed(torch.from_numpy(x)).numpy()
        assert np.allclose(emb.embed_features(x), ref, atol=1e-6)
