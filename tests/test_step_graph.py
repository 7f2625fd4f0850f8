"""--compile step-graph (issue 17, GPU throughput): the whole training step recorded as one CUDA graph.

Where it cannot run (a CPU, a method whose step reads the GPU back, torchrun) it is refused with a one-line
reason; on a GPU the recorded step gives the eager step's losses and weights, and is recorded again when the
learning rate or the episode's shape changes. The GPU tests run where CUDA is present (the lent device);
CI has none.
"""

from __future__ import annotations

import pytest
import torch

from oneshot.data.imageset import ImageSet
from oneshot.encoders import Conv4
from oneshot.errors import OneshotError
from oneshot.methods import ProtoNet, build_method
from oneshot.methods.base import Episode, LossOutput, class_labels
from oneshot.runtime import compile_mode
from oneshot.step_graph import StepGraph, check_step_graph, use_step_graph

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")


def test_step_graph_is_refused_where_it_cannot_run():
    with pytest.raises(OneshotError, match="step-graph needs a CUDA GPU, not cpu"):
        compile_mode("step-graph", torch.device("cpu"))
    gpu = torch.device("cuda")  # a device object only: nothing runs
    with pytest.raises(OneshotError, match="not cpu"):
        check_step_graph(torch.device("cpu"), ProtoNet(Conv4(hidden=8, blocks=2)), False)
    with pytest.raises(OneshotError, match="matching training step cannot be recorded.*use --compile cuda-graphs"):
        check_step_graph(gpu, build_method("matching", Conv4(hidden=8, blocks=2)), False)
    with pytest.raises(OneshotError, match="under torchrun"):
        check_step_graph(gpu, ProtoNet(Conv4(hidden=8, blocks=2)), True)
    check_step_graph(gpu, ProtoNet(Conv4(hidden=8, blocks=2)), False)  # the measured case passes


def test_auto_records_the_step_only_where_it_was_measured():
    """--compile auto: the whole-step graph on a GPU for a graph-safe method, one process, fp32; nowhere else."""
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    proto, matching = ProtoNet(Conv4(hidden=8, blocks=2)), build_method("matching", Conv4(hidden=8, blocks=2))
    assert use_step_graph("auto", gpu, proto, False, "fp32") is True
    assert use_step_graph("auto", gpu, proto, False, "bf16") is False  # not recorded under autocast on a GPU
    assert use_step_graph("auto", gpu, proto, True, "fp32") is False  # torchrun
    assert use_step_graph("auto", gpu, matching, False, "fp32") is False
    assert use_step_graph("auto", cpu, proto, False, "fp32") is False
    assert use_step_graph("off", gpu, proto, False, "fp32") is False
    assert use_step_graph("cuda-graphs", gpu, proto, False, "fp32") is False
    assert use_step_graph("step-graph", gpu, proto, False, "bf16") is True  # asked for: the user's choice
    with pytest.raises(OneshotError, match="matching training step cannot be recorded"):
        use_step_graph("step-graph", gpu, matching, False, "fp32")


def test_only_checked_methods_declare_a_graph_safe_step():
    """A method is marked graph-safe once its step was run recorded on a GPU (tests below): ProtoNet alone so far,
    and a subclass that embeds on the CPU (a frozen embedder) is not."""
    from oneshot.methods import METHODS
    from oneshot.protocols.baselines import PretrainedEmbedding

    assert {name for name, cls in METHODS.items() if cls.graph_safe_step} == {"protonet"}
    assert PretrainedEmbedding.graph_safe_step is False


def _episode(ways: int, seed: int, device: torch.device) -> Episode:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(ways * 3, 1, 28, 28, generator=g).to(device)
    return Episode(
        x[:ways],
        class_labels(ways, 1, device),
        x[ways:],
        class_labels(ways, 2, device),
        ways,
        1,
        torch.arange(ways, device=device),
    )


def _graphed_method(device: torch.device):
    torch.manual_seed(0)
    method = ProtoNet(Conv4()).to(device).train()
    opt = torch.optim.Adam(method.parameters(), lr=1e-3, fused=True)

    def update(e: Episode) -> LossOutput:
        out = method.loss(e)
        out.loss.backward()
        opt.step()
        return out

    return method, opt, StepGraph(update, opt)


@cuda
def test_each_replayed_step_computes_the_eager_loss_and_gradients():
    """12 steps: 2 eager warm-ups, a recording at step 3, again at step 7 (the learning rate halves) and at step
    10 (5-way -> 7-way episodes). Before each step the model is copied; after it, the step's loss and every
    parameter's gradient (what the graph's backward wrote) must equal an eager forward + backward of the copy
    on the same episode; Adam's step counter must count every step. (Whole runs are not compared weight for
    weight: cuDNN's weight gradients sum in a nondeterministic order, and Adam turns last-bit differences in
    near-zero gradients into full-size steps, eager against eager alike.)"""
    import copy

    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda")
    method, opt, graph = _graphed_method(device)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=6, gamma=0.5)
    for i in range(12):
        ep = _episode(5 if i < 9 else 7, i, device)
        before = copy.deepcopy(method)
        before.zero_grad(set_to_none=True)  # deepcopy copies the gradients too
        out = graph(ep)
        ref = before.loss(ep)
        ref.loss.backward()
        assert float(out.loss.detach()) == pytest.approx(float(ref.loss.detach()), rel=1e-5), i
        # cuDNN sums weight gradients in no fixed order, so last bits differ; the biases before batch norm have
        # gradients that are zero but for that noise. Tolerance: 1e-5 of the largest gradient of the model.
        scale = max(float(q.grad.abs().max()) for q in before.parameters() if q.grad is not None)
        for (name, p), (_, q) in zip(method.named_parameters(), before.named_parameters(), strict=True):
            assert p.grad is not None and q.grad is not None
            assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-5 * scale), (i, name, (p.grad - q.grad).abs().max())
        assert all(float(opt.state[p]["step"]) == i + 1 for p in method.parameters())
        sched.step()
    assert graph.records == 3


@cuda
def test_a_step_graph_training_run_learns_as_an_eager_one(tmp_path):
    """The training loop with --compile step-graph over 40 steps (a learning-rate change at step 20, validations
    every 10): a checkpoint is kept, and the running loss at the end is within 5% of an eager run's (the same
    episodes; see above for why weights are not compared bit for bit)."""
    from oneshot.training import TrainConfig, train

    torch.backends.cudnn.allow_tf32 = False
    g = torch.Generator().manual_seed(0)
    data = ImageSet(
        torch.randint(0, 256, (80, 1, 28, 28), generator=g, dtype=torch.uint8),
        torch.arange(20).repeat_interleave(4),
        [f"c{i}" for i in range(20)],
    )
    final = {}
    for mode in ("off", "step-graph"):
        cfg = TrainConfig(
            episodes=40, ways=5, shots=1, queries=2, eval_every=10, lr_step=20, val_ways=5, val_queries=1, val_episodes=4,
            device="cuda", precision="fp32", compile=mode,
        )  # fmt: skip
        torch.manual_seed(0)
        res = train(ProtoNet(Conv4()), data, data, cfg, tmp_path / f"{mode}.safetensors", {})
        assert res.episodes_run == 40 and (tmp_path / f"{mode}.safetensors").is_file()
        final[mode] = res.history[-1]["loss"]
    assert final["step-graph"] == pytest.approx(final["off"], rel=0.05)
