"""Choose an adapting method's test-time adaptation steps per episode shape on validation, never on test.

Scores a methods-table row's checkpoint (``benchmarks/results/<name>.json`` names it) on the validation part of
its split -- the four standard shapes, ``--episodes`` seeded episodes each -- once per ``--values`` entry of the
method option ``test_steps``, and writes ``benchmarks/results/<name minus _conv4_vinyals>_test_steps_val.json``
(rows already there for other values are kept, so a sweep can be widened later). The rule, fixed before any
figure is read: per shape, the value with the highest validation accuracy; values within ``--tie`` points of
the best go to the fewest steps (cheaper, and the shorter adaptation). The last line printed is
``chosen: 5x1=N 5x5=N 20x1=N 20x5=N``, which ``benchmarks/reevaluate.py --shapes WxS --option test_steps=N``
then scores on test.

Example (first-order MAML, on a GPU)::

    python benchmarks/test_steps_val.py --name fomaml_conv4_vinyals --values 8 12 16 --device cuda
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from oneshot.experiment import STANDARD_SHAPES, evaluate_checkpoint
from oneshot.provenance import command_line, provenance
from oneshot.runtime import select_device, strict_fp32

ROOT = Path(__file__).resolve().parent.parent


def shape_key(ways: int, shots: int) -> str:
    return f"{ways}w{shots}s"


def choose(rows: list[dict], tie: float) -> dict[str, int]:
    """Per shape, the fewest ``test_steps`` whose validation accuracy is within ``tie`` (a fraction) of the best."""
    chosen = {}
    for ways, shots in STANDARD_SHAPES:
        scored = [
            (r["test_steps"], x["accuracy"]) for r in rows for x in r["results"] if (x["ways"], x["shots"]) == (ways, shots)
        ]
        if scored:
            best = max(a for _, a in scored)
            chosen[shape_key(ways, shots)] = min(v for v, a in scored if a >= best - tie)
    return chosen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="results file benchmarks/results/<name>.json (its checkpoint)")
    p.add_argument("--values", type=int, nargs="+", required=True, help="test_steps values to score")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--tie", type=float, default=0.1, help="points of accuracy within which the fewer steps win")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (on CUDA, TF32 is switched off: true fp32)")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    device = select_device(args.device)
    strict_fp32(device)  # on CUDA, TF32 off: fp32 as on a CPU
    row = json.loads((ROOT / "benchmarks" / "results" / f"{args.name}.json").read_text())
    checkpoint = row.get("checkpoint", f"models/{args.name}.safetensors")
    stem = args.name.removesuffix("_conv4_vinyals")
    out = ROOT / "benchmarks" / "results" / f"{stem}_test_steps_val.json"
    doc = (
        json.loads(out.read_text())
        if out.is_file()
        else {"benchmark": f"{stem}_test_steps_val", "checkpoint": checkpoint, "rows": []}
    )
    command = command_line()
    for value in args.values:
        t0 = time.perf_counter()
        ev = evaluate_checkpoint(
            ROOT / checkpoint,
            STANDARD_SHAPES,
            episodes=args.episodes,
            part="val",
            seed=0,
            data_dir=args.data_dir,
            device=str(device),
            method_options={"test_steps": value},
        ).to_dict()
        results = [{k: x[k] for k in ("ways", "shots", "accuracy", "ci95", "episodes")} for x in ev["results"]]
        doc["rows"] = sorted(
            [r for r in doc["rows"] if r["test_steps"] != value]
            + [
                {
                    "test_steps": value,
                    "command": command,
                    "device": str(device),
                    "seconds": time.perf_counter() - t0,
                    "results": results,
                }
            ],
            key=lambda r: r["test_steps"],
        )
        print(f"test_steps={value}: " + " / ".join(f"{100 * x['accuracy']:.2f}" for x in results), flush=True)
        doc["split"] = f"{ev['split']} val, {args.episodes} episodes per shape, seed 0, 15 queries"
        doc["rule"] = f"per shape the highest validation accuracy; within {args.tie:g} points, the fewest steps"
        doc["best_per_shape"] = choose(doc["rows"], args.tie / 100)
        doc.update(provenance(command))
        out.write_text(json.dumps(doc, indent=1) + "\n")
    chosen = doc["best_per_shape"]
    print("chosen: " + " ".join(f"{w}x{s}={chosen[shape_key(w, s)]}" for w, s in STANDARD_SHAPES if shape_key(w, s) in chosen))


if __name__ == "__main__":
    main()
