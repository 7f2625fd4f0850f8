"""Device, precision and memory-layout choices shared by training and evaluation."""

from __future__ import annotations

import contextlib

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
        return torch.device(name)
    except RuntimeError:
        raise OneshotError(f"unknown device {name!r}: use auto, cpu or cuda") from None


def cpu_has_bf16() -> bool:
    """True when the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
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
