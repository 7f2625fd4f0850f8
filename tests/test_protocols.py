"""The untrained baselines (:mod:`oneshot.protocols.baselines`), the NEU protocol end to end on a small
checkpoint (:mod:`oneshot.protocols.defects`), the faces protocol's scoring (:mod:`oneshot.protocols.faces`) and
``python -m oneshot`` (:mod:`oneshot.__main__`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import data_dir
from gallery_util import make_checkpoint

from oneshot.checkpoint import save_checkpoint
from oneshot.data.archives import FACES_PREPROCESSING, faces_split
from oneshot.data.imageset import ImageSet
from oneshot.encoders import build_encoder
from oneshot.evaluation import evaluate
from oneshot.methods import build_method
from oneshot.protocols.baselines import PretrainedEmbedding, eigenfaces, fit_pca, raw_pixels
from oneshot.protocols.faces import all_pairs_verification, score_method

needs_faces = pytest.mark.skipif(not (data_dir() / "faces/att_faces.tar.gz").is_file(), reason="AT&T faces not found")
needs_neu = pytest.mark.skipif(not (data_dir() / "defects/NEU-DET.tar.gz").is_file(), reason="NEU-DET not found")


def test_python_dash_m_oneshot_runs_the_cli():
    from oneshot import __version__

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}
    r = subprocess.run([sys.executable, "-m", "oneshot", "--version"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"oneshot {__version__}"


def _classes(n_classes: int, per_class: int, seed: int, noise: float = 20.0) -> ImageSet:
    """uint8 (N, 1, 8, 8) images: a random pattern per class plus noise; classes in blocks."""
    g = np.random.default_rng(seed)
    protos = g.uniform(40, 215, (n_classes, 1, 8, 8))
    x = protos.repeat(per_class, 0) + g.normal(0, noise, (n_classes * per_class, 1, 8, 8))
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    return ImageSet(torch.from_numpy(x.clip(0, 255).astype(np.uint8)), labels, [f"c{i}" for i in range(n_classes)])


def test_pca_projection_is_centred_and_orthonormal():
    images = _classes(6, 4, 0).images
    p = fit_pca(images, 5)
    assert p.axes.shape == (64, 5)
    assert torch.allclose(p.axes.T @ p.axes, torch.eye(5), atol=1e-4)
    z = p(images.float() / 255.0)
    assert z.shape == (24, 5) and torch.allclose(z.mean(0), torch.zeros(5), atol=1e-4)
    assert fit_pca(images, 1000).axes.shape == (64, 24)  # k is capped at the number of images


def test_raw_pixels_and_eigenfaces_classify_separable_classes():
    train, val, test = _classes(8, 3, 1), _classes(4, 10, 2), _classes(5, 10, 3, noise=5.0)
    assert evaluate(raw_pixels(), test, 5, 1, 9, 20, 0).accuracy == 1.0
    method, k, scores = eigenfaces(train, val, train, ks=(2, 6, 100), val_ways=4)
    assert set(scores) == {2, 6} and k == max(scores, key=lambda j: scores[j])  # 100 > 24 images: not tried
    assert method.encoder.axes.shape == (64, k)
    assert evaluate(method, test, 5, 1, 9, 20, 0).accuracy > 0.5  # chance: 0.2


class ChannelMeans:
    """A stand-in frozen embedder: (B, C, H, W) uint8 -> (B, C) channel means, as a face descriptor would."""

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        assert images.dtype == np.uint8
        return images.reshape(len(images), images.shape[1], -1).mean(-1).astype(np.float32)


def test_pretrained_embedding_feeds_uint8_and_scores_pairs_by_cosine():
    m = PretrainedEmbedding(ChannelMeans()).eval()
    x = torch.zeros(2, 3, 4, 4)
    x[0, 0], x[1, 1] = 1.0, 0.5
    z = m.embed(x)
    assert torch.allclose(z, torch.tensor([[255.0, 0, 0], [0, 128.0, 0]]))  # 0.5 * 255 rounds to 128
    assert torch.allclose(m.pair_score(z, z.flip(0)), torch.zeros(2)) and m.pair_score(z, z).tolist() == [1.0, 1.0]


def test_all_pairs_verification_counts_every_pair_once():
    z = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 1.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    result, scores, same = all_pairs_verification(z, labels)
    assert len(scores) == 10 and same.sum() == 1 + 3  # C(2,2) + C(3,2) same-class pairs
    assert result.auc == 1.0 and result.eer == 0.0


@needs_faces
def test_raw_pixels_on_the_att_test_people():
    test = faces_split("test", FACES_PREPROCESSING.with_overrides(size=32), data_dir())
    r = score_method(raw_pixels(), test, episodes=20)
    assert r["ways"] == 20 and r["verification"]["pairs"] == 19900
    assert 0.3 < r["accuracy"] <= 1.0  # chance: 0.05
    assert 0.5 < r["verification"]["auc"] <= 1.0


@needs_neu
def test_neu_protocol_rows_on_an_untrained_checkpoint(tmp_path):
    from oneshot.protocols.defects import run_defects

    prep = FACES_PREPROCESSING.with_overrides(size=32, resize="stretch")
    torch.manual_seed(0)
    method = build_method("protonet", build_encoder("conv4", in_channels=1))
    meta = {"method": "protonet", "encoder": "conv4", "encoder_options": {"in_channels": 1}, "preprocessing": prep.to_dict()}
    ck = save_checkpoint(tmp_path / "neu.safetensors", method, meta)
    out = run_defects(ck, episodes=5, omniglot_checkpoint=make_checkpoint(tmp_path / "om.safetensors", 0), data_dir=data_dir())
    assert out["test_images"] == 400 and out["pool_images"] == 1200 and out["preprocessing"]["size"] == 32
    rows = out["methods"]
    assert set(rows) == {"self_supervised", "random_weights", "raw_pixels", "omniglot_encoder"}
    for row in rows.values():
        assert set(row) == {"6w1s", "6w5s"} and all(0 <= r["accuracy"] <= 1 and r["episodes"] == 5 for r in row.values())
    # the "random weights" row rebuilds the same untrained encoder with seed 0: the same embeddings as the checkpoint
    assert rows["random_weights"] == rows["self_supervised"]


def test_neu_protocol_adds_the_logistic_rule_row_for_simclr(tmp_path):
    """A SimCLR checkpoint also gets the support-fitted logistic rule, its C chosen on the validation images."""
    from oneshot.protocols.defects import LOGISTIC_C, run_defects

    prep = FACES_PREPROCESSING.with_overrides(size=32, resize="stretch")
    torch.manual_seed(0)
    method = build_method("simclr", build_encoder("conv4", in_channels=1), feature_dim=256)
    meta = {"method": "simclr", "encoder": "conv4", "encoder_options": {"in_channels": 1}, "preprocessing": prep.to_dict()}
    ck = save_checkpoint(tmp_path / "neu.safetensors", method, meta)
    out = run_defects(ck, episodes=5, data_dir=data_dir(), validation_episodes=10)
    val = out["logistic_rule_validation"]
    assert val["chosen_c"] in LOGISTIC_C and set(val["accuracy"]) == {"prototype", "logistic_c1", "logistic_c10", "logistic_c100"}
    row = out["methods"]["self_supervised_logistic"]
    assert row["logistic_c"] == val["chosen_c"] and all(0 <= row[k]["accuracy"] <= 1 for k in ("6w1s", "6w5s"))


def test_faces_demo_warns_when_strangers_get_in_far_above_the_target(capsys):
    """The demo prints each encoder's gallery flow; a stranger rate beyond target + 2/n (n stranger photos) is flagged."""
    from oneshot.cli_show import _echo_gallery_flow

    def flow(stranger_far: float) -> dict:
        rate = {"target_far": 0.01, "tar": 0.76, "stranger_far": stranger_far, "stranger_queries": 50}
        return {"enrolled": 15, "strangers": 5, "closed_set_accuracy": 0.91, "rates": [rate]}

    _echo_gallery_flow("trained", flow(0.48))
    out = capsys.readouterr()
    assert "gallery (trained): 15 people" in out.out and "strangers accepted 48.0%" in out.out
    assert out.err.startswith("warning: with the trained encoder, 48% of the strangers' photos were accepted")
    _echo_gallery_flow("dlib_face", flow(0.02))  # one photo in 50: within the measurement's resolution
    assert capsys.readouterr().err == ""
