"""Train an encoder on a photograph dataset's training part (AT&T faces s1-s16 or NEU's unlabelled pool) and keep
the best checkpoint on its validation part (faces s17-s20; NEU's validation images).

    python benchmarks/train_photo.py --dataset att_faces --method protonet --encoder resnet12_small --size 32 \
        --augment --minutes 9 --out runs/faces_aug.safetensors

Prints the training result as JSON. ``benchmarks/faces_att.py`` and ``benchmarks/defects_neu.py`` evaluate the
checkpoints; the configurations used for the committed figures are those the results files record.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

import torch

from oneshot.experiment import train_model
from oneshot.training import TrainConfig

FACES_AUGMENT = {"flip": 0.5, "scale": [0.8, 1.0], "rotate": 10.0, "shift": 0.05, "brightness": 0.2, "contrast": 0.2}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["att_faces", "neu"], required=True)
    p.add_argument("--method", default="protonet")
    p.add_argument("--encoder", default="resnet12_small")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--augment", action="store_true", help="flips, crops, small affine, brightness / contrast")
    p.add_argument("--minutes", type=float, default=9.0)
    p.add_argument("--ways", type=int, default=16)
    p.add_argument("--queries", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-step", type=int, default=1500)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--val-ways", type=int, default=4)
    p.add_argument("--val-queries", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from --out's resume state (--minutes is the total)")
    p.add_argument("--init", default=None, help="start from this checkpoint's weights (fresh optimiser)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg = TrainConfig(
        episodes=100000,
        ways=a.ways,
        shots=1,
        queries=a.queries,
        lr=a.lr,
        lr_step=a.lr_step,
        eval_every=a.eval_every,
        val_ways=a.val_ways,
        val_shots=1,
        val_queries=a.val_queries,
        val_episodes=300,
        max_minutes=a.minutes,
        seed=a.seed,
        precision="fp32",
        augment=FACES_AUGMENT if a.augment else None,
    )
    res = train_model(
        a.method,
        cfg,
        a.out,
        dataset=a.dataset,
        size=a.size,
        encoder=a.encoder,
        command="python " + " ".join(shlex.quote(x) for x in sys.argv),
        resume=a.resume,
        init=a.init,
    )
    print(json.dumps({k: v for k, v in res.__dict__.items() if k != "history"}))
    print(json.dumps(res.history))


if __name__ == "__main__":
    main()
