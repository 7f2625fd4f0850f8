"""The training-throughput benchmark (issue 17) runs end to end on real Omniglot at a small scale, writes its
results file, and the README's table renders CPU and GPU rows from such files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import requires_omniglot

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


@requires_omniglot
def test_throughput_writes_every_loop_and_refuses_too_few_episodes(tmp_path, omniglot_dir):
    out = tmp_path / "throughput.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--data-dir", str(omniglot_dir)]
    res = subprocess.run(
        [*cmd, "--ways", "10", "--episodes", "5", "--repeats", "1", "--out", str(out)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["episode_shape"] == {"ways": 10, "shots": 1, "queries": 5, "images": 60, "size": 28}
    assert r["warmup_steps"] == 3 and r["images_per_second"] > 0 and r["images_per_second_with_warmup"] > 0
    assert r["ratio_to_raw"] == pytest.approx(r["images_per_second"] / r["raw_images_per_second"])
    assert r["device"] == "cpu" and r["device_name"] is None and "commit" in r and "throughput.py" in r["command"]
    assert r["flops_per_image"] > 0 and r["speedup_over_easyfsl"] is None  # easyfsl not given: not measured
    bad = subprocess.run([*cmd, "--episodes", "3"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--episodes must exceed the 3 untimed warm-up steps" in bad.stderr
    gpu = subprocess.run(
        [*cmd, "--episodes", "5", "--compile", "cuda-graphs", "--out", str(tmp_path / "g.json")], capture_output=True, text=True
    )
    assert gpu.returncode != 0 and "cuda-graphs needs a CUDA GPU" in gpu.stderr and not (tmp_path / "g.json").exists()


def test_throughput_table_has_one_row_per_cpu_or_gpu():
    import make_tables

    cpu = {
        "machine": {"cpu": "Some CPU", "cpu_count": 2},
        "device": "cpu",
        "precision": "bf16",
        "compile": None,
        "date": "2026-11-27T00:00:00",
    }
    gpu = {
        **cpu,
        "machine": {"cpu": "Some CPU", "cpu_count": 16, "gpu": "NVIDIA H200"},
        "device": "cuda",
        "device_name": "NVIDIA H200",
        "compile": "reduce-overhead",
        "precision": "fp32",
    }
    assert make_tables._throughput_machine(cpu) == "Some CPU" and make_tables._cores(cpu) == "2"
    assert make_tables._throughput_machine(gpu) == "NVIDIA H200" and make_tables._cores(gpu) == "1 GPU"
    assert make_tables._loop_settings(gpu) == "fp32, CUDA graphs" and make_tables._loop_settings(cpu) == "bf16"
    old = {"fp32_peak": {"gflops": 100.0}, "fraction_of_fp32_peak": {"oneshot": 0.5}}  # files before GPU rows
    assert make_tables._peak(old) == ({"gflops": 100.0}, 0.5)
    avx2 = {**cpu, "cpu_isa": "AVX2"}
    zen4 = {**cpu, "peak": {"how": "2 physical cores x 2.6 GHz x 32 fp32 FLOPs/cycle (AVX-512 on AMD Zen 4: ...)"}}
    assert make_tables._throughput_machine(avx2) == "Some CPU (AVX2)"  # recorded
    assert make_tables._throughput_machine(zen4) == "Some CPU (AVX-512)"  # read off an older file's peak


def test_one_cpu_model_name_gives_a_row_per_instruction_set(tmp_path, monkeypatch):
    """Two CPUs sold under one name (a VM's "AMD EPYC") with other vector units are two rows; a file that records
    neither gives way to a newer run of that name."""
    import make_tables

    base = {"machine": {"cpu": "AMD EPYC", "cpu_count": 2}, "device": "cpu", "precision": "fp32", "compile": None}
    files = {
        "throughput_protonet.json": {**base, "date": "2026-11-24"},
        "throughput_protonet_amd-epyc.json": {**base, "date": "2026-11-27", "peak": {"how": "x 32 (AVX-512 on AMD Zen 4)"}},
        "throughput_protonet_amd-epyc-avx2.json": {**base, "date": "2026-11-28", "cpu_isa": "AVX2"},
    }
    for name, r in files.items():
        (tmp_path / name).write_text(json.dumps(r))
    monkeypatch.setattr(make_tables, "RESULTS", tmp_path)
    rows = [make_tables._throughput_machine(r) for r in make_tables._throughput_results()]
    assert rows == ["AMD EPYC (AVX-512)", "AMD EPYC (AVX2)"]


def test_a_methods_row_names_the_test_options_of_its_shapes():
    """Shapes re-scored with an option chosen on validation (reevaluate.py --option) say so in the row's label."""
    import make_tables

    results = [
        {"ways": 5, "shots": 1, "options": {"test_batch": 5}},
        {"ways": 5, "shots": 5, "options": {"test_batch": 5}},
        {"ways": 20, "shots": 1, "options": {"test_batch": 10}},
        {"ways": 20, "shots": 5},
    ]
    assert make_tables._test_options(results) == " (scored with test_batch=5 at 5w1s, 5w5s; test_batch=10 at 20w1s)"
    assert make_tables._test_options([{"ways": 5, "shots": 1}]) == ""


def test_methods_table_gap_is_taken_from_the_printed_figure():
    """A shape printed at the published figure reads +0.00, never -0.00 (99.1999% prints as 99.20)."""
    import make_tables

    acc = {(5, 1): {"accuracy": 0.98461}, (5, 5): {"accuracy": 0.991999}, (20, 5): {"accuracy": 0.97}}
    assert make_tables.published_gap("fomaml", acc) == "+0.16 / +0.00 / - / -0.90"
    assert make_tables.published_gap("triplet", acc) == "-"


def test_a_row_whose_last_stage_ran_on_a_gpu_names_it_beside_its_speed():
    import make_tables

    cpu = {"images_per_second": 458.4, "stages": [{"device": "cpu"}]}
    gpu = {"images_per_second": 24204.2, "stages": [{"device": "cpu"}, {"device": "cuda", "gpu": "NVIDIA H200"}]}
    assert make_tables._images_per_second(cpu) == "458"
    assert make_tables._images_per_second({"images_per_second": 963.0}) == "963"
    assert make_tables._images_per_second(gpu) == "24204 (NVIDIA H200)"
