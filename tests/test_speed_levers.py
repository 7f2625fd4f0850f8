"""Training-speed levers (issue 17): --compile / --threads flags, compiled vs eager steps, FLOP counting, peak."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from oneshot.cli import app
from oneshot.errors import OneshotError
from oneshot.flops import count_flops, cpu_peak, fp32_flops_per_cycle, vector_isa
from oneshot.runtime import compile_mode, resolve_compile, set_threads

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--compile", "sometimes"], "unknown compile 'sometimes'; choose one of auto, on, off, cuda-graphs"),
        (["--threads", "-1"], "threads"),
        (["--fold-bn", "maybe"], "unknown fold-bn 'maybe'; choose one of auto, on, off"),
        (["--compile", "step-graph", "--device", "cpu"], "step-graph needs a CUDA GPU, not cpu"),
        (["--compile", "cuda-graphs", "--device", "cpu"], "cuda-graphs needs a CUDA GPU, not cpu"),
    ],
)
def test_bad_lever_flags_are_one_line_errors(tmp_path, args, message):
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "m.safetensors"), *args])
    assert res.exit_code == 2, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output


def test_compile_choice_is_resolved_per_device():
    assert resolve_compile("auto", torch.device("cpu")) is False  # measured slower on CPU (docs/training.md)
    assert resolve_compile("on", torch.device("cpu")) is True
    assert resolve_compile("off", torch.device("cpu")) is False
    with pytest.raises(OneshotError, match="unknown compile choice 'yes'"):
        resolve_compile("yes", torch.device("cpu"))
    assert compile_mode("on", torch.device("cpu")) == "default" and compile_mode("auto", torch.device("cpu")) is None
    with pytest.raises(OneshotError, match="cuda-graphs needs a CUDA GPU, not cpu"):
        compile_mode("cuda-graphs", torch.device("cpu"))
    with pytest.raises(OneshotError, match="--threads -2"):
        set_threads(-2)
    before = torch.get_num_threads()
    assert set_threads(0) == before and torch.get_num_threads() == before


def _losses(compiled: bool, steps: int = 3) -> list[float]:
    """Losses of ``steps`` ProtoNet steps on a small random episode (fp32, a narrow Conv-4)."""
    from oneshot.encoders import Conv4
    from oneshot.methods import ProtoNet
    from oneshot.methods.base import Episode
    from oneshot.runtime import compile_encoder

    torch.manual_seed(0)
    method = ProtoNet(Conv4(hidden=8, blocks=2))
    if compiled:
        compile_encoder(method)
    opt = torch.optim.Adam(method.parameters(), lr=1e-3)
    x = torch.rand(5 * 3, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    ep = Episode(x[:5], torch.arange(5), x[5:], torch.arange(5).repeat_interleave(2), 5, 1, torch.arange(5))
    out = []
    for _ in range(steps):
        loss = method.loss(ep).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(loss.item())
    return out


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="inductor needs a C++ compiler")
def test_compiled_steps_give_the_eager_losses():
    """Tolerance 1e-4 absolute: inductor fuses batch norm differently, so sums are ordered differently."""
    eager = _losses(False)
    try:
        compiled = _losses(True)
    except Exception as exc:  # a torch build without a working inductor backend here
        pytest.skip(f"torch.compile cannot run here: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    assert compiled == pytest.approx(eager, abs=1e-4)


def test_flop_count_of_a_convolution_matches_the_brute_force_count():
    n, cin, cout, h, w, k = 3, 2, 4, 7, 5, 3
    conv = nn.Conv2d(cin, cout, k, padding=1)
    x = torch.rand(n, cin, h, w, requires_grad=True)
    # brute force: one multiply and one add per kernel tap, per input channel, per output element (padding included)
    macs = sum(
        1
        for _b in range(n)
        for _o in range(cout)
        for _i in range(h)
        for _j in range(w)
        for _c in range(cin)
        for _t in range(k * k)
    )
    assert count_flops(lambda: conv(x)) == 2 * macs
    # backward: the gradient of the input and the gradient of the weight cost one forward each
    assert count_flops(lambda: conv(x).sum().backward()) == 3 * 2 * macs


CPUINFO = """processor\t: {p}
vendor_id\t: {vendor}
cpu family\t: {family}
model name\t: {model}
cpu MHz\t\t: 2599.998
physical id\t: 0
core id\t\t: {p}
flags\t\t: fpu sse2 avx fma avx2 {extra}
"""


def test_peak_estimate_states_its_factors():
    text = "\n".join(
        CPUINFO.format(p=p, vendor="GenuineIntel", family=6, model="Intel(R) Xeon(R) Processor", extra="avx512f") for p in (0, 1)
    )
    peak = cpu_peak(text)
    assert peak is not None
    cores = min(2, len(__import__("os").sched_getaffinity(0)))
    assert (peak.cores, peak.ghz, peak.flops_per_cycle) == (cores, 2.6, 64)
    assert peak.gflops == pytest.approx(cores * 2.6 * 64) and "an estimate" in peak.how
    nominal = cpu_peak(CPUINFO.format(p=0, vendor="AuthenticAMD", family=25, model="AMD EPYC 9B14 @ 2.20GHz", extra="avx512f"))
    assert nominal is not None and (nominal.ghz, nominal.flops_per_cycle) == (2.2, 32)
    assert fp32_flops_per_cycle({"avx2", "fma"}, "AuthenticAMD", 23)[0] == 32
    assert fp32_flops_per_cycle({"avx2", "fma"}, "AuthenticAMD", 23, 0x31)[0] == 32  # Zen 2 (EPYC Rome)
    assert fp32_flops_per_cycle({"avx2", "fma"}, "AuthenticAMD", 25, 1)[0] == 32  # Zen 3 (EPYC Milan)
    zen1 = CPUINFO.format(p=0, vendor="AuthenticAMD", family=23, model="AMD EPYC", extra="").replace(
        "model name", "model\t\t: 1\nmodel name"
    )  # a first-generation EPYC (Naples): AVX2 on 128-bit FMA pipes
    peak = cpu_peak(zen1)
    assert peak is not None and peak.flops_per_cycle == 16 and "Zen 1" in peak.how
    assert peak.isa == "AVX2/128-bit FMA"  # its own row in the throughput table, apart from Zen 2 / Zen 3's AVX2
    assert fp32_flops_per_cycle({"sse2"}, "GenuineIntel", 6)[0] == 8
    assert cpu_peak("") is None


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="inductor needs a C++ compiler")
def test_a_compiled_run_validates_eagerly(tmp_path, monkeypatch):
    """--compile on: the training steps run compiled, validation (other shapes, eval mode) runs eagerly, and the
    run ends with a checkpoint; the running loss reaches the progress callback as a float."""
    import oneshot.training as training
    from oneshot.data.imageset import ImageSet
    from oneshot.encoders import Conv4
    from oneshot.methods import ProtoNet

    entered = []
    real = training.eager

    def recording_eager():
        entered.append(torch.compiler.is_compiling())
        return real()

    monkeypatch.setattr(training, "eager", recording_eager)
    g = torch.Generator().manual_seed(0)
    data = ImageSet(
        torch.randint(0, 256, (32, 1, 12, 12), generator=g, dtype=torch.uint8),
        torch.arange(8).repeat_interleave(4),
        [f"c{i}" for i in range(8)],
    )
    cfg = training.TrainConfig(
        episodes=4, ways=3, shots=1, queries=1, eval_every=2, val_ways=3, val_queries=1, val_episodes=4, compile="on"
    )
    seen = []
    try:
        res = training.train(
            ProtoNet(Conv4(hidden=8, blocks=2)), data, data, cfg, tmp_path / "m.safetensors", {}, on_progress=seen.append
        )
    except Exception as exc:  # a torch build without a working inductor backend here
        if "Error" in type(exc).__name__ and "oneshot" not in type(exc).__module__:
            pytest.skip(f"torch.compile cannot run here: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        raise
    assert entered == [False, False]  # two validations, both under eager
    assert res.episodes_run == 4 and (tmp_path / "m.safetensors").is_file()
    assert [p.episode for p in seen] == [1, 2, 3, 4] and all(isinstance(p.loss, float) for p in seen)


def test_bf16_peak_counts_native_bf16_only():
    """bf16 runs are held against a bf16 peak: twice the fp32 rate with AVX512-BF16 dot products, AMX's tile rate
    with AMX, the fp32 rate where bf16 is only converted (no native unit)."""
    line = lambda extra: CPUINFO.format(p=0, vendor="AuthenticAMD", family=25, model="AMD EPYC", extra=extra)  # noqa: E731
    fp32 = cpu_peak(line("avx512f avx512_bf16"))
    bf16 = cpu_peak(line("avx512f avx512_bf16"), precision="bf16")
    assert fp32 is not None and bf16 is not None
    assert (fp32.flops_per_cycle, bf16.flops_per_cycle) == (32, 64) and bf16.precision == "bf16" and "bf16" in bf16.how
    converted = cpu_peak(line(""), precision="bf16")  # AVX2 + FMA only, like a Zen 3 EPYC
    assert converted is not None and converted.flops_per_cycle == 32 and converted.isa == "AVX2"
    amx = cpu_peak(CPUINFO.format(p=0, vendor="GenuineIntel", family=6, model="Xeon", extra="avx512f amx_bf16"), "bf16")
    assert amx is not None and amx.flops_per_cycle == 1024 and amx.isa == "AVX-512"
    assert vector_isa({"sse2"}) == "SSE2" and vector_isa({"avx"}) == "AVX"
