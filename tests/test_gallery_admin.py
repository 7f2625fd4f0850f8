"""The gallery's binding to its embedder refusing what it cannot honour (:mod:`oneshot.gallery.binding`), and the
``oneshot gallery calibrate | threshold | adapt | check`` commands' printed results and refusals
(:mod:`oneshot.gallery.cli_admin`), on untrained Conv-4 checkpoints and real Omniglot validation alphabets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gallery_util import make_checkpoint, write_pngs
from typer.testing import CliRunner

from oneshot import Gallery
from oneshot.cli import app
from oneshot.errors import OneshotError

run = CliRunner().invoke


@pytest.fixture()
def enrolled(tmp_path):
    """A gallery of 3 classes (2 drawings each) and a folder of 4 other validation classes."""
    ckpt = make_checkpoint(tmp_path / "enc.safetensors", 0)
    imgs = (np.random.default_rng(0).random((14, 1, 28, 28)) * 255).astype(np.uint8)
    people, val = tmp_path / "people", tmp_path / "val"
    for i in range(3):
        write_pngs(people / f"p{i}", imgs[2 * i : 2 * i + 2])
    for i in range(4):
        write_pngs(val / f"v{i}", imgs[6 + 2 * i : 8 + 2 * i])
    gal = tmp_path / "g.db"
    assert run(app, ["gallery", "create", str(gal), "--encoder", str(ckpt)]).exit_code == 0
    assert run(app, ["gallery", "enrol", str(gal), "--folder", str(people)]).exit_code == 0
    return gal, ckpt, val


def test_new_gallery_arguments_are_checked(tmp_path):
    ckpt = str(make_checkpoint(tmp_path / "enc.safetensors", 0))
    with pytest.raises(OneshotError, match="needs an encoder checkpoint"):
        Gallery.open(tmp_path / "a.db")
    with pytest.raises(OneshotError, match="does not match the encoder's"):
        Gallery.open(tmp_path / "b.db", encoder=ckpt, dim=7)
    with pytest.raises(OneshotError, match="unknown store mode"):
        Gallery.open(tmp_path / "c.db", encoder=ckpt, store="everything")
    assert not any(tmp_path.glob("*.db"))


def test_recorded_encoder_problems_are_one_line_errors(enrolled, tmp_path):
    gal, _, _ = enrolled
    with Gallery.open(tmp_path / "v.db", dim=4) as g:
        with pytest.raises(OneshotError, match="precomputed vectors and has no encoder"):
            _ = g.encoder
    for where, match in [(None, "records no encoder: pass --encoder"), (str(tmp_path / "gone.st"), "cannot be loaded")]:
        with Gallery.open(gal) as g:
            with g.store.write() as tx:
                tx.set_meta("encoder_path", where)
        with Gallery.open(gal) as g:
            with pytest.raises(OneshotError, match=match):
                _ = g.encoder
    with Gallery.open(gal) as g:
        with g.store.write() as tx:
            tx.set_meta("dim", "eight")
    with pytest.raises(OneshotError, match="damaged meta .*restore it from an export"):
        Gallery.open(gal)


def test_calibrate_threshold_and_adapt_print_what_they_set(enrolled):
    gal, _, val = enrolled
    r = run(app, ["gallery", "calibrate", str(gal), "--folder", str(val), "--far", "0.1", "--trials", "3"])
    assert r.exit_code == 0, r.output
    assert "target false-accept rate 0.1 on 4 validation classes (8 examples), gallery of 3 classes, templates of 1 example:" in r.output
    assert "identify threshold" in r.output and "verify threshold" in r.output and "note:" in r.output
    with Gallery.open(gal) as g:
        t = g.thresholds()
    assert f"identify threshold {t['identify']:.4f}" in r.output and f"verify threshold {t['verify']:.4f}" in r.output
    for args, message in [
        ([], "give exactly one of --folder DIR or --omniglot lake-val"),
        (["--folder", str(val), "--omniglot", "lake-val"], "give exactly one"),
        (["--omniglot", "lake-test"], "unknown --omniglot 'lake-test'"),
    ]:
        r = run(app, ["gallery", "calibrate", str(gal), *args])
        assert r.exit_code == 2 and message in r.output, r.output
    r = run(app, ["gallery", "threshold", str(gal)])
    assert r.exit_code == 2 and "give --identify and/or --verify" in r.output
    r = run(app, ["gallery", "adapt", str(gal), "p1", "--rate", "0.2"])
    assert r.exit_code == 0 and "adaptation of 'p1': rate 0.2" in r.output
    r = run(app, ["gallery", "adapt", str(gal), "p1", "--rate", "0"])
    assert r.exit_code == 0 and "adaptation of 'p1': off" in r.output


def test_calibrate_on_omniglot_validation_alphabets(enrolled, omniglot_dir):
    gal, _, _ = enrolled
    args = ["gallery", "calibrate", str(gal), "--omniglot", "lake-val", "--data-dir", str(omniglot_dir)]
    r = run(app, [*args, "--far", "0.01", "--trials", "2", "--json"])
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)
    assert rec["source"] == "omniglot lake val" and rec["validation_classes"] > 100 and rec["gallery_size"] == 3
    assert -1 <= rec["identify_threshold"] <= 1


def test_check_json_reports_a_sound_file(enrolled):
    gal, _, _ = enrolled
    r = run(app, ["gallery", "check", str(gal), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["ok"] and report["sqlite"] == "ok" and report["classes"] == 3


def test_omniglot_calibration_refuses_an_encoder_of_another_domain(tmp_path, omniglot_dir):
    import torch

    from oneshot.checkpoint import save_checkpoint
    from oneshot.data.images import Preprocessing
    from oneshot.encoders import build_encoder
    from oneshot.methods import build_method

    torch.manual_seed(0)
    method = build_method("protonet", build_encoder("conv4", in_channels=1))
    meta = {
        "encoder": "conv4",
        "encoder_options": {"in_channels": 1},
        "preprocessing": Preprocessing().to_dict(),
        "data": {"dataset": "att_faces"},
    }
    ckpt = save_checkpoint(tmp_path / "faces.safetensors", method, meta)
    gal = tmp_path / "g.db"
    assert run(app, ["gallery", "create", str(gal), "--encoder", str(ckpt)]).exit_code == 0
    r = run(app, ["gallery", "calibrate", str(gal), "--omniglot", "lake-val", "--data-dir", str(omniglot_dir)])
    assert r.exit_code == 2 and "trained on att_faces, not handwriting" in r.output, r.output
