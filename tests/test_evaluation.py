import math

import numpy as np
import pytest
import torch

from oneshot.data import ImageSet
from oneshot.encoders import Conv4
from oneshot.evaluation import embed_all, embedding_batch, evaluate, mean_ci95
from oneshot.methods import ProtoNet


def test_ci95_formula_by_hand():
    values = [1.0, 0.8, 0.6, 1.0, 0.9]
    mean = sum(values) / 5
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    m, ci = mean_ci95(values)
    assert m == pytest.approx(0.86)
    assert ci == pytest.approx(1.96 * sd / math.sqrt(5))
    assert mean_ci95([0.5]) == (0.5, 0.0)


def synthetic_set(n_classes=12, per_class=6, seed=0):
    """Images whose class is encoded in which 7x7 patch is bright, plus noise."""
    g = torch.Generator().manual_seed(seed)
    imgs, labels = [], []
    for c in range(n_classes):
        for _ in range(per_class):
            x = torch.randint(0, 100, (1, 28, 28), generator=g)
            r, k = divmod(c, 4)
            x[0, 7 * r : 7 * r + 7, 7 * k : 7 * k + 7] += 40
            imgs.append(x)
            labels.append(c)
    return ImageSet(torch.stack(imgs).to(torch.uint8), torch.tensor(labels), [f"c{c}" for c in range(n_classes)])


class EpisodicProtoNet(ProtoNet):
    """The same model, but forced down the episode-by-episode evaluation path."""

    embeds_independently = False


def test_cached_embedding_path_equals_episode_by_episode_path():
    torch.manual_seed(0)
    data = synthetic_set()
    a = ProtoNet(Conv4())
    b = EpisodicProtoNet(Conv4())
    b.load_state_dict(a.state_dict())
    ra = evaluate(a, data, 5, 1, 3, 40, seed=5)
    rb = evaluate(b, data, 5, 1, 3, 40, seed=5, precision="fp32")
    assert np.allclose(ra.per_episode, rb.per_episode)


def test_a_few_episodes_embed_only_the_images_they_draw(monkeypatch):
    """Training's validation passes no embeddings: two 3-way 1-shot episodes (2 queries) of a 72-image set embed at
    most 18 images, and score them as the whole-split embeddings do; many episodes embed the whole split once."""
    import oneshot.evaluation as ev

    torch.manual_seed(0)
    data = synthetic_set()
    m = ProtoNet(Conv4())
    seen: list[int] = []

    def counting(method, images, device, precision="fp32", **kw):
        seen.append(images.shape[0])
        return embed_all(method, images, device, precision, **kw)

    monkeypatch.setattr(ev, "embed_all", counting)
    short = evaluate(m, data, 3, 1, 2, 2, seed=3)
    assert seen == [len(ev.episode_images(data, [(3, 1)], 2, 2, 3))] and 3 <= seen[0] <= 18
    full = evaluate(m, data, 3, 1, 2, 2, seed=3, embeddings=embed_all(m, data.images, torch.device("cpu")))
    assert short.per_episode == full.per_episode
    seen.clear()
    evaluate(m, data, 5, 1, 3, 200, seed=3)
    assert seen == [len(data)]


def test_evaluation_is_repeatable_and_seeded():
    torch.manual_seed(0)
    data = synthetic_set()
    m = ProtoNet(Conv4())
    r1 = evaluate(m, data, 5, 1, 3, 60, seed=1)
    r2 = evaluate(m, data, 5, 1, 3, 60, seed=1)
    r3 = evaluate(m, data, 5, 1, 3, 60, seed=2)
    assert r1.accuracy == r2.accuracy and r1.ci95 == r2.ci95
    assert r1.per_episode != r3.per_episode
    assert 0 <= r1.accuracy <= 1 and r1.ci95 > 0
    # An untrained Conv-4 already separates these classes better than 5-way chance (0.2), not perfectly.
    assert 0.3 < r1.accuracy < 1.0


def test_embedding_batch_size_changes_speed_not_embeddings():
    """The CPU default batches (about 25,000 pixels) give the same embeddings as one large batch."""
    assert embedding_batch((500, 1, 28, 28), "cpu") == 32 and embedding_batch((500, 1, 56, 56), "cpu") == 16
    assert embedding_batch((500, 1, 105, 105), "cpu") == 16 and embedding_batch((9, 1, 28, 28), "meta") == 2048
    torch.manual_seed(0)
    m = ProtoNet(Conv4())
    m.train()
    m.encoder(torch.rand(8, 1, 28, 28))  # batch norm running statistics that are not the identity
    images = (torch.rand(101, 1, 28, 28) * 255).to(torch.uint8)
    big = embed_all(m, images, torch.device("cpu"), batch_size=2048)
    assert big.shape == (101, 64) and not m.training
    for size in (None, 7, 101):
        assert torch.allclose(embed_all(m, images, torch.device("cpu"), batch_size=size), big, atol=1e-5)


def test_start_scores_the_tail_of_the_same_episodes():
    """Episodes come from (seed, index) alone: scoring 10..24 gives the last 15 per-episode accuracies of 0..24, on
    the embedding path and the episode-by-episode one; a start outside the episodes is refused."""
    from oneshot.errors import OneshotError

    torch.manual_seed(0)
    data = synthetic_set()
    a = ProtoNet(Conv4())
    b = EpisodicProtoNet(Conv4())
    b.load_state_dict(a.state_dict())
    for m in (a, b):
        whole = evaluate(m, data, 5, 1, 3, 25, seed=4)
        tail = evaluate(m, data, 5, 1, 3, 25, seed=4, start=10)
        assert tail.episodes == 15 and np.allclose(tail.per_episode, whole.per_episode[10:])
    for start in (-1, 25):
        with pytest.raises(OneshotError, match="start"):
            evaluate(a, data, 5, 1, 3, 25, seed=4, start=start)
