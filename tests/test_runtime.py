"""Runtime choices: precision resolution and the CPU allocator tuning (each tuning check in a fresh process)."""

import os
import platform
import subprocess
import sys

import pytest
import torch

from oneshot.errors import OneshotError
from oneshot.runtime import resolve_precision

PROBE = """
import json, torch
from oneshot.encoders import Conv4
from oneshot.runtime import tune_cpu_allocator
tuned = tune_cpu_allocator()
again = tune_cpu_allocator()
torch.manual_seed(0)
m = Conv4()
opt = torch.optim.SGD(m.parameters(), lr=0.1)
x = torch.rand(64, 1, 28, 28)
for _ in range(3):
    opt.zero_grad()
    m(x).pow(2).mean().backward()
    opt.step()
print(json.dumps({"tuned": tuned, "again": again, "checksum": float(sum(p.double().sum() for p in m.parameters()))}))
"""


def _probe(**env: str) -> dict:
    import json

    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env={**os.environ, **env}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_resolve_precision():
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) in ("fp32", "bf16")
    with pytest.raises(OneshotError, match="unknown precision"):
        resolve_precision("fp8", torch.device("cpu"))


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"), reason="glibc only")
def test_allocator_tuning_switches_on_can_be_refused_and_changes_no_result():
    tuned = _probe()
    untouched = _probe(ONESHOT_MALLOC_TUNING="0")
    assert tuned["tuned"] is True and tuned["again"] is True
    assert untouched["tuned"] is False and untouched["again"] is False
    # Only where memory comes from changes: the same seeded training steps give the same weights.
    assert tuned["checksum"] == untouched["checksum"]
