"""Meta-training with the tasks of a meta-batch adapted at once (task_batch=vmap) against the per-task loop
(task_batch=loop, the brute-force reference): the same loss, logits and meta-gradients, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from oneshot.encoders import Conv4
from oneshot.errors import OneshotError
from oneshot.methods import Episode, build_method
from oneshot.methods.task_batch import SplitAffineBatchNorm, uses_vmap

TOL = dict(rtol=1e-9, atol=1e-12)  # float64: the two paths differ only by summation order


def meta_batch(tasks: int = 3, ways: int = 4, shots: int = 2, queries: int = 2, seed: int = 1) -> Episode:
    """T random 28x28 tasks, task-major, in float64."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand(tasks * ways * shots, 1, 28, 28, generator=g, dtype=torch.float64)
    xq = torch.rand(tasks * ways * queries, 1, 28, 28, generator=g, dtype=torch.float64)
    ys = torch.arange(ways).repeat_interleave(shots).repeat(tasks)
    yq = torch.arange(ways).repeat_interleave(queries).repeat(tasks)
    return Episode(xs, ys, xq, yq, ways, shots, tasks=tasks)


def loss_and_grads(name: str, task_batch: str, episode: Episode, **options):
    torch.manual_seed(0)
    model = build_method(name, Conv4(hidden=8), embedding_dim=8, meta_batch=episode.tasks, task_batch=task_batch, **options)
    model = model.double()
    assert model.batches_tasks(episode) == (task_batch == "vmap")
    out = model.loss(episode)
    return out.loss, out.logits, torch.autograd.grad(out.loss, list(model.parameters()))


@pytest.mark.parametrize(
    "name,options",
    [
        ("maml", {"inner_steps": 2, "inner_lr": 0.4}),  # second order through two inner steps (batched BN weights)
        ("maml", {"inner_steps": 2, "inner_lr": 0.4, "head": "learned", "ways": 4}),
        ("fomaml", {"inner_steps": 2, "inner_lr": 0.4}),
        ("reptile", {"inner_steps": 3, "inner_optimizer": "adam"}),
        ("reptile", {"inner_steps": 2, "inner_optimizer": "sgd", "train_on_query": False}),
        ("reptile", {"inner_steps": 3, "inner_optimizer": "adam", "inner_batch": 4}),  # one image per class a step
    ],
)
def test_vmap_over_tasks_matches_the_loop(name, options):
    episode = meta_batch()
    ref_loss, ref_logits, ref_grads = loss_and_grads(name, "loop", episode, **options)
    loss, logits, grads = loss_and_grads(name, "vmap", episode, **options)
    torch.testing.assert_close(loss, ref_loss, **TOL)
    torch.testing.assert_close(logits, ref_logits, **TOL)
    assert logits.shape == (3 * 4 * 2, 4)
    # Gradients near zero (e.g. a bias whose terms cancel) differ by rounding relative to the largest gradient, not
    # to themselves (Adam's inner steps divide by sqrt(v)); the absolute tolerance is scaled by the largest one.
    scale = max(float(r.abs().max()) for r in ref_grads)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=TOL["rtol"], atol=TOL["atol"] + 1e-8 * scale)


def test_second_order_really_differs_from_first_order_under_vmap():
    """The vmap path keeps the second-order term (it is not silently first order)."""
    episode = meta_batch()
    _, _, second = loss_and_grads("maml", "vmap", episode, inner_steps=2)
    _, _, first = loss_and_grads("maml", "vmap", episode, inner_steps=2, first_order=True)
    assert max((s - f).abs().max().item() for s, f in zip(second, first, strict=True)) > 1e-4


def test_split_affine_batch_norm_is_the_same_function():
    """The mode vmap runs under computes F.batch_norm exactly (to rounding), with and without affine weights."""
    x = torch.randn(6, 3, 5, 5, dtype=torch.float64)
    w, b = torch.rand(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    for args in [(w, b), (w, None), (None, None)]:
        ref = F.batch_norm(x, None, None, *args, training=True, eps=1e-3)
        with SplitAffineBatchNorm():
            out = F.batch_norm(x, None, None, *args, training=True, eps=1e-3)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_auto_rule_and_option_checks():
    cpu3, cpu1 = meta_batch(tasks=3), meta_batch(tasks=1)
    assert not uses_vmap("auto", cpu3)  # the CPU measurement: the loop (docs/methods.md)
    assert uses_vmap("vmap", cpu3) and not uses_vmap("vmap", cpu1) and not uses_vmap("loop", cpu3)
    with pytest.raises(OneshotError, match="task batching"):
        build_method("maml", nn.Linear(4, 5), task_batch="threads")


def test_task_batch_round_trips_through_checkpoints(tmp_path):
    """task_batch is stored with the other options; a checkpoint written before it existed loads with "auto"."""
    from oneshot.checkpoint import load_checkpoint, read_metadata, save_checkpoint

    model = build_method("fomaml", Conv4(), task_batch="vmap")
    meta = {
        "encoder": "conv4",
        "encoder_options": {"in_channels": 1},
        "preprocessing": {"size": 28, "channels": 1, "invert": True},
    }
    loaded = load_checkpoint(save_checkpoint(tmp_path / "m.safetensors", model, {**meta, "embedding_dim": 64}))
    assert loaded.method.task_batch == "vmap" and loaded.method.options() == model.options()
    # A checkpoint written before the option existed: the same options without task_batch.
    legacy = build_method("maml", Conv4())
    options = {k: v for k, v in legacy.options().items() if k != "task_batch"}
    legacy.options = lambda: options  # type: ignore[method-assign]
    old = save_checkpoint(tmp_path / "old.safetensors", legacy, {**meta, "embedding_dim": 64})
    assert "task_batch" not in read_metadata(old)["method_options"]
    assert load_checkpoint(old).method.task_batch == "auto"
