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
from oneshot.step_graph import StepGraph, check_step_graph

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


def _run(recorded: bool, steps: int, device: torch.device) -> tuple[list[float], dict[str, torch.Tensor], int]:
    torch.manual_seed(0)
    method = ProtoNet(Conv4()).to(device).train()
    opt = torch.optim.Adam(method.parameters(), lr=1e-3, fused=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=6, gamma=0.5)

    def update(e: Episode) -> LossOutput:
        out = method.loss(e)
        out.loss.backward()
        opt.step()
        return out

    graph = StepGraph(update, opt)
    losses = []
    for i in range(steps):
        ep = _episode(5 if i < 9 else 7, i, device)  # the shape changes at step 10
        if recorded:
            out = graph(ep)
        else:
            opt.zero_grad(set_to_none=True)
            out = update(ep)
        losses.append(float(out.loss))
        sched.step()
    return losses, {k: v.detach().cpu() for k, v in method.state_dict().items()}, graph.records


@cuda
def test_recorded_steps_give_the_eager_losses_and_weights():
    """12 steps: 2 eager warm-ups, a recording at step 3, again at step 7 (the learning rate halves) and at step
    10 (5-way -> 7-way episodes). Tolerance 1e-4: the same kernels, launched from a graph."""
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda")
    eager_losses, eager_weights, _ = _run(False, 12, device)
    graph_losses, graph_weights, records = _run(True, 12, device)
    assert records == 3
    assert graph_losses == pytest.approx(eager_losses, abs=1e-4)
    for name, w in eager_weights.items():
        assert torch.allclose(graph_weights[name].float(), w.float(), atol=1e-4), name


@cuda
def test_a_step_graph_training_run_matches_an_eager_one(tmp_path):
    """The training loop with --compile step-graph: the same weights after 12 steps as --compile off (a learning
    rate change at step 6, validations between steps)."""
    from oneshot.training import TrainConfig, train

    torch.backends.cudnn.allow_tf32 = False
    g = torch.Generator().manual_seed(0)
    data = ImageSet(
        torch.randint(0, 256, (80, 1, 28, 28), generator=g, dtype=torch.uint8),
        torch.arange(20).repeat_interleave(4),
        [f"c{i}" for i in range(20)],
    )
    weights = {}
    for mode in ("off", "step-graph"):
        cfg = TrainConfig(
            episodes=12, ways=5, shots=1, queries=2, eval_every=6, lr_step=5, val_ways=5, val_queries=1, val_episodes=4,
            device="cuda", precision="fp32", compile=mode,
        )  # fmt: skip
        torch.manual_seed(0)
        method = ProtoNet(Conv4())
        res = train(method, data, data, cfg, tmp_path / f"{mode}.safetensors", {})
        assert res.episodes_run == 12 and (tmp_path / f"{mode}.safetensors").is_file()
        weights[mode] = {k: v.detach().cpu() for k, v in method.state_dict().items()}
    for name, w in weights["off"].items():
        assert torch.allclose(weights["step-graph"][name].float(), w.float(), atol=1e-4), name
