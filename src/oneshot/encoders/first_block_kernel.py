"""Conv-4's first training block as one fused CPU kernel: folded 3x3 convolution of a 1-channel image, 2x2
max-pooling and ReLU, forward and weight gradient (``first_block.c``).

Why: on a 2-core CPU the first block of a 60-way ProtoNet step (360 images -> 360 x 64 x 28 x 28 activations) is
memory-bound work -- the convolution writes the 28 x 28 map, max-pooling reads it and writes int64 indices, its
backward zero-fills a map-sized gradient and scatters into it, the convolution's backward reads it again --
about 40% of the step after the batch norm is folded (:mod:`oneshot.encoders.batch_norm_fold`). The kernel
never materialises the 28 x 28 map: each pooled output reads its 4 x 4 input window, computes the four
convolution values of all channels, keeps the largest and which one won (one byte), and applies the ReLU; the
backward pass recomputes the winning 3 x 3 patch from the image and accumulates the weight and bias gradients.
Same function as ``relu(maxpool2d(conv2d(x, w, b, padding=1), 2))`` in float32 (ties go to the first window
position, as ``nn.MaxPool2d``; no gradient where the ReLU output is 0, as ``nn.ReLU``); checked against it in
``tests/test_first_block_kernel.py``.

The C source is compiled once per machine with the system C compiler (``$CC``, else ``cc``) into a cache folder
(``$ONESHOT_CACHE`` or ``~/.cache/oneshot``; the file name hashes the source, the flags, the compiler and the
CPU's feature flags) and
loaded with :mod:`ctypes`. Where no compiler is found or the build fails, :func:`available` is False, the reason
is in :func:`unavailable_reason`, and Conv-4 keeps the folded convolution + PyTorch's pooling (the same function).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

SOURCE = Path(__file__).with_name("first_block.c")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c99"]

_library: ctypes.CDLL | None = None
_reason: str | None = None


def _cache_dir() -> Path:
    root = os.environ.get("ONESHOT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "oneshot")
    return Path(root) / "kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_flags() -> str:
    """The CPU's feature flags (``-march=native`` builds for them), so that a cache shared between machines never
    hands one CPU another's instructions."""
    from oneshot.runtime import cpu_flags

    return " ".join(sorted(cpu_flags())) or platform.processor()


def _build() -> ctypes.CDLL:
    """Compile (or reuse) the shared library and load it; raises ``RuntimeError`` with the reason otherwise."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout.splitlines()[:1]
    key = hashlib.sha256(
        "\n".join([SOURCE.read_text(), " ".join(FLAGS), *version, platform.machine(), _cpu_flags()]).encode()
    ).hexdigest()[:16]
    target = _cache_dir() / f"first_block_{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            built = Path(tmp) / target.name
            run = subprocess.run([cc, *FLAGS, "-o", str(built), str(SOURCE), "-lm"], capture_output=True, text=True, check=False)
            if run.returncode != 0:
                raise RuntimeError(f"{cc} failed: {run.stderr.strip()[:500]}")
            os.replace(built, target)  # atomic: concurrent processes (torchrun ranks) see a whole file or none
    lib = ctypes.CDLL(str(target))
    for name in ("first_block_forward", "first_block_backward", "first_block_moments"):
        getattr(lib, name).restype = ctypes.c_int
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded kernel library, built on first use; None where it cannot be built (see :func:`unavailable_reason`)."""
    global _library, _reason
    if _library is None and _reason is None:
        if os.environ.get("ONESHOT_FUSED_KERNELS", "1") == "0":
            _reason = "switched off by ONESHOT_FUSED_KERNELS=0"
        else:
            try:
                _library = _build()
            except (RuntimeError, OSError) as exc:
                _reason = str(exc)
                warnings.warn(
                    f"oneshot: the fused first-block kernel is unavailable ({exc}); training uses PyTorch's "
                    "operators (same results, slower)",
                    RuntimeWarning,
                    stacklevel=2,
                )
    return _library


def available() -> bool:
    """Whether the fused kernel can run here (builds it on first call)."""
    return library() is not None


def unavailable_reason() -> str | None:
    """Why the kernel is unavailable (None when it is available or not tried yet)."""
    return _reason


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _bf16_autocast() -> bool:
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def _image(x: torch.Tensor) -> torch.Tensor:
    b, _, h, w = x.shape
    return x.detach().to(torch.float32).reshape(b, h, w).contiguous()


@torch.no_grad()
def patch_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean (9,), biased covariance (9, 9) (float64) and count of the 3 x 3 zero-padded patches of a 1-channel
    ``x`` (B, 1, H, W): what :func:`oneshot.encoders.batch_norm_fold.patch_moments` computes, in one pass."""
    lib = library()
    if lib is None:
        raise RuntimeError(f"the fused first-block kernel is unavailable: {_reason}")
    b, _, h, w = x.shape
    image = _image(x)
    sums = torch.empty(9, dtype=torch.float64)
    products = torch.empty(9, 9, dtype=torch.float64)
    if lib.first_block_moments(_ptr(image), _ptr(sums), _ptr(products), b, h, w, torch.get_num_threads()) != 0:
        raise RuntimeError("first_block_moments failed (images at most 512 pixels wide, or out of memory)")
    n = b * h * w
    mean = sums / n
    return mean, products / n - torch.outer(mean, mean), n


class FirstBlock(torch.autograd.Function):
    """``relu(maxpool2d(conv2d(x, weight, bias, padding=1), 2))`` for a 1-channel ``x``, fused (CPU).

    Shapes: x (B, 1, H, W) without gradient; weight (O, 1, 3, 3); bias (O,) -> (B, O, H // 2, W // 2) in
    channels-last memory, float32 -- or bfloat16 under CPU bf16 autocast, the dtype the next convolution would
    cast it to. Computed in float32. Gradients flow to ``weight`` and ``bias`` only.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        lib = library()
        if lib is None:
            raise RuntimeError(f"the fused first-block kernel is unavailable: {_reason}")
        b, _, h, w = x.shape
        o = weight.shape[0]
        image = _image(x)
        taps = weight.detach().to(torch.float32).reshape(o, 9).t().contiguous()  # (9, O)
        shift = bias.detach().to(torch.float32).contiguous()
        bf16 = _bf16_autocast()
        out = torch.empty(b, h // 2, w // 2, o, dtype=torch.bfloat16 if bf16 else torch.float32)
        code = torch.empty(b, h // 2, w // 2, o, dtype=torch.uint8)
        threads = torch.get_num_threads()
        status = lib.first_block_forward(
            _ptr(image), _ptr(taps), _ptr(shift), _ptr(out), _ptr(code), b, h, w, o, int(bf16), threads
        )
        if status != 0:
            raise RuntimeError(f"first_block_forward failed (status {status}; at most 256 channels)")
        ctx.save_for_backward(image, code)
        ctx.shapes = (b, h, w, o, weight.dtype, bias.dtype)
        return out.permute(0, 3, 1, 2)  # (B, O, Ho, Wo), channels-last strides

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, torch.Tensor]:
        image, code = ctx.saved_tensors
        b, h, w, o, wdtype, bdtype = ctx.shapes
        bf16 = grad.dtype == torch.bfloat16
        g = grad if bf16 else grad.to(torch.float32)
        g = g.permute(0, 2, 3, 1).contiguous()  # (B, Ho, Wo, O); no copy for a channels-last gradient
        grad_taps = torch.empty(9, o, dtype=torch.float64)
        grad_bias = torch.empty(o, dtype=torch.float64)
        lib = library()
        assert lib is not None  # forward ran
        status = lib.first_block_backward(
            _ptr(image), _ptr(code), _ptr(g), _ptr(grad_taps), _ptr(grad_bias), b, h, w, o, int(bf16), torch.get_num_threads()
        )
        if status != 0:
            raise RuntimeError(f"first_block_backward failed (status {status}: 1 = over 256 channels, 2 = out of memory)")
        return None, grad_taps.t().reshape(o, 1, 3, 3).to(wdtype), grad_bias.to(bdtype)


def fits(x: torch.Tensor, conv: torch.nn.Module) -> bool:
    """Whether the kernel applies: a CPU float32 input with 1 channel, a float32 1 -> O (<= 256) 3 x 3 convolution
    with padding 1, stride 1, and no gradient wanted for the input (a float64 network keeps PyTorch's operators)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and x.shape[1] == 1
        and not x.requires_grad
        and isinstance(conv, torch.nn.Conv2d)
        and conv.in_channels == 1
        and conv.weight.dtype == torch.float32
        and conv.out_channels <= 256
        and conv.kernel_size == (3, 3)
        and conv.padding == (1, 1)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
    )
