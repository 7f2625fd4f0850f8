"""Choose an adapting method's test-time adaptation steps per episode shape on validation, never on test.

Scores a methods-table row's checkpoint (``benchmarks/results/<name>.json`` names it) on the validation part of
its split -- the four standard shapes, ``--episodes`` seeded episodes each -- once per ``--values`` entry of the
method option ``test_steps``, and writes ``benchmarks/results/<name minus _conv4_vinyals>_test_steps_val.json``
(rows already there for other values are kept, so a sweep can be widened later). The rule, fixed before any
figure is read: per shape, the value with the highest validation accuracy; values within ``--tie`` points of
the best go to the fewest steps (cheaper, and the shorter adaptation). The last line printed is
``chosen: 5x1=N 5x5=N 20x1=N 20x5=N``, which ``benchmarks/reevaluate.py --shapes WxS --option test_steps=N``
then scores on test.

``--option KEY=VALUE`` (repeat) scores the values with another method option fixed for this invocation, e.g. a
smaller adaptation step size (``inner_lr``) at 20 ways; such rows record their ``options`` and are told apart from
the rows without. Within the tie the fewest steps win, then the training's own options (no override), then the
option text in sort order; a chosen setting with options prints as ``20x1=test_steps=4,inner_lr=0.1``.
``--shapes 20x1 20x5`` scores only those shapes. The file records the weights it scored (the checkpoint's
``tensors_sha256``) and refuses rows from other weights -- a row whose checkpoint was replaced since -- so two
models' choices never mix; ``--out`` names another file.

Example (first-order MAML, on a GPU)::

    python benchmarks/test_steps_val.py --name fomaml_conv4_vinyals --values 8 12 16 --device cuda
    python benchmarks/test_steps_val.py --name maml_conv4_vinyals --values 2 4 8 --option inner_lr=0.1 --shapes 20x1 20x5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from oneshot.checkpoint import read_metadata
from oneshot.cli_common import episode_shape, option_argument
from oneshot.errors import OneshotError
from oneshot.experiment import STANDARD_SHAPES, evaluate_checkpoint
from oneshot.provenance import command_line, provenance
from oneshot.runtime import select_device, strict_fp32

ROOT = Path(__file__).resolve().parent.parent


def shape_key(ways: int, shots: int) -> str:
    return f"{ways}w{shots}s"


def setting(row: dict) -> int | dict:
    """A row's test-time setting: its ``test_steps`` alone, or ``{"test_steps": N, **options}`` with options."""
    options = row.get("options") or {}
    return {"test_steps": row["test_steps"], **options} if options else row["test_steps"]


def _order(row: dict) -> tuple[int, int, str]:
    """Cheaper first: fewer steps, then the training's own options, then the options' text."""
    options = row.get("options") or {}
    return (row["test_steps"], 1 if options else 0, json.dumps(options, sort_keys=True))


def choose(rows: list[dict], tie: float) -> dict[str, int | dict]:
    """Per shape, the cheapest setting (see ``_order``) whose validation accuracy is within ``tie`` (a fraction)
    of the best; shapes no row scored are left out."""
    chosen: dict[str, int | dict] = {}
    for ways, shots in STANDARD_SHAPES:
        scored = [(r, x["accuracy"]) for r in rows for x in r["results"] if (x["ways"], x["shots"]) == (ways, shots)]
        if scored:
            best = max(a for _, a in scored)
            chosen[shape_key(ways, shots)] = setting(min((r for r, a in scored if a >= best - tie), key=_order))
    return chosen


def _text(value: int | dict) -> str:
    return str(value) if isinstance(value, int) else ",".join(f"{k}={v}" for k, v in value.items())


def check_same_weights(doc: dict, weights: str, out: Path) -> None:
    """Refuse to add rows to a file scored on other weights (e.g. a row whose checkpoint was since replaced): their
    choices would mix two models. ``weights``: the checkpoint's ``tensors_sha256``."""
    recorded = doc.get("tensors_sha256")
    if recorded != weights:
        seen = f"weights {recorded[:12]}" if recorded else "weights it does not record"
        raise OneshotError(
            f"{out} holds rows scored on {seen}, not on this checkpoint's {weights[:12]}: "
            "pass --out NEW.json (or move the file aside) to score this checkpoint"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="results file benchmarks/results/<name>.json (its checkpoint)")
    p.add_argument("--values", type=int, nargs="+", required=True, help="test_steps values to score")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--tie", type=float, default=0.1, help="points of accuracy within which the fewer steps win")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (on CUDA, TF32 is switched off: true fp32)")
    p.add_argument("--data-dir", default=None)
    p.add_argument(
        "--option", type=option_argument, action="append", default=[], help="another method option KEY=VALUE, fixed (repeat)"
    )
    p.add_argument("--out", type=Path, default=None, help="results file (default: <stem>_test_steps_val.json)")
    p.add_argument(
        "--shapes", nargs="+", type=episode_shape, default=None, help="WAYSxSHOTS, e.g. 20x1 20x5 (default: the four standard)"
    )
    args = p.parse_args()
    options = dict(args.option)
    shapes = args.shapes or STANDARD_SHAPES
    device = select_device(args.device)
    strict_fp32(device)  # on CUDA, TF32 off: fp32 as on a CPU
    row = json.loads((ROOT / "benchmarks" / "results" / f"{args.name}.json").read_text())
    checkpoint = row.get("checkpoint", f"models/{args.name}.safetensors")
    stem = args.name.removesuffix("_conv4_vinyals")
    out = args.out or ROOT / "benchmarks" / "results" / f"{stem}_test_steps_val.json"
    weights = read_metadata(ROOT / checkpoint)["tensors_sha256"]
    doc = (
        json.loads(out.read_text())
        if out.is_file()
        else {"benchmark": f"{stem}_test_steps_val", "checkpoint": checkpoint, "tensors_sha256": weights, "rows": []}
    )
    try:
        check_same_weights(doc, weights, out)
    except OneshotError as exc:
        p.error(str(exc))
    command = command_line()
    for value in args.values:
        t0 = time.perf_counter()
        ev = evaluate_checkpoint(
            ROOT / checkpoint,
            shapes,
            episodes=args.episodes,
            part="val",
            seed=0,
            data_dir=args.data_dir,
            device=str(device),
            method_options={**options, "test_steps": value},
        ).to_dict()
        results = [{k: x[k] for k in ("ways", "shots", "accuracy", "ci95", "episodes")} for x in ev["results"]]
        row = {"test_steps": value, **({"options": options} if options else {})}
        same = [r for r in doc["rows"] if setting(r) == setting(row)]
        kept = [x for r in same for x in r["results"] if (x["ways"], x["shots"]) not in shapes]  # other shapes' scores
        row.update(command=command, device=str(device), seconds=time.perf_counter() - t0, results=kept + results)
        row["results"].sort(key=lambda x: (x["ways"], x["shots"]))
        doc["rows"] = sorted([r for r in doc["rows"] if setting(r) != setting(row)] + [row], key=_order)
        print(
            f"{_text(setting(row))}: " + " / ".join(f"{x['ways']}w{x['shots']}s {100 * x['accuracy']:.2f}" for x in results),
            flush=True,
        )
        doc["split"] = f"{ev['split']} val, {args.episodes} episodes per shape, seed 0, 15 queries"
        doc["rule"] = (
            f"per shape the highest validation accuracy; within {args.tie:g} points, the fewest steps, then the "
            "training's own options, then the options' text"
        )
        doc["best_per_shape"] = choose(doc["rows"], args.tie / 100)
        doc.update(provenance(command))
        out.write_text(json.dumps(doc, indent=1) + "\n")
    chosen = doc["best_per_shape"]
    print(
        "chosen: "
        + " ".join(f"{w}x{s}={_text(chosen[shape_key(w, s)])}" for w, s in STANDARD_SHAPES if shape_key(w, s) in chosen)
    )


if __name__ == "__main__":
    main()
