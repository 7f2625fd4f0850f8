"""FLOPs a training step performs and an estimate of the CPU's fp32 peak (``benchmarks/throughput.py``).

The FLOPs are counted, not derived by hand: :func:`count_flops` runs one real step under PyTorch's
``torch.utils.flop_counter.FlopCounterMode``, which adds ``2 x multiply-adds`` of every matrix product and
convolution, forward and backward (gradient of the input when it needs one, gradient of the weight). Batch norm,
pooling, ReLU and the optimiser's element-wise work are not counted (a few percent of a Conv-4 step).

The peak is an estimate, stated with its derivation (:class:`PeakEstimate`): physical cores x clock x fp32
FLOPs per cycle per core, the last from the widest vector FMA the CPU flags announce (``/proc/cpuinfo``) and
the usual number of FMA units of that family. Turbo, AVX-512 clock offsets and one-FMA-unit SKUs move the real
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
    """fp32 peak of the cores this process may use: ``cores * ghz * flops_per_cycle`` GFLOP/s.

    Attributes:
        cores: physical cores in this process's CPU affinity (SMT siblings share their core's FMA units).
        ghz: clock in GHz (the model name's nominal clock, else ``cpu MHz`` of /proc/cpuinfo).
        flops_per_cycle: fp32 FLOPs per cycle per core (FMA = 2 FLOPs x lanes x FMA units).
        how: one line saying where each factor came from.
    """

    cores: int
    ghz: float
    flops_per_cycle: int
    how: str

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
        }


def fp32_flops_per_cycle(flags: set[str], vendor: str, family: int) -> tuple[int, str]:
    """fp32 FLOPs per cycle per core from the CPU flags, and the reason.

    AVX-512 on Intel server cores: two 512-bit FMA units (16 lanes x 2 FLOPs x 2 = 64; some Xeon Bronze / Silver
    have one, 32). AVX-512 on AMD Zen 4 (family 25) runs on 256-bit data paths (32); Zen 5 (family 26) has full
    512-bit units (64). AVX2 + FMA: two 256-bit FMA units (32). AVX without FMA: one 256-bit multiply and one
    add port (16). SSE2: 8.
    """
    if "avx512f" in flags:
        if vendor == "AuthenticAMD" and family < 26:
            return 32, "AVX-512 on AMD Zen 4: 2 x 256-bit FMA pipes x 8 lanes x 2"
        return 64, "AVX-512F: assumed 2 x 512-bit FMA units x 16 lanes x 2 (one-unit SKUs: half)"
    if "avx2" in flags and "fma" in flags:
        return 32, "AVX2+FMA: 2 x 256-bit FMA units x 8 lanes x 2"
    if "avx" in flags:
        return 16, "AVX: 256-bit multiply + add ports x 8 lanes"
    return 8, "SSE2: 128-bit multiply + add ports x 4 lanes"


def _physical_cores(blocks: list[dict[str, str]]) -> int:
    """Distinct (physical id, core id) pairs among the logical CPUs this process may run on."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    seen = {
        (b.get("physical id", "0"), b.get("core id", b.get("processor", "0")))
        for b in blocks
        if allowed is None or int(b.get("processor", "-1")) in allowed
    }
    return max(1, len(seen))


def cpu_peak(cpuinfo: str | None = None) -> PeakEstimate | None:
    """Estimate this machine's fp32 peak from ``/proc/cpuinfo`` (or the given text); None where unreadable."""
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
    per_cycle, vector = fp32_flops_per_cycle(flags, first.get("vendor_id", ""), family)
    cores = _physical_cores(blocks)
    how = f"{cores} physical cores x {ghz:g} GHz ({clock}) x {per_cycle} fp32 FLOPs/cycle ({vector}); an estimate"
    return PeakEstimate(cores, ghz, per_cycle, how)
