"""``oneshot evaluate`` and ``oneshot predict`` with a molecule checkpoint (:mod:`oneshot.modalities.molecule.commands`
and their CLI bodies in :mod:`oneshot.cli_domains`), on an untrained small MoleculeMLP and the real Tox21 CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import data_dir
from typer.testing import CliRunner

from oneshot.checkpoint import save_checkpoint
from oneshot.cli import app

DATA = data_dir()
needs_tox21 = pytest.mark.skipif(not (DATA / "molecules" / "tox21.csv").is_file(), reason="Tox21 CSV not present")
ASPIRIN, CAFFEINE = "CC(=O)Oc1ccccc1C(=O)O", "Cn1cnc2c1c(=O)n(C)c(=O)n2C"
run = CliRunner().invoke


@pytest.fixture(scope="module")
def molecule_checkpoint(tmp_path_factory) -> Path:
    """An untrained ProtoNet / MoleculeMLP (Morgan bits only) recorded as trained on SR-MMP."""
    from oneshot.encoders.molecule_mlp import MoleculeMLP
    from oneshot.methods.protonet import ProtoNet

    torch.manual_seed(0)
    opts = {"n_bits": 2048, "radius": 2, "descriptors": False, "hidden": [32], "out_dim": 16, "dropout": 0.0}
    meta = {
        "modality": "molecule",
        "method": "protonet",
        "encoder": "molecule_mlp",
        "encoder_options": opts,
        "data": {"train_tasks": ["SR-MMP"]},
    }
    return save_checkpoint(tmp_path_factory.mktemp("mol") / "m.safetensors", ProtoNet(MoleculeMLP(**opts)), meta)


@needs_tox21
def test_evaluate_on_tox21_assays(molecule_checkpoint):
    args = ["evaluate", "--checkpoint", str(molecule_checkpoint), "--shots", "1", "--shots", "2", "--episodes", "3"]
    args += ["--assay", "SR-MMP", "--assay", "SR-p53", "--data-dir", str(DATA)]
    r = run(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["dataset"] == "tox21" and res["assays"] == ["SR-MMP", "SR-p53"] and res["seen_in_training"] == ["SR-MMP"]
    assert [row["shots"] for row in res["results"]] == [1, 2]
    for row in res["results"]:
        aucs = [row["assays"][a]["roc_auc"] for a in res["assays"]]
        assert row["draws"] == 3 and all(0 <= a <= 1 for a in aucs)
        assert row["mean_roc_auc"] == pytest.approx(sum(aucs) / 2)
    r = run(app, args)
    assert r.exit_code == 0, r.output
    first = res["results"][0]
    assert f"{100 * first['assays']['SR-p53']['roc_auc']:.2f}" in r.output  # the same seeded draws, as a table
    assert "warning: the checkpoint was trained on SR-MMP: not a few-shot test for those" in r.output
    r = run(app, ["evaluate", "--checkpoint", str(molecule_checkpoint), "--assay", "NOT-AN-ASSAY", "--data-dir", str(DATA)])
    assert r.exit_code == 2 and "NOT-AN-ASSAY" in r.output


def test_predict_support_checks_and_table(molecule_checkpoint, tmp_path):
    sup = tmp_path / "support.csv"
    base = ["predict", "--checkpoint", str(molecule_checkpoint), "--support", str(sup)]
    sup.write_text(f"smiles,label\n{ASPIRIN},acid\n{CAFFEINE},\n")
    r = run(app, [*base, "--smiles", ASPIRIN])
    assert r.exit_code == 2 and "row without a label" in r.output
    sup.write_text(f"smiles,label\n{ASPIRIN},acid\n{CAFFEINE},acid\n")
    r = run(app, [*base, "--smiles", ASPIRIN])
    assert r.exit_code == 2 and "has one label (acid)" in r.output
    sup.write_text(f"smiles,label\n{ASPIRIN},acid\n{CAFFEINE},xanthine\n")
    r = run(app, base)
    assert r.exit_code == 2 and "give query molecules" in r.output
    r = run(app, [*base, "--smiles", CAFFEINE])
    assert r.exit_code == 0, r.output
    assert "xanthine" in r.output  # a support molecule is nearest its own prototype
