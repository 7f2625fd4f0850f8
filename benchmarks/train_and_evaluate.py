"""Train a method on Omniglot, evaluate it under the standard protocol, and record the result.

Writes ``benchmarks/results/<name>.json`` (accuracy and 95% CI for 5/20-way x 1/5-shot over 1000 test
episodes, Lake's 20 official runs, training wall time and throughput, device, command, commit, date)
and copies the best checkpoint (selected on the validation split) to ``models/<name>.safetensors`` (or over the
shipped file in ``src/oneshot/weights/`` when the package ships one of that name).

Example (the committed ProtoNet)::

    python benchmarks/train_and_evaluate.py --name protonet_conv4_vinyals --method protonet \
        --episodes 10000 --lr-step 2000 --max-minutes 42

Method options go with ``--option KEY=VALUE`` (repeat); ``--verification`` adds AUC / EER / TAR at FAR
1e-2 and 1e-3 on seeded same/different test pairs; ``--variant KEY=VALUE`` also evaluates the same
checkpoint with a method option changed (e.g. a transfer baseline's one-shot rule), on the validation split
(for choosing) and on the test split (for reporting); ``--init CHECKPOINT`` starts from a trained checkpoint's
weights with a fresh optimiser (a second stage at a lower learning rate, recorded as ``training.init_from`` in
the checkpoint). benchmarks/metric_family.sh trains the whole
metric-learning family this way.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from oneshot.cli_common import option_argument
from oneshot.experiment import STANDARD_SHAPES, evaluate_checkpoint, train_model
from oneshot.provenance import command_line, provenance
from oneshot.training import TrainConfig, TrainProgress

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True)
    p.add_argument("--method", default="protonet")
    p.add_argument("--split", default="vinyals")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--episodes", type=int, default=10000)
    p.add_argument("--ways", type=int, default=60)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-step", type=int, default=2000)
    p.add_argument("--lr-gamma", type=float, default=0.5)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--val-episodes", type=int, default=500)
    p.add_argument("--val-ways", type=int, default=20, help="ways of the validation episodes that choose the checkpoint")
    p.add_argument("--val-shots", type=int, default=1, help="shots of the validation episodes that choose the checkpoint")
    p.add_argument("--max-minutes", type=float, default=0.0)
    p.add_argument("--precision", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--test-episodes",
        type=int,
        default=1000,
        help="test episodes per shape after training; 0 skips the test split (a candidate chosen on validation "
        "first, scored later with reevaluate.py)",
    )
    p.add_argument("--no-copy", action="store_true", help="do not copy the checkpoint into models/")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run from benchmarks/runs/<name>.safetensors.resume (same command otherwise); "
        "--max-minutes is this invocation's budget",
    )
    p.add_argument(
        "--option", type=option_argument, action="append", default=[], help="method option KEY=VALUE (JSON value or text); repeat"
    )
    p.add_argument(
        "--init", default=None, help="start from this checkpoint's weights (same method and options; a fresh optimiser)"
    )
    p.add_argument("--verification", action="store_true", help="also report verification metrics on test pairs")
    p.add_argument("--verification-pairs", type=int, default=20000)
    p.add_argument(
        "--variant", type=option_argument, action="append", default=[], help="also evaluate with method option KEY=VALUE; repeat"
    )
    args = p.parse_args()
    method_options = dict(args.option)  # malformed options were a usage error before any training (option_argument)
    variant_options = [dict([item]) for item in args.variant]
    command = command_line()
    cfg = TrainConfig(
        episodes=args.episodes,
        ways=args.ways,
        shots=args.shots,
        queries=args.queries,
        lr=args.lr,
        lr_step=args.lr_step,
        lr_gamma=args.lr_gamma,
        eval_every=args.eval_every,
        val_episodes=args.val_episodes,
        val_ways=args.val_ways,
        val_shots=args.val_shots,
        max_minutes=args.max_minutes,
        precision=args.precision,
        seed=args.seed,
    )
    out_dir = ROOT / "benchmarks" / "runs"
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / f"{args.name}.safetensors"
    t0 = time.perf_counter()

    def report(p: TrainProgress) -> None:
        if p.episode % 250 == 0:
            print(
                f"episode {p.episode}: loss {p.loss:.4f} train acc {p.train_accuracy:.4f} best val {p.best_val:.4f} "
                f"({time.perf_counter() - t0:.0f}s)",
                flush=True,
            )

    tr = train_model(
        args.method,
        cfg,
        ckpt,
        split=args.split,
        data_dir=args.data_dir,
        command=command,
        on_progress=report,
        method_options=method_options,
        resume=args.resume,
        init=args.init,
    )
    wall = time.perf_counter() - t0
    print(
        f"trained {tr.episodes_run} episodes in {tr.train_seconds:.0f}s ({tr.images_per_second:.0f} images/s); best val {tr.best_val_accuracy:.4f} at {tr.best_episode}",
        flush=True,
    )
    if args.test_episodes == 0:
        # A candidate: its test split stays unread until it is chosen on validation (then reevaluate.py scores it).
        ev = {"results": [], "not_scored": "--test-episodes 0: chosen on validation first, then reevaluate.py"}
    else:
        ev = evaluate_checkpoint(
            ckpt,
            STANDARD_SHAPES,
            episodes=args.test_episodes,
            seed=0,
            lake_runs=(args.split == "vinyals" or args.split == "lake"),
            data_dir=args.data_dir,
            verification=args.verification,
            verification_pairs=args.verification_pairs,
        ).to_dict()
    for r in ev["results"]:
        print(f"{r['ways']}-way {r['shots']}-shot: {100 * r['accuracy']:.2f} +- {100 * r['ci95']:.2f}")
    if "lake_runs" in ev:
        print(f"Lake's 20 runs: {100 * ev['lake_runs']['accuracy']:.2f}")
    if "verification" in ev:
        v = ev["verification"]
        print(
            f"verification: AUC {v['auc']:.4f} EER {100 * v['eer']:.2f}% TAR@1e-2 {100 * v['tar_at_far_1e-2']:.2f}% TAR@1e-3 {100 * v['tar_at_far_1e-3']:.2f}%"
        )
    variants = []
    for opts in variant_options if args.test_episodes else []:
        row = {"options": opts}
        for part in ("val", "test"):
            res = evaluate_checkpoint(
                ckpt, STANDARD_SHAPES, episodes=args.test_episodes, seed=0, part=part, data_dir=args.data_dir, method_options=opts
            ).to_dict()
            row[part] = res["results"]
            print(
                f"variant {opts} on {part}: "
                + ", ".join(f"{r['ways']}w{r['shots']}s {100 * r['accuracy']:.2f}" for r in res["results"])
            )
        variants.append(row)
    result = {
        "name": args.name,
        "method": args.method,
        "method_options": ev.get("method_options", method_options),
        "encoder": "conv4",
        "split": args.split,
        **provenance(command),
        "training": {
            "config": tr.config,  # as run: e.g. channels_last resolved for the device
            "episodes_run": tr.episodes_run,
            "train_seconds": tr.train_seconds,
            "wall_seconds": wall,
            "images_per_second": tr.images_per_second,
            "episodes_per_second": tr.episodes_per_second,
            "device": tr.device,
            "precision": tr.precision,
            "best_val_accuracy": tr.best_val_accuracy,
            "best_episode": tr.best_episode,
            "history": tr.history,
        },
        "evaluation": ev,
    }
    if variants:
        result["variants"] = variants
    if not args.no_copy:
        # A checkpoint the package ships (oneshot.weights) is replaced where it ships; others go to models/.
        shipped = ROOT / "src" / "oneshot" / "weights" / f"{args.name}.safetensors"
        dest = shipped if shipped.is_file() else ROOT / "models" / f"{args.name}.safetensors"
        dest.parent.mkdir(exist_ok=True)
        shutil.copyfile(ckpt, dest)
        result["checkpoint"] = str(dest.relative_to(ROOT))
        result["evaluation"]["checkpoint"] = result["checkpoint"]
    res_path = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    res_path.parent.mkdir(parents=True, exist_ok=True)
    res_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {res_path}")


if __name__ == "__main__":
    main()
