"""The embedding-space generator (:mod:`oneshot.generative`) on synthetic clustered embeddings: fitting, the
calibrated centres, sampling, the file round trip and its refusals, and choosing k / alpha on validation episodes."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

from oneshot.errors import OneshotError
from oneshot.generative import Generator, choose, episode_accuracy, generator_path


def clusters(n_classes: int, per_class: int, d: int = 16, spread: float = 0.3, seed: int = 0):
    """(N, D) unit embeddings around random class centres, labels (N,), per-class indices."""
    g = np.random.default_rng(seed)
    centres = g.standard_normal((n_classes, d))
    z = centres.repeat(per_class, 0) + spread * g.standard_normal((n_classes * per_class, d))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    labels = np.arange(n_classes).repeat(per_class)
    return z.astype(np.float32), labels, [np.flatnonzero(labels == c) for c in range(n_classes)]


def test_fit_centre_and_sample():
    z, labels, _ = clusters(10, 6)
    gen = Generator.fit(z, labels, rank=4)
    assert gen.means.shape == (10, 16) and gen.axes.shape == (16, 4) and gen.variances.shape == (4,)
    assert np.allclose(np.linalg.norm(gen.means, axis=1), 1, atol=1e-5)
    assert np.all(np.diff(gen.variances) <= 0) and gen.info == {"base_classes": 10, "base_examples": 60, "rank": 4}
    assert np.allclose(gen.centre(z[:3]), z[:3], atol=1e-6)  # k = 0: the example itself
    gen.k = 1
    near = gen.means[labels[:3]]  # each example's own class mean is its nearest base mean
    assert np.allclose(gen.centre(z[:3]), (z[:3] + near) / 2, atol=1e-5)
    s = gen.sample(z[:3], 5, seed=0)
    assert s.shape == (3, 5, 16) and np.allclose(np.linalg.norm(s, axis=-1), 1, atol=1e-5)
    assert np.array_equal(s, gen.sample(z[:3], 5, seed=0)) and not np.array_equal(s, gen.sample(z[:3], 5, seed=1))


def test_file_round_trip_and_refusals(tmp_path):
    z, labels, _ = clusters(6, 4)
    gen = Generator.fit(z, labels, rank=3)
    gen.k, gen.alpha, gen.info["helps"] = 2, 0.5, True
    path = gen.save(generator_path(tmp_path / "model.safetensors"))
    assert path.name == "model.generator.safetensors"
    back = Generator.load(path)
    assert (back.k, back.alpha, back.helps) == (2, 0.5, True) and back.info == gen.info
    assert np.array_equal(back.means, gen.means) and np.array_equal(back.axes, gen.axes)
    with pytest.raises(OneshotError, match="unreadable .*refit it"):
        Generator.load(tmp_path / "missing.safetensors")
    meta = {"oneshot_generator": '{"k": 0, "alpha": 1.0}'}
    bad = tmp_path / "bad.safetensors"
    save_file({"means": gen.means, "axes": gen.axes[:4], "variances": gen.variances}, bad, metadata=meta)
    with pytest.raises(OneshotError, match="inconsistent shapes"):
        Generator.load(bad)
    save_file({"means": gen.means, "axes": gen.axes, "variances": gen.variances}, bad)  # no generator metadata
    with pytest.raises(OneshotError, match="unreadable"):
        Generator.load(bad)


def test_episode_accuracy_and_choice_on_validation_episodes():
    z, labels, idx = clusters(8, 6, spread=0.2, seed=1)
    m, ci, accs = episode_accuracy(z, None, idx, 5, 3, 40, seed=0)
    assert accs.shape == (40,) and m == pytest.approx(accs.mean()) and ci >= 0 and m > 0.8  # chance: 0.2
    assert episode_accuracy(z, None, idx, 5, 3, 40, seed=0)[0] == m  # seeded
    zb, lb, _ = clusters(12, 6, spread=0.2, seed=2)
    gen = choose(Generator.fit(zb, lb, rank=4), z, idx, 5, 3, n=4, episodes=30, ks=(0, 1), alphas=(0.5,))
    v = gen.info["validation"]
    assert set(v) == {"none", "k=0,alpha=0.5", "k=1,alpha=0.5"}
    assert gen.info["chosen"] == f"k={gen.k},alpha={gen.alpha}" and v[gen.info["chosen"]] == max(
        v["k=0,alpha=0.5"], v["k=1,alpha=0.5"]
    )
    assert gen.helps == (v[gen.info["chosen"]] > v["none"])
