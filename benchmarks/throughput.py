"""Training throughput: the full oneshot training loop against the encoder's raw speed and against easyfsl.

Three measurements of the same episode shape (default: ProtoNet, Conv-4, 60-way 1-shot 5-query, 28x28
Omniglot, the shape Snell et al. train with), taken in one run so that their ratios are fair on a noisy,
shared machine:

* ``oneshot``: ``oneshot.training.train`` itself -- sampler, gather, layout, autocast, loss, backward,
  Adam step -- images/s over the training episodes after the first ``WARMUP_STEPS`` (validation excluded),
  timed like the other two; ``oneshot_with_warmup`` is the whole run's figure as ``train`` reports it (on a GPU
  the first steps compile and record graphs, which weighs on a run of a second or two);
* ``raw``: the same method, precision and layout on one pre-gathered batch held in memory, forward +
  backward + Adam step only: the ceiling the data path could reach;
* ``easyfsl`` (when easyfsl 1.5.0 is importable): its ``TaskSampler`` + ``torch.utils.data.DataLoader``
  (``episodic_collate_fn``) + ``PrototypicalNetworks`` over the same Conv-4 and images, float32, the way
  its README trains. easyfsl imports torchvision at import time only for dataset classes not used here;
  torchvision does not install beside the CPU torch build, so a placeholder module stands in for it.
  Install it outside the project: ``pip install --no-deps --target /tmp/easyfsl easyfsl==1.5.0`` and pass
  ``--easyfsl-path /tmp/easyfsl``.

``oneshot`` and ``raw`` run in this process with the allocator tuning that ``train`` switches on
(:func:`oneshot.runtime.tune_cpu_allocator`: freed activation buffers stay in the heap instead of going back
to the kernel). easyfsl is measured twice: as a user runs it, in a fresh spawned process with glibc's
defaults (``easyfsl``, the headline ratio), and in this process with oneshot's tuning
(``easyfsl_tuned_allocator``: what easyfsl would reach if it borrowed the trick). ``--default-allocator``
leaves glibc's defaults everywhere.

Each is measured ``--repeats`` times, interleaved, and the median is kept. Writes
``benchmarks/results/throughput_<method>.json`` and prints images/s, raw images/s and their ratio.

Example::

    python benchmarks/throughput.py --episodes 60 --repeats 3 --easyfsl-path /tmp/easyfsl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from oneshot.data.omniglot import load_omniglot
from oneshot.encoders import build_encoder
from oneshot.flops import count_flops, cpu_peak
from oneshot.methods import METHODS, build_method
from oneshot.methods.base import Episode, LossOutput
from oneshot.provenance import provenance
from oneshot.runtime import (
    autocast,
    compile_encoder,
    compile_mode,
    resolve_first_block,
    resolve_precision,
    select_device,
    set_batch_norm_folding,
    set_threads,
    synchronize,
    to_layout,
    tune_cpu_allocator,
)
from oneshot.step_graph import StepGraph, use_step_graph
from oneshot.training import TrainConfig, TrainProgress, train

ROOT = Path(__file__).resolve().parent.parent


WARMUP_STEPS = 3  # untimed first steps of every loop (allocations, cuDNN's choices, compilation, graph recording)


def measure_oneshot(data, method_name: str, cfg: TrainConfig, seed: int) -> tuple[float, float]:
    """Images/s of the real training loop over ``cfg.episodes`` episodes: after its first ``WARMUP_STEPS``
    steps, as the raw and easyfsl loops are timed (a progress callback marks the time, waiting for the device
    there), and over the whole run as ``train`` itself reports it."""
    torch.manual_seed(seed)
    method = build_method(method_name, build_encoder("conv4"))
    device = select_device(cfg.device)
    marks: dict[int, float] = {}

    def mark(p: TrainProgress) -> None:
        if p.episode in (WARMUP_STEPS, cfg.episodes):
            synchronize(device)
            marks[p.episode] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        meta = {"method": method_name, "encoder": "conv4"}
        res = train(method, data, data, cfg, Path(tmp) / "m.safetensors", meta, on_progress=mark)
    images = cfg.ways * (cfg.shots + cfg.queries)
    steady = (cfg.episodes - WARMUP_STEPS) * images / (marks[cfg.episodes] - marks[WARMUP_STEPS])
    return steady, res.images_per_second


def raw_step(data, method_name: str, cfg: TrainConfig, seed: int, split: bool = False, compiled: bool | str = False):
    """One pre-gathered episode in memory and its training step (forward + backward + Adam step, no data path).

    ``split``: embed support and query in two forwards (as easyfsl does) instead of one. ``compiled``
    (True or an inductor mode such as ``reduce-overhead``, CUDA graphs on a GPU):
    ``torch.compile`` the encoder (``--compile on``). Returns ``(step, images per step)``.
    """
    torch.manual_seed(seed)
    device = torch.device(cfg.device)
    method = build_method(method_name, build_encoder("conv4")).to(device)
    precision = resolve_precision(cfg.precision, device)
    if cfg.channels_last:
        method.to(memory_format=torch.channels_last)
    set_batch_norm_folding(method, *resolve_first_block(cfg.fold_batch_norm, cfg.fused_kernel, device))  # as train's
    if compiled and compiled != "step-graph":  # the library's own compile path, with the asked mode
        compile_encoder(method, compiled if isinstance(compiled, str) else "default")
    method.train()
    opt = torch.optim.Adam(method.parameters(), lr=cfg.lr, fused=device.type == "cuda" or None)  # as train's
    w, s, q = cfg.ways, cfg.shots, cfg.queries
    rng = np.random.default_rng(seed)
    classes = rng.choice(data.num_classes, w, replace=False)
    per_class = data.class_indices
    sup = np.concatenate([per_class[c][:s] for c in classes])
    qry = np.concatenate([per_class[c][s : s + q] for c in classes])
    x = to_layout(data.gather(torch.from_numpy(np.concatenate([sup, qry])), device), cfg.channels_last)
    ys = torch.arange(w, device=device).repeat_interleave(s)
    yq = torch.arange(w, device=device).repeat_interleave(q)
    ep = Episode(x[: w * s], ys, x[w * s :], yq, w, s, torch.from_numpy(classes).to(device))

    def update(e: Episode) -> LossOutput:
        with autocast(device, precision):
            if split:  # two forwards: batch norm sees support and query apart (not the same function)
                logits = method.episode_logits(torch.cat([method.embed(e.support), method.embed(e.query)]), e)
                out = LossOutput(F.cross_entropy(logits, e.query_labels), logits)
            else:
                out = method.loss(e)
        out.loss.backward()
        opt.step()
        return out

    graph = StepGraph(update, opt) if compiled == "step-graph" else None  # the library's whole-step graph

    def step() -> None:
        if compiled == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # each call is a new training step (outputs not kept)
        if graph is not None:
            graph(ep)
            return
        opt.zero_grad(set_to_none=True)
        update(ep)

    return step, x.shape[0]


def measure_raw(
    data, method_name: str, cfg: TrainConfig, seed: int, split: bool = False, compiled: bool | str = False
) -> tuple[float, float]:
    """Images/s of the raw step over ``cfg.episodes`` steps after 3 warm-up steps (``cfg.threads`` threads), and
    the seconds the warm-up took (compilation included)."""
    before = set_threads(cfg.threads)
    try:
        step, images = raw_step(data, method_name, cfg, seed, split, compiled)
        device = torch.device(cfg.device)
        tick = time.perf_counter()
        for _ in range(WARMUP_STEPS):
            step()
        synchronize(device)
        warm = time.perf_counter() - tick
        tick = time.perf_counter()
        for _ in range(cfg.episodes):
            step()
        synchronize(device)
        return cfg.episodes * images / (time.perf_counter() - tick), warm
    finally:
        torch.set_num_threads(before)


def measure_easyfsl(data, cfg: TrainConfig, seed: int, workers: int) -> float:
    """Images/s of easyfsl 1.5.0's TaskSampler + DataLoader + PrototypicalNetworks (float32, as shipped)."""
    import importlib.machinery
    from unittest import mock

    def stub(name: str) -> mock.MagicMock:
        module = mock.MagicMock(name=name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # find_spec() callers need a real spec
        return module

    for name in (
        "torchvision",
        "torchvision.transforms",
        "torchvision.datasets",
        "torchvision.models",
        "torchvision.models.resnet",
    ):
        sys.modules.setdefault(name, stub(name))
    for name in ("pandas", "tqdm"):  # imported by easyfsl's dataset modules, unused here
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = stub(name)
    from torch.utils.data import Sampler

    if Sampler.__init__ is object.__init__:
        # easyfsl 1.5.0 calls Sampler.__init__(data_source=None), an argument newer torch dropped.
        Sampler.__init__ = lambda self, data_source=None: None  # type: ignore[method-assign]
    from easyfsl.methods import PrototypicalNetworks
    from easyfsl.samplers import TaskSampler
    from torch.utils.data import DataLoader, Dataset

    class Images(Dataset):
        """The same uint8 images as float tensors in [0, 1], one item at a time (easyfsl's interface)."""

        def __init__(self) -> None:
            self.labels = data.labels.tolist()

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int):
            return data.images[i].float().div(255.0), self.labels[i]

        def get_labels(self) -> list[int]:
            return self.labels

    set_threads(cfg.threads)  # --threads applies to every loop, so that the ratio compares like with like
    torch.manual_seed(seed)
    device = torch.device(cfg.device)
    model = PrototypicalNetworks(build_encoder("conv4")).to(device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    dataset = Images()
    warm = WARMUP_STEPS
    sampler = TaskSampler(dataset, n_way=cfg.ways, n_shot=cfg.shots, n_query=cfg.queries, n_tasks=cfg.episodes + warm)
    # Workers fork, as a Linux user's DataLoader does (this process was spawned, so spawn would be its default).
    context = "fork" if workers else None
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=sampler.episodic_collate_fn,
        multiprocessing_context=context,
    )
    criterion = torch.nn.CrossEntropyLoss()
    images = 0
    tick = 0.0
    for i, (sx, sy, qx, qy, _) in enumerate(loader):
        if i == warm:
            synchronize(device)
            tick = time.perf_counter()
        sx, sy, qx, qy = sx.to(device), sy.to(device), qx.to(device), qy.to(device)  # as its README trains
        model.process_support_set(sx, sy)
        loss = criterion(model(qx), qy)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= warm:
            images += sx.shape[0] + qx.shape[0]
    synchronize(device)
    return images / (time.perf_counter() - tick)


def _easyfsl_in_fresh_process(data_dir: str | None, easyfsl_path: str | None, cfg: TrainConfig, seed: int, workers: int) -> float:
    """``measure_easyfsl`` in a spawned interpreter: glibc's allocator as a user's process has it."""
    if easyfsl_path:
        sys.path.insert(0, easyfsl_path)
    return measure_easyfsl(load_omniglot("vinyals", "train", 28, data_dir), cfg, seed, workers)


def measure_easyfsl_as_shipped(
    data_dir: str | None, easyfsl_path: str | None, cfg: TrainConfig, seed: int, workers: int
) -> float:
    """Images/s of easyfsl in a fresh process that oneshot's allocator tuning never touched."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Not a multiprocessing.Pool: its workers are daemonic and may not start easyfsl's DataLoader workers.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_easyfsl_in_fresh_process, data_dir, easyfsl_path, cfg, seed, workers).result()


# Speed levers, each one change from the default step (keyword arguments of measure_raw; "cfg": TrainConfig fields).
LEVERS: dict[str, dict] = {
    "compile_on": {"compiled": True},
    "compile_cuda_graphs": {"compiled": "reduce-overhead", "device": "cuda"},  # a GPU only
    "compile_step_graph": {"compiled": "step-graph", "device": "cuda"},  # a GPU only: the whole step, one graph
    "channels_last_off": {"cfg": {"channels_last": False}},
    "threads_1": {"cfg": {"threads": 1}, "device": "cpu"},
    "split_forward": {"split": True},
    "fp32": {"cfg": {"precision": "fp32"}},
    "fold_bn_off": {"cfg": {"fold_batch_norm": "off"}, "device": "cpu"},  # auto folds on CPU (and fuses)
    "fused_kernel_off": {"cfg": {"fused_kernel": "off"}, "device": "cpu"},  # folded, PyTorch's conv + pool + ReLU
    "fused_kernel_on": {"cfg": {"fused_kernel": "on"}, "device": "cpu"},  # where auto leaves it off (no AVX-512)
    "fold_bn_on": {"cfg": {"fold_batch_norm": "on"}, "device": "cuda"},  # and not on a GPU
}


def _raw_with_interop(data_dir: str | None, method_name: str, cfg: TrainConfig, seed: int, interop: int) -> float:
    """``measure_raw`` in a spawned interpreter whose inter-op pool has ``interop`` threads (settable once, first)."""
    torch.set_num_interop_threads(interop)
    tune_cpu_allocator()
    return measure_raw(load_omniglot("vinyals", "train", 28, data_dir), method_name, cfg, seed)[0]


def measure_levers(data, data_dir: str | None, method_name: str, cfg: TrainConfig, repeats: int) -> dict:
    """Raw images/s of the default step and of each lever alone, interleaved; per lever the median of its ratio to
    the default of the same repeat, and (``compile_on``) the extra warm-up seconds that compilation took.

    Levers for another kind of device are skipped (CUDA graphs on a CPU; CPU thread counts on a GPU); a lever
    that fails is recorded with its error instead of its speed."""
    import multiprocessing

    gpu = torch.device(cfg.device).type == "cuda"
    levers = {k: v for k, v in LEVERS.items() if v.get("device") in (None, "cuda" if gpu else "cpu")}
    if not gpu:  # of the fused kernel's two levers, the one that changes this machine's default
        fused = resolve_first_block(cfg.fold_batch_norm, cfg.fused_kernel, torch.device("cpu"))[1]
        levers.pop("fused_kernel_off" if not fused else "fused_kernel_on", None)
    runs: dict[str, list[float]] = {"default": [], **{k: [] for k in levers}, **({} if gpu else {"interop_1": []})}
    ratios: dict[str, list[float]] = {k: [] for k in runs if k != "default"}
    warm: dict[str, list[float]] = {"default": [], "compile_on": []}
    errors: dict[str, str] = {}
    for r in range(repeats):
        speed, seconds = measure_raw(data, method_name, cfg, r)
        runs["default"].append(speed)
        warm["default"].append(seconds)
        for name, lever in levers.items():
            if name in errors:
                continue
            c = dataclasses.replace(cfg, **lever.get("cfg", {}))
            try:
                speed, seconds = measure_raw(data, method_name, c, r, lever.get("split", False), lever.get("compiled", False))
            except Exception as e:  # noqa: BLE001 -- a lever that cannot run here is a finding, not a crash
                errors[name] = f"{type(e).__name__}: {str(e)[:300]}"
                continue
            runs[name].append(speed)
            if name in warm:
                warm[name].append(seconds)
        if not gpu:
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                runs["interop_1"].append(pool.apply(_raw_with_interop, (data_dir, method_name, cfg, r, 1)))
        for name in ratios:
            if name not in errors:
                ratios[name].append(runs[name][-1] / runs["default"][-1])
        print(f"levers {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in runs.items() if v), flush=True)
    return {
        "images_per_second": {k: statistics.median(v) for k, v in runs.items() if v},
        "ratio_to_default": {k: statistics.median(v) for k, v in ratios.items() if v},
        "measurements": runs,
        "errors": errors,
        "compile_seconds": warm["compile_on"][0] - warm["default"][0] if warm["compile_on"] else None,
        "episodes_per_measurement": cfg.episodes,
        "notes": "raw step (one episode in memory)" + ("" if gpu else "; interop_1 runs in a fresh spawned process"),
    }


# Dense tensor-core peaks from NVIDIA's datasheets (SXM parts), TFLOP/s: bf16, and TF32 (what fp32 convolutions run
# at under cuDNN's default torch.backends.cudnn.allow_tf32 = True).
GPU_PEAKS_TFLOPS = {
    "H100": {"bf16": 989.4, "fp32": 494.7},
    "H200": {"bf16": 989.4, "fp32": 494.7},
    "A100": {"bf16": 312.0, "fp32": 156.0},
}


@dataclasses.dataclass(frozen=True)
class GpuPeak:
    """A GPU's datasheet peak for the benchmark's precision (the same fields as ``PeakEstimate``'s dict)."""

    gflops: float
    how: str

    def to_dict(self) -> dict:
        return {"gflops": self.gflops, "how": self.how}


def gpu_peak(device: torch.device, precision: str) -> GpuPeak | None:
    """The datasheet dense tensor-core peak of a known GPU model at ``precision`` (bf16; fp32 -> TF32)."""
    name = torch.cuda.get_device_name(device)
    for model, peaks in GPU_PEAKS_TFLOPS.items():
        if model in name:
            kind = "bf16" if precision == "bf16" else "TF32 (fp32 convolutions under cuDNN's default allow_tf32)"
            tflops = peaks["bf16" if precision == "bf16" else "fp32"]
            return GpuPeak(tflops * 1000, f"{name}: {tflops:g} TFLOP/s dense {kind} tensor-core peak, NVIDIA's datasheet")
    return None


def gpu_slug(device: torch.device) -> str:
    """The GPU model as a file-name part (``nvidia-h100-80gb-hbm3``)."""
    return "-".join(re.findall(r"[a-z0-9]+", torch.cuda.get_device_name(device).lower())) or "gpu"


def cpu_slug(isa: str | None = None) -> str:
    """The CPU model, and its vector instruction set when known, as a file-name part (``amd-epyc-avx2``): a
    virtual machine's model name (``AMD EPYC``) can stand for CPUs of different generations."""
    name = provenance("")["machine"].get("cpu", "unknown")
    words = re.sub(r"\(r\)|\(tm\)|cpu|@.*", " ", name.lower()) + " " + (isa or "").lower()
    return "-".join(re.findall(r"[a-z0-9]+", words)) or "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="protonet")
    p.add_argument("--ways", type=int, default=60)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--episodes", type=int, default=60, help="timed episodes per measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--precision", default="auto")
    p.add_argument("--fold-bn", default="auto", help="fold Conv-4's first conv + batch norm: auto, on, off (train's --fold-bn)")
    p.add_argument(
        "--fused-kernel", default="auto", help="the fused first-block CPU kernel: auto, on, off (train's --fused-kernel)"
    )
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--easyfsl-path", default=None, help="folder holding the easyfsl package (pip --target)")
    p.add_argument("--easyfsl-workers", type=int, default=0, help="DataLoader workers for easyfsl")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu", help="cpu or cuda: every loop (easyfsl included) runs there")
    p.add_argument("--out", default=None)
    p.add_argument("--default-allocator", action="store_true", help="do not tune glibc's allocator (for all three loops)")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads for every loop, easyfsl included (0: one per core)")
    p.add_argument(
        "--compile",
        default="off",
        help="train's --compile for the oneshot and raw loops: on, cuda-graphs or step-graph (the whole step, one CUDA graph)",
    )
    p.add_argument(
        "--levers", type=int, default=0, metavar="EPISODES", help="also measure each speed lever (raw step, this many episodes)"
    )
    args = p.parse_args()
    if args.default_allocator:
        os.environ["ONESHOT_MALLOC_TUNING"] = "0"
    allocator_tuned = tune_cpu_allocator()
    load_before = os.getloadavg()  # the machine may be shared: ratios within one run are what count
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    torch.set_num_threads(torch.get_num_threads())
    data = load_omniglot("vinyals", "train", 28, args.data_dir)
    cfg = TrainConfig(
        episodes=args.episodes,
        ways=args.ways,
        shots=args.shots,
        queries=args.queries,
        eval_every=10**9,
        val_ways=5,
        val_shots=1,
        val_queries=1,
        val_episodes=1,
        precision=args.precision,
        channels_last=not args.no_channels_last,
        device=args.device,
        threads=args.threads,
        compile=args.compile,
        fold_batch_norm=args.fold_bn,
        fused_kernel=args.fused_kernel,
    )
    device = select_device(args.device)
    compiled = compile_mode(args.compile, device)  # None, "default" or "reduce-overhead" (CUDA graphs)
    if use_step_graph(args.compile, device, METHODS[args.method], False, resolve_precision(args.precision, device)):
        compiled = "step-graph"  # as train's: the raw step and the loop record their whole step as one graph
    first_block = resolve_first_block(args.fold_bn, args.fused_kernel, device)  # (folded, fused), as train's
    step, images = raw_step(data, args.method, cfg, 0, compiled=False)
    flops_per_image = count_flops(step) / images  # the episode's encoder pass and loss, forward and backward
    precision = resolve_precision(args.precision, device)
    peak = cpu_peak(precision=precision) if device.type == "cpu" else gpu_peak(device, precision)
    if args.easyfsl_path:
        sys.path.insert(0, args.easyfsl_path)
    try:
        import importlib.util

        has_easyfsl = importlib.util.find_spec("easyfsl") is not None
    except ImportError:
        has_easyfsl = False
    if args.episodes <= WARMUP_STEPS:
        p.error(f"--episodes must exceed the {WARMUP_STEPS} untimed warm-up steps")
    runs: dict[str, list[float]] = {
        "oneshot": [],
        "oneshot_with_warmup": [],
        "raw": [],
        "easyfsl": [],
        "easyfsl_tuned_allocator": [],
    }
    for r in range(args.repeats):
        runs["raw"].append(measure_raw(data, args.method, cfg, r, compiled=compiled)[0])
        steady, whole = measure_oneshot(data, args.method, cfg, r)
        runs["oneshot"].append(steady)
        runs["oneshot_with_warmup"].append(whole)
        if has_easyfsl and args.method == "protonet":
            runs["easyfsl"].append(measure_easyfsl_as_shipped(args.data_dir, args.easyfsl_path, cfg, r, args.easyfsl_workers))
            if allocator_tuned:
                runs["easyfsl_tuned_allocator"].append(measure_easyfsl(data, cfg, r, args.easyfsl_workers))
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.0f} img/s" for k, v in runs.items() if v), flush=True)
    per_episode = args.ways * (args.shots + args.queries)
    med = {k: statistics.median(v) for k, v in runs.items() if v}
    levers = None  # measured after the headline figures are written (a long run keeps them if it breaks)
    gflops = {k: v * flops_per_image / 1e9 for k, v in med.items()}
    result = {
        "name": f"throughput_{args.method}",
        "method": args.method,
        "encoder": "conv4",
        "episode_shape": {"ways": args.ways, "shots": args.shots, "queries": args.queries, "images": per_episode, "size": 28},
        "precision": precision,
        "device": str(device),
        "cpu_isa": getattr(peak, "isa", None) if device.type == "cpu" else None,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "channels_last": not args.no_channels_last,
        "fold_batch_norm": first_block[0],
        "fused_kernel": first_block[1],
        "allocator_tuned": allocator_tuned,
        "images_per_second": med["oneshot"],
        "images_per_second_with_warmup": med["oneshot_with_warmup"],
        "warmup_steps": WARMUP_STEPS,
        "raw_images_per_second": med["raw"],
        "ratio_to_raw": med["oneshot"] / med["raw"],
        "episodes_per_second": med["oneshot"] / per_episode,
        "easyfsl_images_per_second": med.get("easyfsl"),
        "easyfsl_episodes_per_second": med["easyfsl"] / per_episode if "easyfsl" in med else None,
        "speedup_over_easyfsl": med["oneshot"] / med["easyfsl"] if "easyfsl" in med else None,
        "easyfsl_tuned_allocator_images_per_second": med.get("easyfsl_tuned_allocator"),
        "speedup_over_easyfsl_tuned_allocator": (
            med["oneshot"] / med["easyfsl_tuned_allocator"] if "easyfsl_tuned_allocator" in med else None
        ),
        "measurements": runs,
        "episodes_per_measurement": args.episodes,
        "threads": args.threads or torch.get_num_threads(),
        "compile": compiled,
        "flops_per_image": flops_per_image,
        "flops_counted": "torch.utils.flop_counter.FlopCounterMode on one raw step: convolutions and matrix products, forward and backward",
        "gflops_per_second": gflops,
        "peak": peak.to_dict() if peak else None,
        "fraction_of_peak": {k: v / peak.gflops for k, v in gflops.items()} if peak else None,
        "levers": levers,
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        **provenance(command),
    }
    slug = cpu_slug(result["cpu_isa"]) if device.type == "cpu" else gpu_slug(device)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"throughput_{args.method}_{slug}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if args.levers:
        levers = measure_levers(data, args.data_dir, args.method, dataclasses.replace(cfg, episodes=args.levers), args.repeats)
        result["levers"] = levers
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"oneshot training loop: {med['oneshot']:.0f} images/s ({med['oneshot'] / per_episode:.2f} episodes/s)")
    print(f"raw forward+backward:  {med['raw']:.0f} images/s; ratio {result['ratio_to_raw']:.2f}")
    print(f"{flops_per_image / 1e6:.1f} MFLOP per image: oneshot {gflops['oneshot']:.1f} GFLOP/s, raw {gflops['raw']:.1f}")
    if peak:
        print(f"peak estimate {peak.gflops:.0f} GFLOP/s ({peak.how}); oneshot reaches {gflops['oneshot'] / peak.gflops:.1%}")
    if levers:
        print(
            "levers (raw step, ratio to the default): "
            + ", ".join(f"{k} {v:.2f}x" for k, v in levers["ratio_to_default"].items())
        )
        if levers["compile_seconds"] is not None:
            print(f"compile time: {levers['compile_seconds']:.1f} s")
        for name, error in levers["errors"].items():
            print(f"lever {name} failed: {error}")
    if "easyfsl" in med:
        print(
            f"easyfsl 1.5.0:         {med['easyfsl']:.0f} images/s ({med['easyfsl'] / per_episode:.2f} episodes/s); oneshot is {result['speedup_over_easyfsl']:.2f}x"
        )
    if "easyfsl_tuned_allocator" in med:
        print(
            f"easyfsl, oneshot's allocator tuning: {med['easyfsl_tuned_allocator']:.0f} images/s; oneshot is {result['speedup_over_easyfsl_tuned_allocator']:.2f}x"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
