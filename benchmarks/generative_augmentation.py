"""Generative augmentation against plain geometric augmentation and none, on three domains, same episodes.

For each domain: fit the embedding-space generator (:mod:`oneshot.generative`) on base data only, choose its
``k`` / ``alpha`` on validation classes, save it beside the checkpoint (``<checkpoint>.generator.safetensors``,
with ``helps`` = whether it beat no augmentation on validation), then score 1-shot test episodes with the one
support example (a) alone, (b) plus ``n`` geometric augmentations of its pixels (the training augmentation of
that domain, embedded by the encoder), (c) plus ``n`` generated embeddings. The prototype is the renormalised
mean; classification by cosine. Paired differences over the same episodes get their own 95% CI.

* omniglot: the shipped ProtoNet; base = 400 classes of Vinyals train, validation = 200 classes of Vinyals val,
  test = 300 classes of Vinyals test (seeded subsets, for the CPU budget), 20-way 1-shot.
* att_faces: the faces checkpoint; base = s1-s16, validation = s17-s20 (4-way), test = s21-s40, 20-way 1-shot.
* neu: the self-supervised checkpoint; no labels exist for base data, so the generator is fitted on the
  unlabelled pool with each image's augmented views as its "class"; validation = NEU val, test = NEU test, 6-way.

    python benchmarks/generative_augmentation.py --faces models/protonet_resnet12s_att.safetensors \
        --neu models/simclr_resnet12s_neu.safetensors
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from oneshot.checkpoint import load_checkpoint
from oneshot.data.augment import Augment
from oneshot.data.imageset import ImageSet
from oneshot.evaluation import embed_all, mean_ci95
from oneshot.experiment import load_split
from oneshot.generative import Generator, choose, episode_accuracy, generator_path
from oneshot.provenance import git_commit, machine_description, now_iso

ROOT = Path(__file__).resolve().parent.parent
AUGMENTS = {
    "omniglot": Augment(flip=0.0, scale=(0.85, 1.0), rotate=10.0, shift=0.05, brightness=0.0, contrast=0.0),
    "att_faces": Augment(flip=0.5, scale=(0.8, 1.0), rotate=10.0, shift=0.05, brightness=0.2, contrast=0.2),
    "neu": Augment(flip=0.5, vflip=0.5, scale=(0.5, 1.0), rotate=15.0, shift=0.1, brightness=0.2, contrast=0.3),
}
SETUPS = {  # domain: (base part, validation part, test part, test ways, validation ways)
    "omniglot": ("train", "val", "test", 20, 20),
    "att_faces": ("train", "val", "test", 20, 4),
    "neu": ("pool", "val", "test", 6, 6),
}


def unit(z: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(z.float(), dim=1).numpy()


def augmented(method, images: torch.Tensor, aug: Augment, n: int, seed: int = 0) -> np.ndarray:
    """(N, n, D) unit embeddings of n augmentations of each uint8 image."""
    out = []
    for i in range(n):
        views = []
        for s in range(0, len(images), 4096):
            x = images[s : s + 4096].float().div(255)
            x = aug(x, torch.Generator().manual_seed(seed * 1000 + i * 100 + s // 4096))
            with torch.no_grad():
                views.append(method.embed(x).float())
        out.append(unit(torch.cat(views)))
    return np.stack(out, 1)


def subsample(data: ImageSet, classes: int, seed: int = 0) -> ImageSet:
    """At most ``classes`` classes of ``data`` (seeded), relabelled."""
    if data.num_classes <= classes:
        return data
    keep = np.sort(np.random.default_rng(seed).choice(data.num_classes, classes, replace=False))
    idx = np.concatenate([data.class_indices[c] for c in keep])
    lab = np.concatenate([np.full(len(data.class_indices[c]), i) for i, c in enumerate(keep)])
    return ImageSet(data.images[torch.from_numpy(idx)], torch.from_numpy(lab), [data.class_names[c] for c in keep])


def run_domain(domain: str, checkpoint: str, n: int, episodes: int, data_dir) -> dict:
    t0 = time.perf_counter()
    ck = load_checkpoint(checkpoint)
    method, prep = ck.method.eval(), ck.preprocessing
    base_part, val_part, test_part, ways, val_ways = SETUPS[domain]
    ds_prep = None if domain == "omniglot" else prep
    base = load_split(domain, "vinyals", base_part, prep.size, data_dir, ds_prep)
    val = load_split(domain, "vinyals", val_part, prep.size, data_dir, ds_prep)
    test = load_split(domain, "vinyals", test_part, prep.size, data_dir, ds_prep)
    if domain == "omniglot":  # CPU budget: a seeded subset of classes (20-way episodes stay 20-way)
        val, test = subsample(val, 200, seed=1), subsample(test, 300, seed=2)
    aug = AUGMENTS[domain]
    dev = torch.device("cpu")
    if domain == "neu":  # no labels: each pool image's augmented views are its class
        views = augmented(method, base.images, aug, 4, seed=7)
        zb = views.reshape(-1, views.shape[-1])
        yb = np.repeat(np.arange(len(base)), 4)
    else:
        base = subsample(base, 400)
        zb, yb = unit(embed_all(method, base.images, dev)), base.labels.numpy()
    gen = Generator.fit(zb, yb)
    zv = unit(embed_all(method, val.images, dev))
    gen = choose(gen, zv, val.class_indices, val_ways, 5, n)
    gen.info.update(domain=domain, base=f"{domain} {base_part}", checkpoint=Path(checkpoint).name)
    gen.save(generator_path(checkpoint))
    zt = unit(embed_all(method, test.images, dev))
    rows = {}
    per = {}
    geo = augmented(method, test.images, aug, n, seed=3)
    for name, extra in (("none", None), ("geometric", geo), ("generative", gen.sample(zt, n, seed=5))):
        m, ci, accs = episode_accuracy(zt, extra, test.class_indices, ways, 5 if domain == "att_faces" else 15, episodes)
        rows[name] = {"accuracy": m, "ci95": ci}
        per[name] = accs
    for name in ("geometric", "generative"):
        d, dci = mean_ci95(per[name] - per["none"])
        rows[name]["change_vs_none"] = {"mean": d, "ci95": dci}
    return {
        "checkpoint": checkpoint,
        "ways": ways,
        "shots": 1,
        "episodes": episodes,
        "n": n,
        "rows": rows,
        "test_classes": test.num_classes,
        "validation_classes": val.num_classes,
        "generator": {"k": gen.k, "alpha": gen.alpha, **gen.info},
        "cpu_seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--omniglot", default=str(ROOT / "src/oneshot/weights/protonet_conv4_vinyals.safetensors"))
    p.add_argument("--faces", default=None)
    p.add_argument("--neu", default=None)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--domains", nargs="+", default=["omniglot", "att_faces", "neu"])
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/generative_augmentation.json"))
    p.add_argument("--merge", action="store_true", help="keep the other domains already in --out")
    a = p.parse_args()
    torch.set_num_threads(1)
    ckpts = {"omniglot": a.omniglot, "att_faces": a.faces, "neu": a.neu}
    res = {}
    commands = []
    if a.merge and Path(a.out).is_file():
        old = json.loads(Path(a.out).read_text())
        res, commands = old["domains"], old.get("commands", [old.get("command")])
    for d in a.domains:
        if ckpts[d]:
            res[d] = run_domain(d, ckpts[d], a.n, a.episodes, a.data_dir)
            r = res[d]["rows"]
            print(
                d,
                {k: f"{100 * v['accuracy']:.2f} +- {100 * v['ci95']:.2f}" for k, v in r.items()},
                "helps on validation:",
                res[d]["generator"]["helps"],
                flush=True,
            )
    command = "python " + " ".join(shlex.quote(x) for x in sys.argv)
    out = {
        "domains": res,
        "command": command,
        "commands": [*commands, command],
        "commit": git_commit(),
        "machine": machine_description(),
        "date": now_iso(),
        "note": "CPU seconds measured on 2 cores shared with other jobs (contended)",
    }
    Path(a.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
