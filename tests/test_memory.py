"""The key-value memory of Kaiser et al. (2017): reads, writes and the memory loss against brute-force
references written as plain loops, and brief training of the memory learner on real Omniglot."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oneshot.evaluation import evaluate
from oneshot.methods import Episode, MemoryLearner, TrainShape
from oneshot.methods.memory import KeyValueMemory


def unit(g: torch.Generator, *shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def filled_memory(g: torch.Generator, size: int, dim: int, n: int, classes: int) -> KeyValueMemory:
    """A memory whose first ``n`` slots hold random unit keys with random values (set directly)."""
    mem = KeyValueMemory(size, dim, dtype=torch.float64)
    mem.keys[:n] = unit(g, n, dim)
    mem.values[:n] = torch.randint(0, classes, (n,), generator=g)
    mem.ages[:n] = torch.arange(n, dtype=torch.float32)
    return mem


def test_read_is_the_brute_force_nearest_neighbour():
    g = torch.Generator().manual_seed(0)
    mem = filled_memory(g, size=50, dim=8, n=37, classes=6)  # 13 empty slots are never read
    q = unit(g, 64, 8)
    values, sims, idx = mem.read(q)
    for b in range(q.shape[0]):
        best, arg = -math.inf, -1
        for i in range(37):
            s = float(sum(q[b, j] * mem.keys[i, j] for j in range(8)))
            if s > best:
                best, arg = s, i
        assert int(idx[b]) == arg
        assert int(values[b]) == int(mem.values[arg])
        assert float(sims[b]) == pytest.approx(best, abs=1e-12)
    # Per-class scores: the best similarity of a slot of each class; their argmax is the nearest neighbour's value.
    scores = mem.class_scores(q, 6)
    for b in range(q.shape[0]):
        for c in range(6):
            held = [float(q[b] @ mem.keys[i]) for i in range(37) if int(mem.values[i]) == c]
            assert float(scores[b, c]) == pytest.approx(max(held) if held else -2.0, abs=1e-12)
    assert torch.equal(scores.argmax(1), values)


def test_empty_memory_reads_nothing():
    mem = KeyValueMemory(4, 3)
    values, sims, _ = mem.read(F.normalize(torch.ones(2, 3), dim=1))
    assert values.tolist() == [-1, -1] and torch.isinf(sims).all()
    assert mem.loss(F.normalize(torch.ones(2, 3), dim=1), torch.tensor([0, 1])).tolist() == [0.0, 0.0]


def reference_write(keys: list, values: list, ages: list, q: list[float], v: int) -> tuple[int, str]:
    """The paper's update rule as a plain loop over slots (lists updated in place): returns (slot, 'merge'|'new')."""
    n1, best = -1, -math.inf
    for i in range(len(keys)):
        if values[i] >= 0:
            s = sum(a * b for a, b in zip(q, keys[i]))
            if s > best:
                n1, best = i, s
    for i in range(len(ages)):
        ages[i] += 1
    if n1 >= 0 and values[n1] == v:
        merged = [a + b for a, b in zip(keys[n1], q)]
        norm = math.sqrt(sum(a * a for a in merged))
        keys[n1] = [a / norm for a in merged]
        ages[n1] = 0.0
        return n1, "merge"
    oldest = 0
    for i in range(len(ages)):
        if ages[i] > ages[oldest]:  # strictly greater: the lowest index wins ties
            oldest = i
    keys[oldest], values[oldest], ages[oldest] = list(q), v, 0.0
    return oldest, "new"


def test_writes_follow_the_update_rule():
    g = torch.Generator().manual_seed(1)
    size, dim = 7, 5
    mem = KeyValueMemory(size, dim, dtype=torch.float64)
    keys, values, ages = [[0.0] * dim for _ in range(size)], [-1] * size, [math.inf] * size
    centres = unit(g, 4, dim)
    kinds = []
    for _ in range(60):
        v = int(torch.randint(0, 4, (1,), generator=g))
        q = F.normalize(centres[v] + 0.6 * torch.randn(dim, generator=g, dtype=torch.float64), dim=0)
        slot = mem.write(q, v)
        ref_slot, kind = reference_write(keys, values, ages, q.tolist(), v)
        kinds.append(kind)
        assert slot == ref_slot
        assert mem.values.tolist() == values
        assert torch.allclose(mem.keys, torch.tensor(keys, dtype=torch.float64), atol=1e-12)
        assert mem.ages.tolist() == ages
    # The sequence exercised both branches, and wrong answers evicted the oldest slot once the memory was full.
    assert kinds.count("merge") >= 5 and kinds.count("new") > size


def test_a_new_class_is_known_after_one_write_and_keeps_learning():
    g = torch.Generator().manual_seed(2)
    mem = KeyValueMemory(16, 8, dtype=torch.float64)
    a, b = unit(g, 2, 8)
    mem.write(a, 0)
    assert int(mem.read(a[None])[0]) == 0
    mem.write(b, 1)  # one write of a new class
    assert mem.read(torch.stack([a, b]))[0].tolist() == [0, 1]
    # A point nearer a (class 0) but labelled 1: written to a new slot, then read correctly.
    c = F.normalize(a + 0.3 * b, dim=0)
    assert int(mem.read(c[None])[0]) == 0
    mem.write(c, 1)
    assert int(mem.read(c[None])[0]) == 1 and int(mem.filled.sum()) == 3


def reference_loss(mem: KeyValueMemory, q: torch.Tensor, v: torch.Tensor, k: int, margin: float) -> list[float]:
    out = []
    for b in range(q.shape[0]):
        sims = sorted(
            ((float(q[b] @ mem.keys[i]), int(mem.values[i])) for i in range(mem.size) if int(mem.values[i]) >= 0), reverse=True
        )[:k]
        pos = max((s for s, val in sims if val == int(v[b])), default=0.0)
        neg = max((s for s, val in sims if val != int(v[b])), default=0.0)
        out.append(max(neg - pos + margin, 0.0))
    return out


@pytest.mark.parametrize("k", [1, 3, 256])
def test_memory_loss_matches_brute_force(k):
    g = torch.Generator().manual_seed(3)
    mem = filled_memory(g, size=40, dim=6, n=30, classes=8)
    mem.choose_k = k
    q = unit(g, 50, 6).requires_grad_(True)
    v = torch.randint(0, 9, (50,), generator=g)  # class 8 is in no slot: a missing positive counts as 0
    loss = mem.loss(q, v)
    ref = reference_loss(mem, q.detach(), v, k, mem.margin)
    assert torch.allclose(loss, torch.tensor(ref, dtype=torch.float64), atol=1e-12)
    # Gradients reach the queries (not the stored keys).
    loss.sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_learner_loss_is_the_memory_loss_of_the_queries():
    torch.manual_seed(0)
    from oneshot.encoders import Conv4

    m = MemoryLearner(Conv4(), memory_size=8, choose_k=4).double()
    m.train()
    xs, xq = torch.rand(6, 1, 28, 28, dtype=torch.float64), torch.rand(9, 1, 28, 28, dtype=torch.float64)
    ys, yq = torch.arange(3).repeat_interleave(2), torch.arange(3).repeat_interleave(3)
    loss, scores = m.loss(Episode(xs, ys, xq, yq, 3, 2))
    keys = m.keys_of(m.embed(torch.cat([xs, xq])))
    mem = m.new_memory(8, "cpu")
    mem.keys = mem.keys.double()
    mem.write_all(keys[:6].detach(), ys)
    assert torch.allclose(
        loss, torch.tensor(reference_loss(mem, keys[6:].detach(), yq, 4, 0.1), dtype=torch.float64).mean(), atol=1e-10
    )
    assert scores.shape == (9, 3)
    loss.backward()
    assert m.query_proj.weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_memory_learner_trains_on_omniglot(vinyals_train, vinyals_test):
    from oneshot.data import ImageSet
    from oneshot.encoders import Conv4

    keep = vinyals_test.labels < 100  # 100 unseen classes: evaluation embeds 2000 images, not 13180
    test = ImageSet(vinyals_test.images[keep], vinyals_test.labels[keep], vinyals_test.class_names[:100])
    torch.manual_seed(0)
    m = MemoryLearner(Conv4())
    before = evaluate(m, test, ways=5, shots=1, queries=5, episodes=50, seed=0).accuracy
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    shape = TrainShape(20, 1, 5)
    ys = torch.arange(20)
    yq = torch.arange(20).repeat_interleave(5)
    m.train()
    for ep in m.training_sampler(vinyals_train, shape, 60, seed=0, start=0):
        x = vinyals_train.gather(torch.from_numpy(np.concatenate([ep.support, ep.query])))
        loss, _ = m.loss(Episode(x[:20], ys, x[20:], yq, 20, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate(m, test, ways=5, shots=1, queries=5, episodes=50, seed=0).accuracy
    print(f"memory learner 5-way 1-shot: {before:.3f} untrained, {after:.3f} after 60 episodes")
    assert after > 0.6, (before, after)  # chance is 0.20; 0.72 here on the first 100 test classes
    assert after > before + 0.2, (before, after)  # 0.42 untrained
