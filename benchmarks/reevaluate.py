"""Re-evaluate a committed checkpoint on more test episodes and update its results file in place.

For a row whose checkpoint stays (nothing retrained) but whose test figures were read on fewer episodes than
the standard protocol: ``benchmarks/results/<name>.json`` keeps its training record (command, curve, budget)
and gets a new ``evaluation`` (the four standard shapes over ``--episodes`` seeded test episodes, seed 0,
15 queries, and Lake's 20 runs) plus a ``reevaluation`` entry with this command's provenance and wall time;
the earlier evaluation is kept under ``reevaluation.previous``.

Example (the MAML row on 1000 episodes per shape)::

    python benchmarks/reevaluate.py --name maml_conv4_vinyals --episodes 1000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from oneshot.experiment import STANDARD_SHAPES, evaluate_checkpoint
from oneshot.provenance import command_line, provenance

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="results file benchmarks/results/<name>.json")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    path = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    result = json.loads(path.read_text())
    checkpoint = ROOT / result.get("checkpoint", f"models/{args.name}.safetensors")
    t0 = time.perf_counter()
    ev = evaluate_checkpoint(
        checkpoint, STANDARD_SHAPES, episodes=args.episodes, seed=0, lake_runs=True, data_dir=args.data_dir
    ).to_dict()
    seconds = time.perf_counter() - t0
    for r in ev["results"]:
        print(f"{r['ways']}-way {r['shots']}-shot: {100 * r['accuracy']:.2f} +- {100 * r['ci95']:.2f}")
    print(f"Lake's 20 runs: {100 * ev['lake_runs']['accuracy']:.2f} ({seconds:.0f}s)")
    ev["checkpoint"] = str(checkpoint.relative_to(ROOT))
    previous = result.get("evaluation")
    result["evaluation"] = ev
    result["reevaluation"] = {**provenance(command_line()), "seconds": seconds, "previous": previous}
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
