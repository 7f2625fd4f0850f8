"""Reptile's outer update (Nichol et al. 2018): SGD with the step size annealed linearly from 1 to 0, checked
against a brute-force reference; and checkpoints written before the option existed keep the loop's Adam."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from oneshot.checkpoint import load_checkpoint, save_checkpoint
from oneshot.errors import OneshotError
from oneshot.methods import Episode, Reptile
from oneshot.methods.reptile import annealed, minibatch_schedule, support_batches


def tiny_reptile(**kw) -> Reptile:
    """A linear 'encoder' (4 -> 5) plus a learned 3-way head, float64, inner SGD (a closed-form reference)."""
    torch.manual_seed(0)
    options = dict(inner_steps=3, inner_lr=0.1, inner_optimizer="sgd", meta_batch=2, head="learned", ways=3, embedding_dim=5)
    return Reptile(nn.Linear(4, 5), **{**options, **kw}).double()


def two_tasks(seed: int) -> Episode:
    """Two 3-way 2-shot 2-query tasks stacked task-major (float64 inputs of 4 features)."""
    g = torch.Generator().manual_seed(seed)
    xs, xq = torch.randn(12, 4, generator=g, dtype=torch.float64), torch.randn(12, 4, generator=g, dtype=torch.float64)
    ys, yq = torch.arange(3).repeat_interleave(2).repeat(2), torch.arange(3).repeat_interleave(2).repeat(2)
    return Episode(xs, ys, xq, yq, ways=3, shots=2, tasks=2)


def brute_force_phi(
    model: Reptile, x: torch.Tensor, y: torch.Tensor, batches: list[list[int]] | None = None
) -> dict[str, torch.Tensor]:
    """The task's adapted weights by plain autograd on a copy of the modules: ``inner_steps`` SGD steps, step t on
    the rows ``batches[t]`` of (x, y) when given, else on all of them."""
    enc, head = copy.deepcopy(model.encoder), copy.deepcopy(model.head)
    params = list(enc.parameters()) + list(head.parameters())
    for t in range(model.inner_steps):
        rows = list(range(len(y))) if batches is None else batches[t]
        grads = torch.autograd.grad(F.cross_entropy(head(enc(x[rows])), y[rows]), params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p -= model.inner_lr * g
    return {
        **{f"encoder.{k}": v.detach() for k, v in enc.named_parameters()},
        **{f"head.{k}": v.detach() for k, v in head.named_parameters()},
    }


def reference_step(
    model: Reptile, episode: Episode, eps: float, batches: list[list[int]] | None = None
) -> dict[str, torch.Tensor]:
    """theta + eps * (mean_i phi_i - theta), the tasks' data being support and query together."""
    n = episode.support.shape[0] // 2
    phis = []
    for t in range(2):
        x = torch.cat([episode.support[t * n : (t + 1) * n], episode.query[t * n : (t + 1) * n]])
        y = torch.cat([episode.support_labels[t * n : (t + 1) * n], episode.query_labels[t * n : (t + 1) * n]])
        phis.append(brute_force_phi(model, x, y, batches))
    return {k: p.detach() + eps * ((phis[0][k] + phis[1][k]) / 2 - p.detach()) for k, p in model.named_parameters()}


@pytest.mark.parametrize("outer_lr", [1.0, 0.5])
def test_outer_update_is_theta_plus_eps_times_mean_phi_minus_theta(outer_lr):
    model = tiny_reptile(outer_lr=outer_lr)
    assert model.outer == "sgd"  # the paper's update is the default for new models
    opt, sched = model.outer_optimizer(episodes=4)
    for step, seed in enumerate([1, 2]):
        episode = two_tasks(seed)
        want = reference_step(model, episode, outer_lr * (1 - step / 4))  # epsilon 1 then 0.75 (x outer_lr)
        opt.zero_grad()
        model.loss(episode).loss.backward()
        opt.step()
        sched.step()
        for k, p in model.named_parameters():
            torch.testing.assert_close(p.detach(), want[k], rtol=0, atol=1e-12)


def test_inner_minibatches_walk_each_class_in_order():
    """``inner_batch`` (Nichol et al.'s mini-batched inner loop): with 3 ways, 2 shots and 2 queries per class, one
    image per class a step; step 0 takes every class's first support image, step 1 its second, step 2 its first
    query image, step 3 its second, step 4 starts over. Checked against hand-listed rows of the brute force."""
    model = tiny_reptile(inner_batch=3, inner_steps=5, outer_lr=1.0)
    # rows of cat(support (3 classes x 2, class-major), query (3 x 2)): class c's images are 2c, 2c+1, 6+2c, 7+2c
    batches = [[0, 2, 4], [1, 3, 5], [6, 8, 10], [7, 9, 11], [0, 2, 4]]
    assert [b.tolist() for b in minibatch_schedule(3, 2, 2, 3, 5)] == batches
    assert [b.tolist() for b in minibatch_schedule(3, 2, 0, 6, 2)] == [[0, 1, 2, 3, 4, 5]] * 2  # support only, 2 per class
    opt, sched = model.outer_optimizer(episodes=4)
    episode = two_tasks(3)
    want = reference_step(model, episode, 1.0, batches)
    opt.zero_grad()
    model.loss(episode).loss.backward()
    opt.step()
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), want[k], rtol=0, atol=1e-12)
    unbatched = reference_step(tiny_reptile(inner_steps=5), episode, 1.0)
    assert max((p.detach() - unbatched[k]).abs().max().item() for k, p in model.named_parameters()) > 1e-4


@pytest.mark.parametrize("batch", [2, 4, -3])
def test_inner_batch_must_be_whole_classes(batch):
    with pytest.raises(OneshotError, match="inner_batch"):
        model = tiny_reptile(inner_batch=batch)
        model.loss(two_tasks(0))


def test_annealing_is_linear_and_reaches_zero_at_the_end():
    model = tiny_reptile()
    opt, sched = model.outer_optimizer(episodes=5)
    seen = []
    for _ in range(7):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2, 0.0, 0.0], abs=1e-12)
    assert annealed(100)(0) == 1.0 and annealed(100)(100) == 0.0 and annealed(100)(250) == 0.0


def test_training_loop_uses_the_annealed_sgd(tmp_path):
    """Through the one training loop: outer_lr = 0 leaves theta unchanged, the old Adam outer update does not
    (two inner steps: after one, a zero head has given the encoder no gradient yet)."""
    from train_child import synthetic

    from oneshot.encoders import Conv4
    from oneshot.training import TrainConfig, train

    data = synthetic(12, 6, 0)
    config = TrainConfig(
        episodes=2,
        ways=3,
        shots=1,
        queries=2,
        eval_every=2,
        val_ways=3,
        val_queries=2,
        val_episodes=2,
        device="cpu",
        precision="fp32",
    )
    moved = {}
    for outer in ("sgd", "adam"):
        torch.manual_seed(0)
        method = Reptile(Conv4(hidden=8), embedding_dim=8, meta_batch=2, inner_steps=2, test_steps=1, outer=outer, outer_lr=0.0)
        before = {k: v.detach().clone() for k, v in method.named_parameters()}
        train(method, data, data, config, tmp_path / f"{outer}.safetensors", {})
        moved[outer] = max((p.detach() - before[k]).abs().max().item() for k, p in method.named_parameters())
    assert moved["sgd"] == 0.0 and moved["adam"] > 0.0


def test_checkpoint_without_the_option_keeps_adam_and_evaluates_identically(tmp_path):
    """A checkpoint written before ``outer`` existed (its options lack it) means the loop's Adam, as it did, and
    classifies exactly as the model that wrote it."""
    from oneshot.encoders import Conv4

    torch.manual_seed(0)
    model = Reptile(Conv4(), test_steps=3, outer="adam").eval()
    legacy_options = {k: v for k, v in model.options().items() if k not in ("outer", "outer_lr")}
    model.options = lambda: legacy_options  # type: ignore[method-assign]  # what older code stored
    path = tmp_path / "old.safetensors"
    save_checkpoint(path, model, {"encoder": "conv4", "preprocessing": {"size": 28, "channels": 1, "invert": False}})
    with safe_open(str(path), framework="pt") as f:
        assert "outer" not in json.loads(f.metadata()["oneshot"])["method_options"]
    loaded = load_checkpoint(path).method
    assert loaded.outer == "adam" and loaded.outer_optimizer(100) is None
    assert Reptile(Conv4()).outer == "sgd"  # while new models default to the paper's update
    g = torch.Generator().manual_seed(0)
    x, q, y = torch.rand(5, 1, 28, 28, generator=g), torch.rand(10, 1, 28, 28, generator=g), torch.arange(5)
    with torch.no_grad():
        torch.testing.assert_close(loaded.classify(x, y, q, 5), model.classify(x, y, q, 5), rtol=0, atol=0)


def test_committed_checkpoint_loads_with_its_recorded_outer_update():
    """The committed checkpoint means the outer update it records (``adam`` when it records none: the legacy rule,
    also checked on a synthetic old file above; ``sgd`` since the issue-17 retraining), and evaluation does not
    depend on the option."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "models" / "reptile_conv4_vinyals.safetensors"
    if not path.is_file():
        pytest.skip("no committed Reptile checkpoint")
    with safe_open(str(path), framework="pt") as f:
        recorded = json.loads(f.metadata()["oneshot"])["method_options"].get("outer", "adam")
    old = load_checkpoint(path).method
    assert old.outer == recorded and (old.outer_optimizer(100) is None) == (recorded == "adam")
    other = "sgd" if recorded == "adam" else "adam"
    new = load_checkpoint(path, method_options={"outer": other}).method  # the outer update does not touch evaluation
    assert new.outer == other
    x, y = torch.rand(5, 1, 28, 28), torch.arange(5)
    torch.manual_seed(0)
    q = torch.rand(10, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(old.classify(x, y, q, 5), new.classify(x, y, q, 5), rtol=0, atol=0)


def test_support_batches_deal_the_classes_in_turn():
    """Test-time mini-batches (Nichol et al.'s eval-batch): round-robin over the classes whatever the support order;
    a batch of whole classes picks the images ``minibatch_schedule`` picks; 0 or the whole set means no batching."""
    class_major = torch.tensor([0, 0, 1, 1, 2, 2])
    assert [b.tolist() for b in support_batches(class_major, 3, 3)] == [[0, 2, 4], [1, 3, 5], [0, 2, 4]]
    assert [b.tolist() for b in support_batches(class_major, 3, 3)] == [b.tolist() for b in minibatch_schedule(3, 2, 0, 3, 3)]
    assert [b.tolist() for b in support_batches(class_major, 2, 4)] == [[0, 2], [4, 1], [3, 5], [0, 2]]
    shuffled = torch.tensor([2, 0, 1, 0, 2, 1])  # class 0 at rows 1, 3; class 1 at 2, 5; class 2 at 0, 4
    assert [b.tolist() for b in support_batches(shuffled, 3, 2)] == [[1, 2, 0], [3, 5, 4]]
    unbalanced = torch.tensor([0, 0, 0, 1])
    assert [b.tolist() for b in support_batches(unbalanced, 2, 3)] == [[0, 3], [1, 2], [0, 3]]
    assert support_batches(class_major, 0, 5) is None and support_batches(class_major, 6, 5) is None
    with pytest.raises(OneshotError, match="test_batch"):
        support_batches(class_major, -1, 5)


def test_test_time_minibatches_match_the_brute_force_and_the_batched_path():
    """``test_batch``: each adaptation step on the dealt rows (brute-force SGD on a copy of the modules), the same
    under ``vmap`` over episodes as one episode at a time, and different from whole-support adaptation."""
    model = tiny_reptile(inner_steps=4, test_steps=4, test_batch=2)
    g = torch.Generator().manual_seed(5)
    support = torch.randn(2, 6, 4, generator=g, dtype=torch.float64)
    query = torch.randn(2, 9, 4, generator=g, dtype=torch.float64)
    labels = torch.arange(3).repeat_interleave(2)
    params = {k: v.detach() for k, v in model.meta_parameters().items()}
    adapted = model.test_adapt(params, support[0], labels, 3)
    want = brute_force_phi(model, support[0], labels, [[0, 2], [4, 1], [3, 5], [0, 2]])
    for k, v in adapted.items():
        torch.testing.assert_close(v, want[k], rtol=0, atol=1e-12)
    one_by_one = torch.stack([model.classify(support[e], labels, query[e], 3) for e in range(2)])
    torch.testing.assert_close(model.classify_tasks(support, labels, query, 3), one_by_one, rtol=0, atol=1e-10)
    whole = tiny_reptile(inner_steps=4, test_steps=4).classify(support[0], labels, query[0], 3)
    assert (whole - one_by_one[0]).abs().max().item() > 1e-4
    assert model.options()["test_batch"] == 2
