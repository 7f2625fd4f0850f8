import pytest
import torch
from safetensors import safe_open

from oneshot.checkpoint import load_checkpoint
from oneshot.encoders import Conv4
from oneshot.evaluation import evaluate
from oneshot.methods import ProtoNet
from oneshot.resume import resume_path
from oneshot.training import TrainConfig, train

META = {
    "encoder": "conv4",
    "encoder_options": {"in_channels": 1},
    "preprocessing": {"size": 28, "channels": 1, "invert": True},
    "data": {"dataset": "omniglot", "split": "vinyals"},
}


@pytest.mark.slow
def test_protonet_learns_unseen_alphabets(vinyals_train, small_val, vinyals_test, tmp_path):
    """A few hundred episodes on the real training classes give one-shot accuracy far above chance on test classes."""
    torch.manual_seed(0)
    cfg = TrainConfig(episodes=300, ways=20, shots=1, queries=5, eval_every=150, val_ways=5, val_episodes=100, seed=0)
    res = train(ProtoNet(Conv4()), vinyals_train, small_val, cfg, tmp_path / "p.safetensors", META)
    assert res.episodes_run == 300 and len(res.history) == 2
    ck = load_checkpoint(tmp_path / "p.safetensors")
    assert ck.metadata["training"]["episodes_trained"] == res.best_episode
    assert ck.metadata["training"]["val_accuracy"] == pytest.approx(res.best_val_accuracy)
    r = evaluate(ck.method, vinyals_test, 5, 1, 5, 200, seed=0)
    untrained = evaluate(ProtoNet(Conv4()).eval(), vinyals_test, 5, 1, 5, 200, seed=0)
    assert r.accuracy > 0.85, r  # chance is 0.2
    assert r.accuracy > untrained.accuracy + 0.1


def _model_tensors(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys() if k.startswith("model.")}


@pytest.mark.slow
def test_resume_continues_exactly(vinyals_train, small_val, tmp_path):
    cfg = dict(ways=5, shots=1, queries=2, eval_every=10, val_ways=5, val_episodes=10, precision="fp32", seed=3)
    torch.manual_seed(0)
    train(ProtoNet(Conv4()), vinyals_train, small_val, TrainConfig(episodes=20, **cfg), tmp_path / "a.safetensors", META)
    torch.manual_seed(0)
    train(ProtoNet(Conv4()), vinyals_train, small_val, TrainConfig(episodes=10, **cfg), tmp_path / "b.safetensors", META)
    torch.manual_seed(0)
    res = train(
        ProtoNet(Conv4()),
        vinyals_train,
        small_val,
        TrainConfig(episodes=20, **cfg),
        tmp_path / "b.safetensors",
        META,
        resume=True,
    )
    assert res.episodes_run == 20
    a = _model_tensors(resume_path(tmp_path / "a.safetensors"))
    b = _model_tensors(resume_path(tmp_path / "b.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # exact: the resume state restores everything the steps depend on


@pytest.mark.parametrize("name", ["maml", "fomaml", "reptile"])
def test_fast_weight_methods_train_in_the_default_layout_on_cuda(name):
    """functorch cannot clone cuDNN's channels-last gradients inside vmap on CUDA, so a fast-weight method keeps the
    default layout there (its first validation failed otherwise); on CPU, and for other methods, the choice stands."""
    from oneshot.methods import build_method
    from oneshot.training import channels_last_for

    fast, proto = build_method(name, Conv4()), ProtoNet(Conv4())
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert channels_last_for(fast, cuda, True) is False
    assert channels_last_for(fast, cpu, True) is True
    assert channels_last_for(proto, cuda, True) is True
    assert channels_last_for(fast, cpu, False) is False


def test_result_records_the_layout_the_run_used(vinyals_train, small_val, tmp_path, monkeypatch):
    """Results files copy ``TrainResult.config``: it must say what ran (channels_last as resolved for the device,
    as a fast-weight method on CUDA resolves it to False), matching the checkpoint, not what was asked."""
    import oneshot.training as training

    monkeypatch.setattr(training, "channels_last_for", lambda method, device, asked: False)
    cfg = TrainConfig(episodes=2, ways=5, shots=1, queries=1, eval_every=2, val_ways=5, val_episodes=2, channels_last=True)
    res = train(ProtoNet(Conv4()), vinyals_train, small_val, cfg, tmp_path / "p.safetensors", META)
    assert res.config["channels_last"] is False and res.config["episodes"] == 2
    stored = load_checkpoint(tmp_path / "p.safetensors").metadata["training"]["config"]
    assert stored["channels_last"] is False
