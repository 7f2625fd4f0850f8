"""Device, precision and memory-layout choices shared by training and evaluation."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from pathlib import Path

import torch

from oneshot.errors import OneshotError

PRECISIONS = ("auto", "fp32", "bf16")


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise OneshotError("--device cuda asked for but no CUDA GPU is available: use --device cpu or auto")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise OneshotError(f"unknown device {name!r}: use auto, cpu or cuda") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise OneshotError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s): use cuda or cuda:0")
    mps = getattr(torch.backends, "mps", None)
    if dev.type not in ("cpu", "cuda") and not (dev.type == "mps" and mps is not None and mps.is_available()):
        raise OneshotError(f"--device {name} is not available here: use auto, cpu or cuda")
    return dev


def strict_fp32(device: torch.device) -> None:
    """On CUDA, switch TF32 off for convolutions and matrix products, so fp32 means fp32 as on a CPU (evaluation
    benchmarks that compare a GPU's figures with a CPU's)."""
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously): call before reading a wall clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``'s first ``flags`` line, ``Features`` on ARM); empty where
    unreadable."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16() -> bool:
    """True when the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where the hardware runs it natively, else ``fp32``."""
    if precision not in PRECISIONS:
        raise OneshotError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for the forward pass (a no-op for fp32)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Channels-last memory layout for 4-D image batches when asked (faster convolutions on CPU)."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_allocator_tuned: bool | None = None


def tune_cpu_allocator() -> bool:
    """Keep freed activation buffers in the process heap between training steps (Linux glibc only).

    glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and gives it
    back with ``munmap`` when freed, so a 60-way episode's first-layer activations (360 x 64 x 28 x 28 bf16,
    36 MiB) are page-faulted and zeroed by the kernel on every step. Turning ``mmap`` off for allocations
    (``M_MMAP_MAX = 0``, glibc still falls back to it when the heap cannot grow) and raising the trim threshold
    to 1 GiB lets the heap reuse those pages: Conv-4 forward + backward on 360 images runs about 1.6x faster on
    the 2-core CPU (``benchmarks/throughput.py`` measures it). The cost is that the process keeps up to 1 GiB of
    freed memory instead of returning it, which suits a training or evaluation process. Results are unchanged:
    only where memory comes from changes.

    Called by :func:`oneshot.training.train` and the CPU evaluation path; process-wide and idempotent. Set
    ``ONESHOT_MALLOC_TUNING=0`` to leave the allocator alone. Returns whether the tuning is in effect.
    """
    global _allocator_tuned
    if _allocator_tuned is not None:
        return _allocator_tuned
    _allocator_tuned = False
    if os.environ.get("ONESHOT_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # no C library exposing mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # mallopt returns 0 when it refuses a setting (musl's stub always does).
    _allocator_tuned = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    return _allocator_tuned


COMPILE_CHOICES = ("auto", "on", "off", "cuda-graphs", "step-graph")


def compile_mode(choice: str, device: torch.device) -> str | None:
    """The inductor mode to compile the encoder with: None (eager), ``default`` (``on``) or ``reduce-overhead``
    (``cuda-graphs``: each training step replays recorded CUDA graphs instead of launching its kernels one by
    one; a GPU only). ``step-graph`` compiles nothing: the training loop records its whole step as one CUDA graph
    instead (:mod:`oneshot.step_graph`).

    ``auto`` is a rule keyed on the device, from ``benchmarks/throughput.py --levers``: on the 2-core Intel Xeon
    (AVX-512, AMX) compiling Conv-4's training step ran at 0.6x eager speed (oneDNN already runs the
    convolutions; inductor's fused batch norm / pooling kernels did not pay for themselves) after about a minute
    of compilation, so it stays off on CPU; on an H100 the default mode ran at 0.82x eager and CUDA graphs at
    1.44x (raw step, 60-way 1-shot 5-query), and the whole step recorded as one graph at 2.47x, so on a GPU
    ``auto`` compiles nothing with inductor and leaves the step to :func:`oneshot.step_graph.use_step_graph`.
    """
    if choice not in COMPILE_CHOICES:
        raise OneshotError(f"unknown compile choice {choice!r}: use one of {', '.join(COMPILE_CHOICES)}")
    if choice == "cuda-graphs":
        if device.type != "cuda":
            raise OneshotError(f"--compile cuda-graphs needs a CUDA GPU, not {device.type}: use --compile on, off or auto")
        return "reduce-overhead"
    if choice == "step-graph":  # the whole step as one CUDA graph (oneshot.step_graph), no inductor
        if device.type != "cuda":
            raise OneshotError(f"--compile step-graph needs a CUDA GPU, not {device.type}: use --compile on, off or auto")
        return None
    return "default" if choice == "on" else None


def resolve_compile(choice: str, device: torch.device) -> bool:
    """Whether to ``torch.compile`` (inductor) the encoder (:func:`compile_mode` is not None)."""
    return compile_mode(choice, device) is not None


def compile_encoder(module: torch.nn.Module, mode: str = "default") -> None:
    """Compile ``module.encoder`` in place with inductor's ``mode`` (``nn.Module.compile``: parameter names, hence
    checkpoints, unchanged)."""
    encoder = getattr(module, "encoder", None)
    if not isinstance(encoder, torch.nn.Module):
        raise OneshotError(f"--compile: {type(module).__name__} has no encoder module to compile; use --compile off")
    encoder.compile(mode=mode)


FOLD_BN_CHOICES = ("auto", "on", "off")


def resolve_fold_batch_norm(choice: str, device: torch.device) -> bool:
    """Whether to fold Conv-4's first convolution + training-mode batch norm into one convolution
    (:mod:`oneshot.encoders.batch_norm_fold`; the same function up to rounding).

    ``auto`` is a rule keyed on the device, from ``benchmarks/throughput.py --levers`` and
    ``benchmarks/lever_curves.py`` on the 2-core AMD EPYC: the raw ProtoNet step ran 1.09-1.11x faster folded
    (1.28x with the fused kernel), with validation curves over three seeds within the unfolded ones' spread, so
    ``auto`` folds on CPU; it has not been measured on a GPU, where ``auto`` leaves the layers as they are.
    """
    if choice not in FOLD_BN_CHOICES:
        raise OneshotError(f"unknown fold-bn choice {choice!r}: use one of {', '.join(FOLD_BN_CHOICES)}")
    return choice == "on" or (choice == "auto" and device.type == "cpu")


FUSED_KERNEL_CHOICES = ("auto", "on", "off")


def resolve_fused_kernel(choice: str, device: torch.device) -> bool:
    """Whether Conv-4's folded first block runs as the fused CPU kernel
    (:mod:`oneshot.encoders.first_block_kernel`: convolution + max-pool + ReLU in one pass; the same function).

    ``auto``: on for a CPU with AVX-512 where the kernel builds (a C compiler is present), off elsewhere. Measured
    with ``benchmarks/throughput.py --levers``: on an AMD EPYC with AVX-512 (Zen 4) the raw step ran 1.11x faster
    than folded PyTorch operators (validation curves over three seeds within their spread); on an AMD EPYC with
    AVX2 only the kernel made it slower (0.86x, 7 of 7 interleaved repeats), since oneDNN's AVX2 convolution
    outruns the compiler's vectorisation of the fused loop there. Off on a GPU (it is a CPU kernel); ``on`` where it
    cannot build is an error that says why, and ``on`` without AVX-512 runs it (the same function, slower).
    """
    from oneshot.encoders import first_block_kernel

    if choice not in FUSED_KERNEL_CHOICES:
        raise OneshotError(f"unknown fused-kernel choice {choice!r}: use one of {', '.join(FUSED_KERNEL_CHOICES)}")
    if choice == "off" or device.type != "cpu":
        if choice == "on":
            raise OneshotError(f"--fused-kernel on is a CPU kernel, not for {device.type}: use auto or off")
        return False
    if choice == "auto" and "avx512f" not in cpu_flags():
        return False
    if first_block_kernel.available():
        return True
    if choice == "on":
        raise OneshotError(
            f"--fused-kernel on: the kernel cannot be built here ({first_block_kernel.unavailable_reason()}); "
            "use --fused-kernel auto or off"
        )
    return False


def resolve_first_block(fold_choice: str, fused_choice: str, device: torch.device) -> tuple[bool, bool]:
    """Conv-4's first-block levers as ``train`` applies them: (fold the batch norm, run the fused kernel); the
    kernel only ever runs folded, so its choice is resolved only when the fold is on."""
    fold = resolve_fold_batch_norm(fold_choice, device)
    return fold, fold and resolve_fused_kernel(fused_choice, device)


def set_batch_norm_folding(module: torch.nn.Module, fold: bool, fuse: bool = False) -> None:
    """Switch the first-block folding (and, with it, the fused kernel) of every Conv-4 inside ``module`` (a
    method) on or off."""
    from oneshot.encoders.conv4 import Conv4

    for m in module.modules():
        if isinstance(m, Conv4):
            m.fold_first_batch_norm = fold
            m.fuse_first_block = fold and fuse


def eager() -> contextlib.AbstractContextManager:
    """Run compiled modules eagerly inside the block (validation: other shapes, no recompilation, no graphs)."""
    return torch.compiler.set_stance("force_eager")


def set_threads(threads: int) -> int:
    """Use ``threads`` intra-op threads (0: leave PyTorch's default, one per core); returns the previous count."""
    before = torch.get_num_threads()
    if threads < 0:
        raise OneshotError(f"--threads {threads}: use 0 (one per core) or a positive count")
    if threads:
        torch.set_num_threads(threads)
    return before
