"""Molecules: loaders on the real MoleculeNet files, fingerprints, Tanimoto search, the gallery, bad inputs,
and a short training run on real Tox21 assays."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rdkit")

from typer.testing import CliRunner

from oneshot.cli import app
from oneshot.data.molecules import load_clintox, load_tox21, read_assay_csv
from oneshot.errors import OneshotError
from oneshot.gallery import Gallery
from oneshot.gallery.index import IndexSettings
from oneshot.gallery.tanimoto import TanimotoIndex, pack_bits, tanimoto, tanimoto_topk
from oneshot.modalities import Inline, load_embedder

DATA = Path(os.environ.get("ONESHOT_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
needs_data = pytest.mark.skipif(not (DATA / "molecules" / "tox21.csv").is_file(), reason="MoleculeNet CSVs not present")
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
CAFFEINE = "Cn1cnc2c1c(=O)n(C)c(=O)n2C"
IBUPROFEN = "CC(C)Cc1ccc(cc1)C(C)C(=O)O"


@pytest.fixture(scope="module")
def tox21():
    return load_tox21(DATA, on_invalid="skip")


# ---------------------------------------------------------------- loaders
@needs_data
def test_tox21_loader_counts_and_missing_labels(tox21):
    raw_rows = 7831
    assert len(tox21.smiles) + len(tox21.skipped) == raw_rows
    assert tox21.labels.shape == (len(tox21.smiles), 12)
    # every skipped row is named by file and line, and really does not parse
    assert all(f.endswith("tox21.csv") and line >= 2 for f, line, _ in tox21.skipped)
    assert len(tox21.skipped) < 20
    # blank cells stay missing, never inactive: SR-HSE has 6467 measured of 7831 in the file
    col = tox21.labels[:, tox21.task("SR-HSE")]
    assert np.isnan(col).sum() > 1000
    assert set(np.unique(col[~np.isnan(col)])) == {0.0, 1.0}
    first = tox21.labels[0]  # CCOc1ccc2nc(S(N)(=O)=O)sc2c1: 0,0,1,,,0,0,1,0,0,0,0
    assert np.isnan(first[3]) and np.isnan(first[4]) and first[2] == 1 and first[0] == 0
    with pytest.raises(OneshotError, match=r"tox21.csv line \d+"):
        load_tox21(DATA)  # the default refuses unparsable rows, naming the first


@needs_data
def test_clintox_loader():
    ct = load_clintox(DATA, on_invalid="skip")
    assert len(ct.smiles) + len(ct.skipped) == 1478
    assert ct.tasks == ("FDA_APPROVED", "CT_TOX")
    assert int(np.nansum(ct.labels[:, 0])) > 1300 and int(np.nansum(ct.labels[:, 1])) > 100


def test_assay_csv_bad_inputs(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("smiles,A\nCCO,1\nC1CC,0\n")
    with pytest.raises(OneshotError, match=r"C1CC.*a.csv line 3"):
        read_assay_csv(p)
    t = read_assay_csv(p, on_invalid="skip")
    assert t.skipped == [(str(p), 3, "C1CC")]
    p.write_text("mol,A\nCCO,1\n")
    with pytest.raises(OneshotError, match="no column 'smiles'"):
        read_assay_csv(p)
    p.write_text("smiles,A\nCCO,0\nCCN,0\nCCC,\n")
    from oneshot.data.assays import assay_rows

    with pytest.raises(OneshotError, match="no actives: 1-shot is impossible"):
        assay_rows(read_assay_csv(p), "A", 1)


# ---------------------------------------------------------------- fingerprints and Tanimoto
def test_ecfp_matches_rdkit_and_tanimoto_matches_bulk():
    from rdkit import Chem, DataStructs
    from rdkit.Chem import rdFingerprintGenerator

    smiles = [ASPIRIN, CAFFEINE, IBUPROFEN, "c1ccccc1O", "CCN(CC)CC", "OC(=O)CCc1ccccc1"]
    emb = load_embedder("ecfp")
    vecs = emb.embed([emb.read(s).data for s in smiles], smiles)
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    fps = [gen.GetFingerprint(Chem.MolFromSmiles(s)) for s in smiles]
    for v, fp in zip(vecs, fps, strict=True):
        assert set(np.flatnonzero(v)) == set(fp.GetOnBits())
    packed = pack_bits(vecs)
    ours = tanimoto(packed, packed)
    for i, fp in enumerate(fps):
        np.testing.assert_allclose(ours[i], DataStructs.BulkTanimotoSimilarity(fp, fps), atol=1e-6)
    e3 = load_embedder("ecfp:radius=3,bits=1024")
    assert e3.dim == 1024 and e3.fingerprint["radius"] == 3 and e3.fingerprint["modality"] == "molecule"


def test_vectorised_tanimoto_topk_equals_brute_force_loop():
    rng = np.random.default_rng(0)
    bits = rng.random((500, 2048)) < 0.02
    bits[7] = False  # an empty fingerprint scores 0, not NaN
    q = rng.random((5, 2048)) < 0.02
    scores, rows = tanimoto_topk(pack_bits(q), pack_bits(bits), 10)
    for i in range(5):
        brute = []
        for j in range(500):
            inter = int(np.sum(q[i] & bits[j]))
            union = int(np.sum(q[i] | bits[j]))
            brute.append(inter / union if union else 0.0)
        brute = np.array(brute)
        np.testing.assert_allclose(scores[i], np.sort(brute)[::-1][:10], atol=1e-6)
        np.testing.assert_allclose(brute[rows[i]], scores[i], atol=1e-6)


def test_tanimoto_topk_ties_keep_lower_rows():
    rng = np.random.default_rng(2)
    base = np.repeat(rng.random((1, 512)) < 0.05, 100, axis=0)  # 100 identical fingerprints
    base = np.concatenate([rng.random((50, 512)) < 0.05, base])
    scores, rows = tanimoto_topk(pack_bits(base[60:61]), pack_bits(base), 10)
    assert list(rows[0]) == list(range(50, 60)) and np.allclose(scores, 1.0)


def test_tanimoto_index_updates_and_persistence(tmp_path):
    rng = np.random.default_rng(1)
    bits = (rng.random((50, 256)) < 0.1).astype(np.float32)
    idx = TanimotoIndex.build(256, np.arange(1, 51), bits, IndexSettings())
    s, i = idx.search(bits[:3], 1)
    assert list(i[:, 0]) == [1, 2, 3] and np.allclose(s[:, 0], 1.0)
    idx.apply(np.array([2]), np.array([], np.int64), np.zeros((0, 256), np.float32))  # class 2 forgotten
    assert idx.search(bits[1:2], 1)[1][0, 0] != 2 and idx.live == 49
    idx.save(tmp_path / "i", 3, 7)
    loaded, epoch, gen = TanimotoIndex.load(tmp_path / "i", IndexSettings())
    assert (epoch, gen, loaded.live) == (3, 7, 49)
    np.testing.assert_array_equal(loaded.search(bits[:5], 3)[1], idx.search(bits[:5], 3)[1])


# ---------------------------------------------------------------- gallery and bad inputs
def test_ecfp_gallery_tanimoto_search_and_bad_inputs(tmp_path):
    path = tmp_path / "m.gallery"
    with Gallery.open(path, "ecfp") as g:
        assert g.modality == "molecule" and g.info()["index"]["kind"] == "tanimoto"
        g.enrol("aspirin", [ASPIRIN])
        g.enrol("caffeine", [Inline(CAFFEINE, "molecule")])
        g.enrol("ibuprofen", [IBUPROFEN.encode()])
        before = g.list()
        res = g.identify(["CC(=O)Oc1ccccc1C(=O)OC"], k=3)[0]  # aspirin methyl ester
        assert res.label == "aspirin"
        from rdkit import Chem, DataStructs
        from rdkit.Chem import rdFingerprintGenerator

        gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
        expect = DataStructs.TanimotoSimilarity(
            gen.GetFingerprint(Chem.MolFromSmiles("CC(=O)Oc1ccccc1C(=O)OC")), gen.GetFingerprint(Chem.MolFromSmiles(ASPIRIN))
        )
        assert res.score == pytest.approx(expect, abs=1e-6)
        # salts: the largest fragment by default, refused on request
        assert g.encoder.read("CC(=O)[O-].[Na+]").data == b"CC(=O)[O-]"
        g.encoder.salts = "refuse"
        with pytest.raises(OneshotError, match="2 fragments"):
            g.enrol("salt", ["CC(=O)[O-].[Na+]"])
        g.encoder.salts = "largest"
        for bad, msg in (
            ("C1CC", "invalid SMILES"),
            ("", "empty SMILES"),
            (Inline("hello", "text"), "was given text"),
            (b"\x89PNG\r\n\x1a\n....", "was given image"),
        ):
            with pytest.raises(OneshotError, match=msg):
                g.enrol("bad", [bad])
        png = tmp_path / "x.png"
        png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
        with pytest.raises(OneshotError, match="image"):
            g.identify([png])
        assert g.list() == before
    with Gallery.open(path) as g:  # reopened from the recorded spec, index loaded from disk
        assert g.identify([IBUPROFEN])[0].label == "ibuprofen"


def test_cli_smiles_and_csv(tmp_path):
    r = CliRunner()
    gal = str(tmp_path / "m.gallery")
    assert r.invoke(app, ["gallery", "create", gal, "--encoder", "ecfp"]).exit_code == 0
    assert r.invoke(app, ["gallery", "enrol", gal, "aspirin", "--smiles", ASPIRIN]).exit_code == 0
    csv = tmp_path / "mols.csv"
    csv.write_text(f"smiles,name\n{CAFFEINE},caffeine\n{IBUPROFEN},ibuprofen\n")
    out = r.invoke(app, ["gallery", "enrol", gal, "--csv", str(csv), "--label-column", "name"])
    assert out.exit_code == 0, out.output
    bad = tmp_path / "bad.csv"
    bad.write_text("smiles,name\nCCO,ethanol\nC1CC,broken\n")
    out = r.invoke(app, ["gallery", "enrol", gal, "--csv", str(bad), "--label-column", "name"])
    assert out.exit_code == 2 and "bad.csv line 3" in out.output and "nothing was stored" in out.output
    out = r.invoke(app, ["gallery", "enrol", gal, "x", "--csv", str(csv), "--smiles-column", "SMILES"])
    assert out.exit_code == 2 and "no column 'SMILES'" in out.output
    out = r.invoke(app, ["gallery", "enrol", gal, "salt", "--smiles", "CC(=O)[O-].[Na+]", "--salts", "refuse"])
    assert out.exit_code == 2 and "fragments" in out.output
    out = r.invoke(app, ["gallery", "identify", gal, "--smiles", "CC(=O)Oc1ccccc1C(=O)OC", "--csv", str(csv), "--json"])
    assert out.exit_code == 0, out.output
    import json

    labels = [row["label"] for row in json.loads(out.output)["results"]]
    assert labels == ["aspirin", "caffeine", "ibuprofen"]
    listing = json.loads(r.invoke(app, ["gallery", "list", gal, "--json"]).output)
    assert listing["classes"] == 3  # the failed enrolments stored nothing


# ---------------------------------------------------------------- learned model
@needs_data
@pytest.mark.slow
def test_short_training_beats_untrained_on_held_out_assay(tox21, tmp_path):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train_and_check(tox21, tmp_path)
    finally:
        torch.set_num_threads(threads)  # leave the process as it was for the other test files


def _train_and_check(tox21, tmp_path):
    import torch

    from oneshot.checkpoint import load_checkpoint
    from oneshot.data.assays import MoleculeSet, assay_auc, prototype_scorer
    from oneshot.modalities.molecule.train import featurise, train_molecule_model
    from oneshot.training import TrainConfig

    x = featurise(tox21, descriptors=False)  # Morgan bits only: fast to compute
    opts = {"descriptors": False, "hidden": [512], "out_dim": 64}
    cfg = TrainConfig(
        episodes=120,
        ways=2,
        shots=1,
        queries=32,
        lr=1e-3,
        lr_step=1000,
        eval_every=120,
        val_shots=1,
        precision="fp32",
        channels_last=False,
        device="cpu",
    )
    out = tmp_path / "m.safetensors"
    train_molecule_model(tox21, ["SR-ARE", "NR-AhR"], ["SR-ATAD5"], cfg, out, features=x, val_draws=5, encoder_options=opts)
    ck = load_checkpoint(out)
    assert ck.metadata["modality"] == "molecule"
    trained = MoleculeSet(x, tox21, ["SR-MMP"]).embed(ck.method)
    torch.manual_seed(cfg.seed)
    from oneshot.encoders.molecule_mlp import MoleculeMLP
    from oneshot.methods.protonet import ProtoNet

    enc = MoleculeMLP(**ck.metadata["encoder_options"])
    enc.set_descriptor_stats(torch.from_numpy(x))
    untrained = MoleculeSet(x, tox21, ["SR-MMP"]).embed(ProtoNet(enc))
    a = assay_auc(tox21, "SR-MMP", prototype_scorer(trained), 1, 30).mean
    b = assay_auc(tox21, "SR-MMP", prototype_scorer(untrained), 1, 30).mean
    assert a > b + 0.05, (a, b)  # measured: 0.65 vs 0.53
    # the checkpoint loads as a molecule embedder for a (cosine) gallery
    emb = load_embedder(str(out))
    assert emb.modality == "molecule" and emb.fingerprint["modality"] == "molecule"
    with Gallery.open(tmp_path / "l.gallery", emb) as g:
        assert g.info()["index"]["kind"] == "exact"
        g.enrol("aspirin", [ASPIRIN])
        assert g.identify([ASPIRIN])[0].label == "aspirin"
    # oneshot predict with a molecule checkpoint: a support CSV, query CSV rows and --smiles
    sup = tmp_path / "support.csv"
    sup.write_text(f"smiles,label\n{ASPIRIN},acid\n{IBUPROFEN},acid\n{CAFFEINE},xanthine\n")
    queries = tmp_path / "q.csv"
    queries.write_text("smiles\nCn1cnc2c1c(=O)[nH]c(=O)n2C\n")
    r = CliRunner().invoke(
        app, ["predict", "--checkpoint", str(out), "--support", str(sup), str(queries), "--smiles", ASPIRIN, "--json"]
    )
    assert r.exit_code == 0, r.output
    import json

    preds = json.loads(r.output)["predictions"]
    assert [p["class"] for p in preds] == ["acid", "xanthine"]  # a support molecule is nearest its own prototype
    queries.write_text("smiles\nC1CC\n")
    r = CliRunner().invoke(app, ["predict", "--checkpoint", str(out), "--support", str(sup), str(queries)])
    assert r.exit_code == 2 and "q.csv line 2" in r.output


def test_roc_auc_matches_scikit_learn_with_ties():
    from sklearn.metrics import roc_auc_score

    from oneshot.data.assays import roc_auc

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) + 0.3 * y, 1)  # many ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
