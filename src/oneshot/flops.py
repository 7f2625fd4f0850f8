"""FLOPs a training step performs and an estimate of the CPU's peak (``benchmarks/throughput.py``).

The FLOPs are counted, not derived by hand: :func:`count_flops` runs one real step under PyTorch's
``torch.utils.flop_counter.FlopCounterMode``, which adds ``2 x multiply-adds`` of every matrix product and
convolution, forward and backward (gradient of the input when it needs one, gradient of the weight). Batch norm,
pooling, ReLU and the optimiser's element-wise work are not counted (a few percent of a Conv-4 step).

The peak is an estimate, stated with its derivation (:class:`PeakEstimate`): physical cores x clock x FLOPs per
cycle per core at the run's precision, the last from the widest vector FMA the CPU flags announce
(``/proc/cpuinfo``) and the usual number of FMA units of that family; for bf16, twice that where the CPU has
AVX512-BF16 dot products (two bf16 products per fp32 lane), AMX's tile rate where it has AMX, and the fp32 rate
where it has neither (bf16 is then converted, not computed natively). Turbo, AVX-512 clock offsets and one-FMA-unit SKUs move the real
figure either way; the fraction of peak is a yardstick across machines, not a measurement.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.flop_counter import FlopCounterMode


def count_flops(step: Callable[[], Any]) -> int:
    """FLOPs of one call of ``step`` (forward and backward of matrix products and convolutions)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class PeakEstimate:
    """Peak of the cores this process may use at one precision: ``cores * ghz * flops_per_cycle`` GFLOP/s.

    Attributes:
        cores: physical cores in this process's CPU affinity (SMT siblings share their core's FMA units).
        ghz: clock in GHz (the model name's nominal clock, else ``cpu MHz`` of /proc/cpuinfo).
        flops_per_cycle: FLOPs per cycle per core at ``precision`` (FMA = 2 FLOPs x lanes x FMA units).
        how: one line saying where each factor came from.
        precision: ``fp32`` or ``bf16``, the arithmetic the peak is for.
        isa: the widest vector instruction set the flags announce (``AVX-512``, ``AVX2``, ``AVX``, ``SSE2``);
            ``AVX2/128-bit FMA`` on AMD Zen 1 / Zen+, whose AVX2 runs at half the rate of later cores.
    """

    cores: int
    ghz: float
    flops_per_cycle: int
    how: str
    precision: str = "fp32"
    isa: str = ""

    @property
    def gflops(self) -> float:
        return self.cores * self.ghz * self.flops_per_cycle

    def to_dict(self) -> dict[str, Any]:
        return {
            "cores": self.cores,
            "ghz": self.ghz,
            "flops_per_cycle": self.flops_per_cycle,
            "gflops": self.gflops,
            "how": self.how,
            "precision": self.precision,
            "isa": self.isa,
        }


def vector_isa(flags: set[str]) -> str:
    """The widest vector instruction set among the CPU flags: ``AVX-512``, ``AVX2`` (with FMA), ``AVX`` or ``SSE2``.

    Two CPUs with the same model name (a virtual machine's ``AMD EPYC``) can differ here, and with it their speed.
    """
    if "avx512f" in flags:
        return "AVX-512"
    if "avx2" in flags and "fma" in flags:
        return "AVX2"
    return "AVX" if "avx" in flags else "SSE2"


def _amd_zen1(vendor: str, family: int, model: int) -> bool:
    """AMD Zen 1 / Zen+ (family 23, models below 0x30: the first EPYCs), whose AVX2 runs on 128-bit FMA pipes."""
    return vendor == "AuthenticAMD" and family == 23 and 0 <= model < 0x30


def fp32_flops_per_cycle(flags: set[str], vendor: str, family: int, model: int = -1) -> tuple[int, str]:
    """fp32 FLOPs per cycle per core from the CPU's vector instruction set (:func:`vector_isa`), and the reason.

    AVX-512 on Intel server cores: two 512-bit FMA units (16 lanes x 2 FLOPs x 2 = 64; some Xeon Bronze / Silver
    have one, 32). AVX-512 on AMD Zen 4 (family 25) runs on 256-bit data paths (32); Zen 5 (family 26) has full
    512-bit units (64). AVX2 + FMA: two 256-bit FMA units (32), except AMD Zen 1 / Zen+ (family 23, models below
    0x30: the first EPYCs), which split each 256-bit instruction over two 128-bit FMA pipes (16; Zen 2, family 23
    from model 0x30, has 256-bit pipes). AVX without FMA: one 256-bit multiply and one add port (16). SSE2: 8.
    ``model`` is /proc/cpuinfo's ``model`` number (-1 where unknown: taken as the newer core).
    """
    isa = vector_isa(flags)
    if isa == "AVX-512" and vendor == "AuthenticAMD" and family < 26:
        return 32, "AVX-512 on AMD Zen 4: 2 x 256-bit FMA pipes x 8 lanes x 2"
    if isa == "AVX2" and _amd_zen1(vendor, family, model):
        return 16, f"AVX2+FMA on AMD Zen 1 / Zen+ (family 23, model {model}): 2 x 128-bit FMA pipes x 4 lanes x 2"
    return {
        "AVX-512": (64, "AVX-512F: assumed 2 x 512-bit FMA units x 16 lanes x 2 (one-unit SKUs: half)"),
        "AVX2": (32, "AVX2+FMA: 2 x 256-bit FMA units x 8 lanes x 2"),
        "AVX": (16, "AVX: 256-bit multiply + add ports x 8 lanes"),
        "SSE2": (8, "SSE2: 128-bit multiply + add ports x 4 lanes"),
    }[isa]


def bf16_flops_per_cycle(flags: set[str], fp32_per_cycle: int) -> tuple[int, str]:
    """bf16 FLOPs per cycle per core, and the reason: AMX tiles (Intel's figure, 1024 bf16 operations per cycle per
    core); AVX512-BF16 dot products (two bf16 products into each fp32 lane, twice the fp32 FMA rate); else the fp32
    rate (no native bf16: the values are converted and computed in fp32)."""
    if "amx_bf16" in flags:
        return 1024, "AMX-BF16 tiles: 1024 bf16 FLOPs/cycle (Intel's figure)"
    if "avx512_bf16" in flags:
        return 2 * fp32_per_cycle, "x 2 for bf16 (AVX512-BF16 dot products: two bf16 products per fp32 lane)"
    return fp32_per_cycle, "no native bf16: the fp32 rate"


def _physical_cores(blocks: list[dict[str, str]]) -> int:
    """Distinct (physical id, core id) pairs among the logical CPUs this process may run on."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    seen = {
        (b.get("physical id", "0"), b.get("core id", b.get("processor", "0")))
        for b in blocks
        if allowed is None or int(b.get("processor", "-1")) in allowed
    }
    return max(1, len(seen))


def cpu_peak(cpuinfo: str | None = None, precision: str = "fp32") -> PeakEstimate | None:
    """Estimate this machine's peak at ``precision`` (fp32 or bf16) from ``/proc/cpuinfo`` (or the given text); None
    where unreadable."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    blocks = [
        dict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in block.splitlines()) if k.strip())
        for block in cpuinfo.strip().split("\n\n")
    ]
    blocks = [b for b in blocks if "processor" in b]
    if not blocks:
        return None
    first = blocks[0]
    flags = set(first.get("flags", "").split())
    model = first.get("model name", "")
    nominal = re.search(r"@\s*([\d.]+)\s*GHz", model)
    if nominal:
        ghz, clock = float(nominal.group(1)), f"nominal {nominal.group(1)} GHz from the model name"
    elif "cpu MHz" in first:
        ghz, clock = round(float(first["cpu MHz"]) / 1000, 3), f"{first['cpu MHz']} MHz from /proc/cpuinfo 'cpu MHz'"
    else:
        return None
    family = int(first.get("cpu family", "0") or 0)
    model_number = int(first["model"]) if first.get("model", "").isdigit() else -1
    vendor = first.get("vendor_id", "")
    per_cycle, vector = fp32_flops_per_cycle(flags, vendor, family, model_number)
    isa = vector_isa(flags)
    if isa == "AVX2" and _amd_zen1(vendor, family, model_number):  # told apart from AVX2 CPUs with 256-bit pipes
        isa = "AVX2/128-bit FMA"
    if precision == "bf16":
        per_cycle, bf16_how = bf16_flops_per_cycle(flags, per_cycle)
        vector = f"{vector}; {bf16_how}"
    cores = _physical_cores(blocks)
    how = f"{cores} physical cores x {ghz:g} GHz ({clock}) x {per_cycle} {precision} FLOPs/cycle ({vector}); an estimate"
    return PeakEstimate(cores, ghz, per_cycle, how, precision, isa)
