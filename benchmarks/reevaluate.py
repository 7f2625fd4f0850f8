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

``--block N`` scores each shape N episodes at a time and keeps the per-episode accuracies so far in
``benchmarks/partial/<name>-<WAYS>x<SHOTS>.json`` (committed: a machine may not outlive the session); an invocation
stopped or killed mid-shape loses at most one block, and the same command run again -- on this machine or another --
continues from the next episode (episode ``e`` is drawn from ``(seed, e)`` alone, so the blocks together are exactly
the episodes of one run). The partial file is bound to the checkpoint's SHA-256, the options, the episode count and
the seed; another setting refuses to continue it. When the last block is in, the shape's entry is written from all
its episodes (with every block's provenance) and the partial file is removed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from oneshot.checkpoint import read_metadata
from oneshot.cli_common import episode_shape, option_argument
from oneshot.evaluation import mean_ci95
from oneshot.experiment import STANDARD_SHAPES, evaluate_checkpoint
from oneshot.provenance import command_line, provenance
from oneshot.runtime import select_device, strict_fp32

ROOT = Path(__file__).resolve().parent.parent


def partial_path(name: str, shape: tuple[int, int]) -> Path:
    """Where a shape scored in blocks keeps its per-episode accuracies until the last block is in."""
    return ROOT / "benchmarks" / "partial" / f"{name}-{shape[0]}x{shape[1]}.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_atomically(path: Path, doc: dict) -> None:
    """Write JSON through a temporary file and a rename: a killed process leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def score_in_blocks(
    name: str, checkpoint: Path, shape: tuple[int, int], episodes: int, block: int, options: dict, score: Any
) -> tuple[dict, float]:
    """One shape's entry scored ``block`` episodes at a time, resumable through its partial file (module doc).

    ``score(start, stop)`` evaluates episodes ``start .. stop - 1`` and returns (entry dict, per-episode list).
    Returns the entry over all ``episodes`` and this invocation's seconds."""
    ways, shots = shape
    path = partial_path(name, shape)
    key = {
        "checkpoint": str(checkpoint.relative_to(ROOT)),
        "sha256": _sha256(checkpoint),
        "options": options,
        "episodes": episodes,
        "seed": 0,
    }
    doc: dict = {"key": key, "per_episode": [], "blocks": []}
    if path.exists():
        doc = json.loads(path.read_text())
        if doc["key"] != key:
            raise SystemExit(
                f"{path} holds a partial scoring with other settings ({doc['key']}, this run: {key}): "
                "run it with those, or delete the file to start this one over"
            )
        print(f"{ways}-way {shots}-shot: continuing from episode {len(doc['per_episode'])} ({path.name})", flush=True)
    seconds = 0.0
    entry: dict = {}
    while (start := len(doc["per_episode"])) < episodes:
        stop = min(start + block, episodes)
        t0 = time.perf_counter()
        entry, accs = score(start, stop)
        spent = time.perf_counter() - t0
        seconds += spent
        doc["per_episode"] += accs
        doc["blocks"].append({**provenance(command_line()), "episodes": [start, stop], "seconds": spent})
        _write_atomically(path, doc)
        print(f"{ways}-way {shots}-shot: episodes {start}-{stop - 1} scored ({spent:.0f}s)", flush=True)
    if not entry:  # every block was already in: the entry's fields from a one-episode score
        entry, _ = score(episodes - 1, episodes)
    mean, ci = mean_ci95(doc["per_episode"])
    entry.update(accuracy=mean, ci95=ci, episodes=episodes, blocks=doc["blocks"])
    return entry, seconds


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
    p.add_argument(
        "--block",
        type=int,
        default=0,
        help="score each shape this many episodes at a time, resumable across invocations (0: all at once)",
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

        def run(shapes: list, lake_runs: bool, start: int = 0, stop: int = args.episodes) -> Any:
            return evaluate_checkpoint(
                checkpoint,
                shapes,
                episodes=stop,
                seed=0,
                lake_runs=lake_runs,
                data_dir=args.data_dir,
                device=str(device),
                method_options=options or None,
                workers=args.workers,
                start=start,
            )

        if shape and args.block > 0:
            header: dict = {}

            def score(start: int, stop: int, shape: tuple[int, int] = shape) -> tuple[dict, list[float]]:
                res = run([shape], False, start, stop)
                header.update(res.to_dict())  # noqa: B023 -- called within this iteration
                return header["results"][0], res.results[0].per_episode  # noqa: B023

            entry, _ = score_in_blocks(args.name, checkpoint, shape, args.episodes, args.block, options, score)
            part = {**header, "results": [entry]}
            if lake:
                part["lake_runs"] = run([], True).to_dict()["lake_runs"]
        else:
            part = run([shape] if shape else [], lake).to_dict()
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
        result = json.loads(path.read_text())  # the file as it is now: keep what others wrote meanwhile
        result["evaluation"] = ev
        result["reevaluation"] = reev
        _write_atomically(path, result)
        if shape and args.block > 0:
            partial_path(args.name, shape).unlink(missing_ok=True)
    print(f"wrote {path} ({reev['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
