"""Re-evaluate a committed checkpoint on more test episodes and update its results file in place.

For a row whose checkpoint stays (nothing retrained) but whose test figures were read on fewer episodes than
the standard protocol: ``benchmarks/results/<name>.json`` keeps its training record (command, curve, budget)
and gets a new ``evaluation`` (the four standard shapes over ``--episodes`` seeded test episodes, seed 0,
15 queries, and Lake's 20 runs) plus a ``reevaluation`` entry with this command's provenance and wall time;
the earlier evaluation is kept under ``reevaluation.previous``.

Example (the MAML row on 1000 episodes per shape)::

    python benchmarks/reevaluate.py --name maml_conv4_vinyals --episodes 1000

``--shapes`` scores only the named shapes (``5x1 20x5``), ``--no-lake`` skips Lake's runs and ``--lake-only`` scores
Lake's runs alone (20-way 1-shot: with the 20-way 1-shot shape's ``--option`` setting); each shape is
written to the file as soon as it is scored (replacing that shape's entry), so a slow row (Reptile adapts
every episode for 20 steps) can be re-scored one shape per invocation and an interrupted run keeps what it
finished.

``--device cuda`` scores on a GPU (episodes adapted in batches there; TF32 off, so fp32 as on a CPU); each shape's
entry records the device and commit it was scored with, and a partial re-score keeps the earlier invocations'
provenance under ``reevaluation.earlier``.

``--option KEY=VALUE`` (repeat) overrides a method option for the shapes of this invocation, e.g. an adaptation
setting chosen per shape on validation (Reptile's ``test_batch``: Nichol et al. adapt on mini-batches of 5 support
images at 5 ways, 10 at 20 ways); each shape's entry records the overrides it was scored with (``options``).

``--checkpoint PATH`` scores the named shapes with another checkpoint of the row's method -- a model trained for
those shapes, as Nichol et al. train one per number of ways -- instead of the row's; each shape's entry (and Lake's
runs, if scored) records it as ``checkpoint``, and the README's table names it beside the row.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from oneshot.checkpoint import read_metadata
from oneshot.cli_common import episode_shape, option_argument
from oneshot.experiment import STANDARD_SHAPES, evaluate_checkpoint
from oneshot.provenance import command_line, provenance
from oneshot.runtime import select_device, strict_fp32

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="results file benchmarks/results/<name>.json")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--data-dir", default=None)
    p.add_argument(
        "--shapes", nargs="+", type=episode_shape, default=None, help="WAYSxSHOTS, e.g. 5x1 20x5 (default: the four standard)"
    )
    p.add_argument("--no-lake", action="store_true", help="skip Lake's 20 runs (keep the recorded ones)")
    p.add_argument("--lake-only", action="store_true", help="score Lake's 20 runs alone (keep every shape's entry)")
    p.add_argument(
        "--option", type=option_argument, action="append", default=[], help="method option KEY=VALUE for these shapes (repeat)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (on CUDA, TF32 is switched off: true fp32)")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="score --shapes with this checkpoint of the row's method instead of the row's (recorded per shape)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="CPU processes scoring an adapting method's episodes side by side (each shape records it)",
    )
    args = p.parse_args()
    device = select_device(args.device)
    strict_fp32(device)  # on CUDA, TF32 off: fp32 as on a CPU
    options = dict(args.option)
    if args.lake_only and (args.shapes or args.no_lake):
        p.error("--lake-only scores Lake's runs alone: drop --shapes and --no-lake")
    shapes = args.shapes or STANDARD_SHAPES
    path = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    result = json.loads(path.read_text())
    row_checkpoint = ROOT / result.get("checkpoint", f"models/{args.name}.safetensors")
    checkpoint = Path(args.checkpoint).resolve() if args.checkpoint else row_checkpoint
    if args.checkpoint:
        if not (args.shapes or args.lake_only):
            p.error("--checkpoint scores some shapes with another model: name them with --shapes (or use --lake-only)")
        if not checkpoint.is_relative_to(ROOT):
            p.error(f"--checkpoint {args.checkpoint}: a row's checkpoints are committed in this repository ({ROOT})")
        other = read_metadata(checkpoint).get("method")
        if other != result["method"]:
            p.error(f"--checkpoint {args.checkpoint} is a {other} checkpoint; the row {args.name} is {result['method']}")
    previous = result.get("evaluation")
    # a partial re-score (some shapes, or Lake's runs alone) keeps the entries it does not redo and their provenance
    partial = bool(args.shapes or args.lake_only)
    ev: dict = json.loads(json.dumps(previous)) if previous and partial else {}
    reev = {**provenance(command_line()), "seconds": 0.0, "device": str(device), "previous": previous}
    before = result.get("reevaluation")
    if before and partial:
        earlier = [before, *before.get("earlier", [])]
        reev["earlier"] = [{k: v for k, v in e.items() if k not in ("previous", "earlier")} for e in earlier]
    if args.lake_only:  # one pass with no episode shapes: Lake's runs, written beside the kept shapes
        shapes = [None]
    for i, shape in enumerate(shapes):
        lake = args.lake_only or (not args.no_lake and i == len(shapes) - 1)
        t0 = time.perf_counter()
        part = evaluate_checkpoint(
            checkpoint,
            [shape] if shape else [],
            episodes=args.episodes,
            seed=0,
            lake_runs=lake,
            data_dir=args.data_dir,
            device=str(device),
            method_options=options or None,
            workers=args.workers,
        ).to_dict()
        for r in part["results"]:
            r["options"] = options
            r["device"] = str(device)
            if args.checkpoint:
                r["checkpoint"] = str(checkpoint.relative_to(ROOT))
            if args.workers > 1:
                r["workers"] = args.workers
            r["commit"] = reev["commit"]
        if lake and options:
            part["lake_runs"]["options"] = options
        if lake and args.checkpoint:
            part["lake_runs"]["checkpoint"] = str(checkpoint.relative_to(ROOT))
        reev["seconds"] += time.perf_counter() - t0
        if not ev:
            ev = {**part, "results": []}
        kept = [r for r in ev["results"] if (r["ways"], r["shots"]) != shape]
        ev["results"] = sorted(
            kept + part["results"],
            key=lambda r: STANDARD_SHAPES.index((r["ways"], r["shots"])) if (r["ways"], r["shots"]) in STANDARD_SHAPES else 99,
        )
        if lake:
            ev["lake_runs"] = part["lake_runs"]
        for r in part["results"]:
            print(
                f"{r['ways']}-way {r['shots']}-shot: {100 * r['accuracy']:.2f} +- {100 * r['ci95']:.2f} "
                f"({r['episodes']} episodes)",
                flush=True,
            )
        if lake:
            print(f"Lake's 20 runs: {100 * ev['lake_runs']['accuracy']:.2f}", flush=True)
        ev["checkpoint"] = str(row_checkpoint.relative_to(ROOT))
        result["evaluation"] = ev
        result["reevaluation"] = reev
        path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path} ({reev['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
