"""Evaluation speed of the adapting methods: episode by episode against several episodes at once, or against
worker processes.

MAML / first-order MAML / Reptile classify an episode by adapting to its support set. ``evaluate`` can do that
one episode at a time (``Method.classify``, ``episode_batch=1``, the CPU default) or adapt up to
``EPISODE_BATCH`` episodes under one ``torch.func.vmap`` (``FastWeightMethod.classify_tasks``, the CUDA
default). This script times both on the same seeded
episodes -- an untrained Conv-4 with each method's default test-time adaptation (MAML: 3 steps as Finn et al.;
Reptile: 50 Adam steps as Nichol et al.) on random 28x28 images of 100 classes (speed does not depend on the
pixels) -- and checks that the per-episode accuracies agree.

Writes ``benchmarks/results/adapt_eval_speed.json`` (or ``--out``) with the command, commit, machine, date
and load average: seconds per 100 evaluation episodes, before (one by one) and after (batched), each the
median of ``--repeats`` blocks of ``--episodes`` episodes, the two paths' blocks interleaved.

``--after workers`` compares instead one process using every thread (before) with ``--workers`` forked processes
sharing them (after; ``evaluate(workers=...)``, one thread each on two cores), written to
``benchmarks/results/adapt_eval_workers.json`` unless ``--out`` says otherwise.

    python benchmarks/adapt_eval_speed.py
    python benchmarks/adapt_eval_speed.py --after workers --methods reptile maml --shapes 5:1 5:5 20:1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["maml", "reptile"])
    p.add_argument("--shapes", nargs="+", default=["5:1", "20:1"], help="WAYS:SHOTS")
    p.add_argument("--queries", type=int, default=15)
    p.add_argument("--episodes", type=int, default=16, help="episodes per timed block")
    p.add_argument("--repeats", type=int, default=3, help="blocks per path, interleaved; the median is reported")
    p.add_argument("--after", choices=["batched", "workers"], default="batched", help="the path timed against one by one")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="--after workers: processes")
    p.add_argument("--out", default=None, help="default benchmarks/results/adapt_eval_speed.json (adapt_eval_workers.json)")
    args = p.parse_args()
    if args.out is None:
        args.out = str(
            ROOT / "benchmarks" / "results" / ("adapt_eval_workers.json" if args.after == "workers" else "adapt_eval_speed.json")
        )
    import torch

    from oneshot.data.imageset import ImageSet
    from oneshot.encoders import Conv4
    from oneshot.evaluation import EPISODE_BATCH, IMAGE_BATCH, evaluate
    from oneshot.methods import build_method
    from oneshot.provenance import provenance

    record = provenance()
    g = torch.Generator().manual_seed(0)
    data = ImageSet(
        torch.randint(0, 256, (100 * 20, 1, 28, 28), generator=g, dtype=torch.uint8),
        torch.arange(100).repeat_interleave(20),
        [str(i) for i in range(100)],
    )
    rows = []
    for name in args.methods:
        torch.manual_seed(0)
        method = build_method(name, Conv4()).eval()
        for shape in args.shapes:
            ways, shots = (int(v) for v in shape.split(":"))
            before, after, t_before, t_after = [], [], [], []
            after_options = {"workers": args.workers} if args.after == "workers" else {"episode_batch": EPISODE_BATCH}
            for r in range(args.repeats):  # interleaved, so a change in the machine's load hits both alike
                t = time.perf_counter()
                before += evaluate(method, data, ways, shots, args.queries, args.episodes, r, episode_batch=1).per_episode
                t_before.append(time.perf_counter() - t)
                t = time.perf_counter()
                after += evaluate(method, data, ways, shots, args.queries, args.episodes, r, **after_options).per_episode
                t_after.append(time.perf_counter() - t)
            per100 = lambda ts: 100 * statistics.median(ts) / args.episodes  # noqa: E731
            row = {
                "method": name,
                "ways": ways,
                "shots": shots,
                "queries": args.queries,
                "test_steps": method.test_steps,
                "episodes_per_block": args.episodes,
                "blocks": args.repeats,
                "after": args.after,
                **(
                    {"workers": args.workers, "threads_per_worker": max(1, torch.get_num_threads() // args.workers)}
                    if args.after == "workers"
                    else {"episodes_per_batch": max(1, min(EPISODE_BATCH, IMAGE_BATCH // (ways * shots)))}
                ),
                "seconds_per_100_episodes_before": per100(t_before),
                "seconds_per_100_episodes_after": per100(t_after),
                "speedup": statistics.median(t_before) / statistics.median(t_after),
                "block_seconds_before": t_before,
                "block_seconds_after": t_after,
                "accuracy_before": sum(before) / len(before),
                "accuracy_after": sum(after) / len(after),
                "same_per_episode_accuracies": before == after,
                "episodes_with_different_accuracy": sum(a != b for a, b in zip(before, after, strict=True)),
                "threads": torch.get_num_threads(),
            }
            rows.append(row)
            print(
                f"{name} {ways}-way {shots}-shot: {row['seconds_per_100_episodes_before']:.1f} s -> "
                f"{row['seconds_per_100_episodes_after']:.1f} s per 100 episodes ({row['speedup']:.2f}x, median of "
                f"{args.repeats} blocks of {args.episodes}); accuracies equal: {row['same_per_episode_accuracies']}",
                flush=True,
            )
    result = {**record, "load_average": os.getloadavg(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
