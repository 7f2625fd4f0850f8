"""Cost of one meta-step: MAML (second order) against first-order MAML, at 5 and 20 ways, with the meta-batch's
tasks adapted one after another (``task_batch=loop``) and all at once (``task_batch=vmap``, ``torch.func.vmap``
over tasks).

Each configuration runs in its own subprocess (so peak memory is that configuration's alone): a Conv-4 MAML
with the zero head on random 28x28 inputs, Finn et al.'s Omniglot settings (5-way: 1 inner step, meta-batch 32;
20-way: 5 inner steps, meta-batch 16; 1 shot, 1 query per class as in the paper -- change with --queries),
``--warmup`` untimed meta-steps then ``--steps`` timed ones (forward, inner adaptation, backward, Adam step).
Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the process's peak resident set
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``); the rise over the peak before the first meta-step is what
the meta-steps (activations, graph, Adam state) added on top of Python, torch, the model and its inputs.

Writes ``benchmarks/results/meta_step_cost.json`` (or ``--out``) with the command, commit, machine, date and the
load average before and after (on a shared machine only the ratios within one run compare). Rows: one per
method, ways and task batching (``task_batch``; rows without it, from before it existed, are the loop).

    python benchmarks/meta_memory.py                 # CPU, or CUDA when present
    python benchmarks/meta_memory.py --threads 1     # one CPU thread (a shared machine: no waiting on a busy core)
    python benchmarks/meta_memory.py --device cuda --out benchmarks/results/meta_step_cost_cuda.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Finn et al. (2017), Omniglot: inner steps and meta-batch per number of ways.
FINN = {5: {"inner_steps": 1, "inner_lr": 0.4, "meta_batch": 32}, 20: {"inner_steps": 5, "inner_lr": 0.1, "meta_batch": 16}}


def one(method: str, ways: int, task_batch: str, queries: int, steps: int, warmup: int, device: str, threads: int) -> dict:
    """Measure one configuration in this process; returns its row."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from oneshot.encoders import Conv4
    from oneshot.methods import Episode, build_method

    dev = torch.device(device)
    torch.manual_seed(0)
    opts = FINN[ways]
    model = build_method(method, Conv4(), task_batch=task_batch, **opts).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t = opts["meta_batch"]
    xs = torch.rand(t * ways, 1, 28, 28, device=dev)
    xq = torch.rand(t * ways * queries, 1, 28, 28, device=dev)
    ys = torch.arange(ways, device=dev).repeat(t)
    yq = torch.arange(ways, device=dev).repeat_interleave(queries).repeat(t)
    episode = Episode(xs, ys, xq, yq, ways, 1, tasks=t)

    def step() -> None:
        loss, _ = model.loss(episode)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        extra = peak - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        extra = peak - base
    return {
        "method": method,
        "ways": ways,
        "task_batch": task_batch,
        "shots": 1,
        "queries": queries,
        **opts,
        "seconds_per_meta_step": sum(times) / len(times),
        "min_seconds": min(times),
        "steps_timed": steps,
        "peak_memory_bytes": peak,
        "meta_step_memory_bytes": extra,
        "memory_measure": "torch.cuda.max_memory_allocated (peak) and its rise over the allocated memory before the first meta-step"
        if cuda
        else "ru_maxrss of the process (peak) and its rise over ru_maxrss before the first meta-step",
        "device": str(dev),
        "threads": torch.get_num_threads(),
    }


def ratios(rows: list[dict]) -> list[str]:
    """MAML / FOMAML per ways and task batching, and vmap / loop per method and ways (time and peak memory)."""
    by = {(r["method"], r["ways"], r.get("task_batch", "loop")): r for r in rows}
    out = []
    for (method, ways, batch), r in by.items():
        pairs = [("MAML / FOMAML", by.get(("fomaml", ways, batch)))] if method == "maml" else []
        pairs += [("vmap / loop", by.get((method, ways, "loop")))] if batch == "vmap" else []
        for what, ref in pairs:
            if ref is not None:
                t = r["seconds_per_meta_step"] / ref["seconds_per_meta_step"]
                m = r["peak_memory_bytes"] / ref["peak_memory_bytes"]
                out.append(
                    f"{ways}-way {method if what.startswith('vmap') else batch}: {what} time {t:.2f}x, peak memory {m:.2f}x"
                )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--ways", type=int, nargs="+", default=[5, 20])
    p.add_argument("--methods", nargs="+", default=["maml", "fomaml"])
    p.add_argument("--task-batch", nargs="+", default=["loop", "vmap"], choices=["loop", "vmap"])
    p.add_argument("--queries", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "meta_step_cost.json"))
    p.add_argument("--commit", default=None, help="commit to record when the tree has no .git (a copy on another machine)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # METHOD:WAYS:TASK_BATCH, run in a subprocess
    args = p.parse_args()
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.one:
        method, ways, task_batch = args.one.split(":")
        print(json.dumps(one(method, int(ways), task_batch, args.queries, args.steps, args.warmup, device, args.threads)))
        return
    from oneshot.provenance import provenance

    record = provenance()
    if args.commit:
        record["commit"] = args.commit
    rows = []
    load_before = os.getloadavg()
    for ways, method, task_batch in [(w, m, b) for w in args.ways for m in args.methods for b in args.task_batch]:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            f"{method}:{ways}:{task_batch}",
            "--device",
            device,
            "--queries",
            str(args.queries),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--threads",
            str(args.threads),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if out.returncode != 0:
            raise SystemExit(f"{method} {ways}-way {task_batch} failed:\n{out.stderr[-2000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{method:7s} {ways:2d}-way {task_batch:4s}: {row['seconds_per_meta_step']:.3f} s/meta-step, peak {row['peak_memory_bytes'] / 2**20:.0f} MiB "
            f"(+{row['meta_step_memory_bytes'] / 2**20:.0f} MiB)",
            flush=True,
        )
    for line in ratios(rows):
        print(line)
    result = {
        **record,
        "load_average_before": load_before,
        "load_average": os.getloadavg(),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
