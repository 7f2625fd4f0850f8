"""The metric-learning family: losses against brute-force references, miners against loops over all
triplets, options validated, and each method trained briefly on real Omniglot (slow)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oneshot.checkpoint import load_checkpoint, save_checkpoint
from oneshot.data import ImageSet
from oneshot.encoders import Conv4
from oneshot.errors import OneshotError
from oneshot.evaluation import evaluate
from oneshot.methods import METHODS, Baseline, Contrastive, Episode, MatchingNet, Siamese, Triplet, build_method
from oneshot.methods.contrastive import contrastive_loss
from oneshot.methods.matching import attention_log_probs
from oneshot.methods.pairs import balanced_pairs, class_grid
from oneshot.methods.triplet import mine_triplets, triplet_loss
from oneshot.training import TrainConfig, train


def random_episode(ways=4, shots=2, queries=1, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return Episode(
        torch.rand(ways * shots, 1, 28, 28, generator=g, dtype=dtype),
        torch.arange(ways).repeat_interleave(shots),
        torch.rand(ways * queries, 1, 28, 28, generator=g, dtype=dtype),
        torch.arange(ways).repeat_interleave(queries),
        ways,
        shots,
        torch.arange(10, 10 + ways),
    )


def synthetic_set(n_classes=8, per_class=5, seed=0):
    """Images whose class is the position of a bright 7x7 patch, plus noise."""
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 40, (n_classes * per_class, 1, 28, 28), generator=g)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    for i, c in enumerate(labels.tolist()):
        r, k = divmod(c, 4)
        imgs[i, 0, 7 * r : 7 * r + 7, 7 * k : 7 * k + 7] = 255
    return ImageSet(imgs.to(torch.uint8), labels, [f"c{c}" for c in range(n_classes)])


def episode_labels(ep: Episode) -> torch.Tensor:
    return torch.cat([ep.support_labels, ep.query_labels])


# ---------------------------------------------------------------- pairs


@pytest.mark.parametrize("ways,shots,queries", [(5, 2, 0), (4, 1, 3), (3, 3, 2)])
def test_balanced_pairs_are_balanced_and_correct(ways, shots, queries):
    grid = class_grid(ways, shots, queries)
    labels = torch.cat([torch.arange(ways).repeat_interleave(shots), torch.arange(ways).repeat_interleave(queries)])
    a, b, same = balanced_pairs(grid)
    m = shots + queries
    assert int(same.sum()) == int((1 - same).sum()) == ways * m * (m - 1) // 2
    for i, j, s in zip(a.tolist(), b.tolist(), same.tolist()):
        assert i != j
        assert (labels[i] == labels[j]).item() == bool(s)
    positives = {(i, j) for i, j, s in zip(a.tolist(), b.tolist(), same.tolist()) if s}
    expected = {(i, j) for i in range(len(labels)) for j in range(i + 1, len(labels)) if labels[i] == labels[j]}
    assert positives == expected  # every same-class pair once
    # Deterministic: the same episode always gives the same pairs.
    a2, b2, _ = balanced_pairs(grid)
    assert torch.equal(a, a2) and torch.equal(b, b2)


def test_pairs_need_two_examples_per_class():
    with pytest.raises(OneshotError, match="at least 2 examples"):
        balanced_pairs(class_grid(5, 1, 0))


# ---------------------------------------------------------------- Siamese


def test_siamese_loss_and_classification_match_brute_force():
    torch.manual_seed(0)
    model = Siamese(Conv4())
    ep = random_episode()
    loss, _ = model.loss(ep)
    z = model.encoder(torch.cat([ep.support, ep.query]))
    labels = episode_labels(ep)
    alpha, bias = model.distance.weight[0], model.distance.bias[0]
    a, b, same = balanced_pairs(class_grid(4, 2, 1))
    total = 0.0
    for i, j, s in zip(a.tolist(), b.tolist(), same.tolist()):
        p = torch.sigmoid((alpha * (z[i] - z[j]).abs()).sum() + bias)  # Koch et al.: sigmoid(sum_j a_j |h1_j - h2_j|)
        assert bool(s) == bool(labels[i] == labels[j])
        total = total - (s * torch.log(p) + (1 - s) * torch.log(1 - p))
    assert torch.allclose(loss, total / len(a), atol=1e-5)
    # One-shot: the class whose support example has the highest "same" probability.
    model.eval()
    with torch.no_grad():
        zs, zq = model.embed(ep.support), model.embed(ep.query)
        logits = model.classify_embeddings(zs, ep.support_labels, zq, 4)
        for q in range(zq.shape[0]):
            probs = [torch.sigmoid(model.pair_logits(zq[q], zs[s])) for s in range(zs.shape[0])]
            best = int(torch.stack(probs).argmax())
            assert int(logits[q].argmax()) == int(ep.support_labels[best])
            for c in range(4):
                members = [float(probs[s]) for s in range(zs.shape[0]) if ep.support_labels[s] == c]
                assert float(torch.sigmoid(logits[q, c])) == pytest.approx(max(members), abs=1e-6)


# ---------------------------------------------------------------- contrastive


def test_contrastive_loss_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(30, 6, generator=g, dtype=torch.float64), torch.randn(30, 6, generator=g, dtype=torch.float64)
    same = (torch.rand(30, generator=g) < 0.5).double()
    m = 3.0
    ref = 0.0
    for i in range(30):
        d = float(torch.sqrt(((a[i] - b[i]) ** 2).sum()))
        ref += 0.5 * d**2 if same[i] else 0.5 * max(0.0, m - d) ** 2
    assert float(contrastive_loss(a, b, same, m)) == pytest.approx(ref / 30, rel=1e-9)


def test_contrastive_method_uses_balanced_pairs():
    torch.manual_seed(0)
    model = Contrastive(Conv4(), margin=0.7)
    ep = random_episode(3, 2, 2)
    loss, logits = model.loss(ep)
    z = F.normalize(model.encoder(torch.cat([ep.support, ep.query])), dim=1)
    a, b, same = balanced_pairs(class_grid(3, 2, 2))
    assert torch.allclose(loss, contrastive_loss(z[a], z[b], same, 0.7), atol=1e-6)
    assert logits.shape == (6, 3)


# ---------------------------------------------------------------- triplet mining


def random_batch(p=5, k=3, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(p * k, dim, generator=g, dtype=torch.float64)
    labels = torch.arange(p).repeat_interleave(k)[torch.randperm(p * k, generator=g)]
    dist = torch.cdist(z, z).pow(2)
    return dist, labels


def brute_force_triplets(dist, labels, strategy):
    b = len(labels)
    out = []
    if strategy == "batch-hard":
        for a in range(b):
            pos = [p for p in range(b) if p != a and labels[p] == labels[a]]
            neg = [n for n in range(b) if labels[n] != labels[a]]
            if pos and neg:
                out.append((a, max(pos, key=lambda p: dist[a, p]), min(neg, key=lambda n: dist[a, n])))
        return out
    for a, p in itertools.product(range(b), range(b)):
        if a == p or labels[a] != labels[p]:
            continue
        neg = [n for n in range(b) if labels[n] != labels[a]]
        if strategy == "all":
            out += [(a, p, n) for n in neg]
            continue
        farther = [n for n in neg if dist[a, n] > dist[a, p]]
        if farther:  # semi-hard: the closest negative farther than the positive
            out.append((a, p, min(farther, key=lambda n: dist[a, n])))
        elif neg:  # none farther: the farthest negative (FaceNet's fallback as in TF's semi-hard loss)
            out.append((a, p, max(neg, key=lambda n: dist[a, n])))
    return out


@pytest.mark.parametrize("strategy", ["semihard", "batch-hard", "all"])
@pytest.mark.parametrize("seed", range(6))
def test_miners_match_loops_over_all_triplets(strategy, seed):
    dist, labels = random_batch(p=4 + seed % 3, k=2 + seed % 3, dim=2 + seed, seed=seed)
    a, p, n = mine_triplets(dist, labels, strategy)
    mined = sorted(zip(a.tolist(), p.tolist(), n.tolist()))
    assert mined == sorted(brute_force_triplets(dist, labels, strategy))


def test_semihard_choice_is_inside_the_margin_when_one_exists():
    dist, labels = random_batch(6, 4, 3, seed=11)
    a, p, n = mine_triplets(dist, labels, "semihard")
    d_ap, d_an = dist[a, p], dist[a, n]
    farther = d_an > d_ap
    # Where the chosen negative is farther, no other negative lies strictly between d_ap and d_an.
    for t in torch.nonzero(farther).flatten().tolist():
        others = [m for m in range(len(labels)) if labels[m] != labels[a[t]] and dist[a[t], p[t]] < dist[a[t], m] < d_an[t]]
        assert not others


def test_triplet_loss_matches_brute_force():
    dist, labels = random_batch(4, 3, 5, seed=3)
    margin = 0.5
    for strategy in ("semihard", "batch-hard", "all"):
        a, p, n = mine_triplets(dist, labels, strategy)
        triplets = brute_force_triplets(dist, labels, strategy)
        losses = [max(0.0, float(dist[x, y] - dist[x, z]) + margin) for x, y, z in triplets]
        if strategy == "all":
            active = [v for v in losses if v > 0]
            ref = sum(active) / max(1, len(active))
        else:
            ref = sum(losses) / len(losses)
        got = triplet_loss(dist, a, p, n, margin, average_active=strategy == "all")
        assert float(got) == pytest.approx(ref, rel=1e-9)


def test_triplet_method_normalises_and_validates_mining():
    torch.manual_seed(0)
    model = Triplet(Conv4(), mining="batch-hard")
    ep = random_episode(4, 3, 0)
    z = model.embed(ep.support)
    assert torch.allclose(z.norm(dim=1), torch.ones(12), atol=1e-6)
    loss, _ = model.loss(ep)
    with torch.no_grad():
        zz = F.normalize(model.encoder(ep.support), dim=1)
    dist = torch.cdist(zz, zz).pow(2)
    ref = np.mean(
        [
            max(0.0, float(dist[a, p] - dist[a, n]) + 0.2)
            for a, p, n in brute_force_triplets(dist, ep.support_labels, "batch-hard")
        ]
    )
    assert loss.item() == pytest.approx(ref, rel=1e-4)
    with pytest.raises(OneshotError, match="unknown mining strategy 'hardest'"):
        Triplet(Conv4(), mining="hardest")
    with pytest.raises(OneshotError, match="mining"):
        build_method("triplet", Conv4(), mining="semi-hard")
    with pytest.raises(OneshotError):
        mine_triplets(dist, ep.support_labels, "random")


# ---------------------------------------------------------------- matching networks


def test_matching_attention_matches_brute_force():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(7, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    q = torch.randn(4, 5, generator=g, dtype=torch.float64)
    for scale in (1.0, 7.0):
        logp = attention_log_probs(q, s, labels, 3, scale)
        for i in range(4):
            cos = [float(q[i] @ s[j] / (q[i].norm() * s[j].norm())) for j in range(7)]
            e = [np.exp(scale * c) for c in cos]
            attn = [v / sum(e) for v in e]
            for c in range(3):
                p = sum(attn[j] for j in range(7) if labels[j] == c)
                assert float(logp[i, c].exp()) == pytest.approx(p, rel=1e-5)


def test_matching_fce_depends_on_the_support_set_and_is_evaluated_episode_by_episode():
    torch.manual_seed(0)
    plain, fce = MatchingNet(Conv4()), MatchingNet(Conv4(), fce=True, steps=3)
    assert plain.embeds_independently and not fce.embeds_independently
    assert fce.options()["fce"] is True and "support_lstm.weight_ih_l0" in fce.state_dict()
    g = torch.Generator().manual_seed(0)
    s, q = torch.randn(6, 64, generator=g), torch.randn(4, 64, generator=g)
    labels = torch.arange(3).repeat_interleave(2)
    logp = fce.classify_embeddings(s, labels, q, 3)
    assert torch.allclose(logp.exp().sum(1), torch.ones(4), atol=1e-5)
    g1, f1 = fce.context(s, q)
    s2 = s.clone()
    s2[5] += 1.0
    g2, f2 = fce.context(s2, q)
    assert not torch.allclose(g1[0], g2[0]) and not torch.allclose(f1, f2)  # context flows both ways
    # Evaluation takes the episodic path and reproduces a manual loop over the same episodes.
    data = synthetic_set()
    res = evaluate(fce, data, 3, 1, 2, 5, seed=3)
    from oneshot.data.samplers import EpisodeSampler

    fce.eval()
    manual = []
    for ep in EpisodeSampler(data.class_indices, 3, 1, 2, 5, 3):
        with torch.no_grad():
            logits = fce.classify(data.gather(ep.support), torch.arange(3), data.gather(ep.query), 3)
        manual.append(float((logits.argmax(1) == torch.arange(3).repeat_interleave(2)).float().mean()))
    assert np.allclose(res.per_episode, manual)


# ---------------------------------------------------------------- transfer baselines


def test_baseline_options_losses_and_test_time_rules(tmp_path):
    torch.manual_seed(0)
    data = ImageSet(
        torch.zeros(40, 1, 28, 28, dtype=torch.uint8), torch.arange(20).repeat_interleave(2), [str(i) for i in range(20)]
    )
    opts = Baseline.options_for_data(data)
    assert opts == {"num_classes": 20, "input_shape": [1, 28, 28]}
    model = Baseline(Conv4(), **opts)
    ep = random_episode(4, 1, 2)
    ep.classes = torch.tensor([17, 3, 9, 0])
    loss, _ = model.loss(ep)
    z = model.encoder(torch.cat([ep.support, ep.query]))
    targets = torch.tensor([17, 3, 9, 0, 17, 17, 3, 3, 9, 9, 0, 0])  # episode labels -> dataset classes
    assert torch.allclose(loss, F.cross_entropy(model.classifier(z), targets), atol=1e-5)
    assert torch.allclose(model.base_mean, z.detach().mean(0), atol=1e-6)  # first batch: the exact mean
    assert "base_mean" in model.state_dict()
    # SimpleShot: centre on the base mean, L2-normalise, nearest class mean.
    g = torch.Generator().manual_seed(4)
    s, q = torch.randn(6, 64, generator=g), torch.randn(5, 64, generator=g)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    model.base_mean.copy_(torch.randn(64, generator=g))
    logits = model.classify_embeddings(s, labels, q, 3)
    for i in range(5):
        qn = (q[i] - model.base_mean) / (q[i] - model.base_mean).norm()
        cs = [((s[j] - model.base_mean) / (s[j] - model.base_mean).norm()) for j in range(6)]
        d = [float(((qn - (cs[2 * c] + cs[2 * c + 1]) / 2) ** 2).sum()) for c in range(3)]
        assert np.allclose(-logits[i].numpy(), d, atol=1e-5)
    # Fine-tuned heads separate the support set and are deterministic.
    for rule in ("cosine", "finetune"):
        m = Baseline(Conv4(), num_classes=20, test_time=rule)
        with torch.no_grad():
            out1 = m.classify_embeddings(s, labels, s, 3)
            out2 = m.classify_embeddings(s, labels, s, 3)
        assert torch.equal(out1, out2) and (out1.argmax(1) == labels).all()
    # Options are validated, and the one-shot rule can be changed when loading a checkpoint.
    with pytest.raises(OneshotError, match="test_time"):
        Baseline(Conv4(), num_classes=20, test_time="knn")
    with pytest.raises(OneshotError, match="num_classes"):
        build_method("baseline", Conv4())
    meta = {
        "encoder": "conv4",
        "encoder_options": {"in_channels": 1},
        "preprocessing": {"size": 28, "channels": 1, "invert": True},
    }
    path = save_checkpoint(tmp_path / "b.safetensors", model, meta)
    ck = load_checkpoint(path, method_options={"test_time": "finetune"})
    assert ck.method.test_time == "finetune" and torch.allclose(ck.method.base_mean, model.base_mean)


def test_every_family_method_is_registered():
    assert {"siamese", "contrastive", "triplet", "matching", "baseline"} <= set(METHODS)


# ---------------------------------------------------------------- brief training on real Omniglot

TRAINING = [
    # method, options, (ways, shots, queries), episodes, lr
    ("siamese", {}, (20, 1, 3), 60, 1e-3),
    ("contrastive", {}, (20, 2, 2), 60, 1e-3),
    ("triplet", {"mining": "semihard"}, (20, 4, 0), 60, 1e-3),
    ("matching", {}, (20, 1, 3), 60, 1e-3),
    ("matching", {"fce": True, "steps": 2}, (10, 1, 3), 60, 1e-3),
    # A few dozen episodes would see each of the 4800 base classes less than once: train on 50 of them.
    ("baseline", {}, (10, 1, 5), 100, 1e-3),
]
BASE_CLASSES = {"baseline": 50}


@pytest.mark.slow
@pytest.mark.parametrize(
    "method,options,shape,episodes,lr", TRAINING, ids=[f"{m}{'-fce' if o.get('fce') else ''}" for m, o, *_ in TRAINING]
)
def test_method_learns_on_omniglot(method, options, shape, episodes, lr, vinyals_train, small_val, tmp_path):
    torch.manual_seed(0)
    train_data = vinyals_train
    if method in BASE_CLASSES:
        keep = vinyals_train.labels < BASE_CLASSES[method]
        train_data = ImageSet(
            vinyals_train.images[keep], vinyals_train.labels[keep], vinyals_train.class_names[: BASE_CLASSES[method]]
        )
    model = build_method(method, Conv4(), **{**METHODS[method].options_for_data(train_data), **options})
    ways, shots, queries = shape
    cfg = TrainConfig(
        episodes=episodes,
        ways=ways,
        shots=shots,
        queries=queries,
        lr=lr,
        eval_every=episodes,
        val_ways=5,
        val_shots=1,
        val_queries=5,
        val_episodes=60,
        device="cpu",
    )
    keep = small_val.labels < 60  # 60 validation classes keep validation cheap
    val = ImageSet(small_val.images[keep], small_val.labels[keep], small_val.class_names[:60])
    meta = {
        "encoder": "conv4",
        "encoder_options": {"in_channels": 1},
        "preprocessing": {"size": 28, "channels": 1, "invert": True},
    }
    res = train(model, train_data, val, cfg, tmp_path / f"{method}.safetensors", meta)
    # 5-way chance is 20%.
    assert res.best_val_accuracy > 0.6, res.history
    ck = load_checkpoint(res.checkpoint)
    assert ck.metadata["method"] == method and ck.method.options() == model.options()
