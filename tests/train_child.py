"""A tiny training run on synthetic images, for the resume and data-parallel tests (run as a subprocess or
under ``torchrun``; not collected by pytest).

usage: python tests/train_child.py OUT METHOD EPISODES [--resume] [--hang-at N] [--meta-batch T] [--augment] [--task-batch B]

Writes OUT (the checkpoint), OUT.resume and OUT.losses.json (rank 0's running loss after every step). With
``--hang-at N`` it writes OUT.hanging after step N and sleeps, so the test can kill it there.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from oneshot.data import ImageSet
from oneshot.encoders import Conv4
from oneshot.methods import build_method
from oneshot.training import TrainConfig, TrainProgress, train

SIZE = 16  # Conv-4 still ends in 64-d embeddings (16 / 2^4 = 1)


def synthetic(classes: int, per_class: int, seed: int) -> ImageSet:
    """Each class a random template plus noise: (classes * per_class, 1, 16, 16) uint8."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(classes, 1, 1, SIZE, SIZE, generator=g)
    noise = 0.3 * torch.rand(classes, per_class, 1, SIZE, SIZE, generator=g)
    images = ((0.7 * templates + noise).clamp(0, 1) * 255).to(torch.uint8).reshape(-1, 1, SIZE, SIZE)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return ImageSet(images, labels, [f"c{i}" for i in range(classes)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("method")
    ap.add_argument("episodes", type=int)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--hang-at", type=int, default=0)
    ap.add_argument("--meta-batch", type=int, default=0)
    ap.add_argument("--augment", action="store_true")
    ap.add_argument("--task-batch", default="", help="MAML/Reptile task_batch option (loop, vmap; default: the method's)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    opts = {"meta_batch": args.meta_batch} if args.meta_batch else {}
    if args.task_batch:
        opts["task_batch"] = args.task_batch
    if args.method in ("maml", "fomaml"):
        opts.update(inner_steps=1, test_steps=1)
    if args.method == "reptile":  # Nichol's outer update: SGD, its step annealed over the run
        opts.update(inner_steps=2, test_steps=1)
    method = (
        build_method(args.method, Conv4(hidden=16), embedding_dim=16, **opts)
        if opts
        else build_method(args.method, Conv4(hidden=16))
    )
    cfg = TrainConfig(
        episodes=args.episodes,
        ways=5,
        shots=1,
        queries=2,
        lr_step=4,
        eval_every=5,
        resume_every=4,
        val_ways=5,
        val_queries=2,
        val_episodes=3,
        precision="fp32",
        seed=3,
        augment={"flip": 0.5, "rotate": 10.0, "brightness": 0.2} if args.augment else None,
    )
    losses_file = args.out.with_name(args.out.name + ".losses.json")
    losses: list[list[float]] = json.loads(losses_file.read_text()) if args.resume and losses_file.exists() else []

    def on_progress(p: TrainProgress) -> None:
        losses.append([p.episode, p.loss, p.train_accuracy])
        losses_file.write_text(json.dumps(losses))
        if p.episode == args.hang_at:
            args.out.with_name(args.out.name + ".hanging").write_text("")
            time.sleep(600)

    meta = {
        "encoder": "conv4",
        "encoder_options": {"hidden": 16},
        "preprocessing": {"size": SIZE, "channels": 1, "invert": False},
    }
    train(method, synthetic(12, 6, 0), synthetic(6, 6, 1), cfg, args.out, meta, resume=args.resume, on_progress=on_progress)


if __name__ == "__main__":
    main()
