"""Omniglot (Lake, Salakhutdinov & Tenenbaum 2015) from its official zips.

Files (see ``ONESHOT_DATA``/``--data-dir`` resolution in :mod:`oneshot.data.paths`):
``images_background.zip`` (30 alphabets, 964 characters), ``images_evaluation.zip`` (20 alphabets,
659 characters), ``all_runs.zip`` (Lake's 20 official 20-way 1-shot runs) and the Vinyals et al. (2016)
split lists ``vinyals_splits/{train,val,test,trainval}.txt``.

Each zip is decoded once into a uint8 tensor cache keyed by the source file (path, size, mtime) and the
image size; a cache that fails to load or has the wrong counts is rebuilt, never trusted.

Splits:
    * ``vinyals``: the class lists of Vinyals et al. (2016), each line ``Alphabet/characterNN/rotDDD``:
      every character in four 90-degree rotations, each rotation a class (4112 / 688 / 1692 classes).
    * ``lake``: background vs evaluation alphabets (Lake et al. 2015), no rotations. ``train`` is the
      background set minus five alphabets held out as ``val`` (for model selection); ``test`` is the
      evaluation set.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from oneshot.data.images import Preprocessing, decode_image
from oneshot.data.imageset import ImageSet
from oneshot.data.paths import RemoteFile, cache_dir, locate_files
from oneshot.errors import OneshotError
from oneshot.files import atomic_write_bytes

OFFICIAL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
SPLITS_URL = "https://raw.githubusercontent.com/jakesnell/prototypical-networks/master/data/omniglot/splits/vinyals"

ZIPS = {
    "background": RemoteFile(
        "images_background.zip", f"{OFFICIAL}/images_background.zip", "md5:68d2efa1b9178cc56df9314c21c6e718"
    ),
    "evaluation": RemoteFile(
        "images_evaluation.zip", f"{OFFICIAL}/images_evaluation.zip", "md5:6b91aef0f799c5bb55b94e3f2daec811"
    ),
}
RUNS = RemoteFile("all_runs.zip", f"{OFFICIAL}/all_runs.zip", "md5:e8996daecdf12afeeb4a53a179f06b19")
# Expected structure of a valid copy: characters and drawings per zip.
EXPECTED = {"background": (964, 19280), "evaluation": (659, 13180)}
VINYALS_COUNTS = {"train": 4112, "val": 688, "test": 1692, "trainval": 4800}
LAKE_VAL_ALPHABETS = ("Tifinagh", "Tagalog", "Mkhedruli_(Georgian)", "Japanese_(katakana)", "Grantha")
SPLITS = {"vinyals": ("train", "val", "test", "trainval"), "lake": ("train", "val", "test", "trainval")}
CACHE_FORMAT = 1


@dataclass
class Characters:
    """All drawings of one Omniglot zip: images (N, 1, S, S) uint8 and one character key per image."""

    images: torch.Tensor
    keys: list[str]  # "Alphabet/characterNN" for each image


def _zip_members(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise OneshotError(f"{path} is corrupt (member {bad} fails its CRC): replace the file")
            return sorted(n for n in zf.namelist() if n.lower().endswith(".png"))
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise OneshotError(f"{path} is not a readable zip ({exc}): replace it with a good copy") from None


def _cache_path(source: Path, prep: Preprocessing) -> Path:
    st = source.stat()
    tag = f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}|{prep.size}|{prep.channels}|{prep.invert}|{CACHE_FORMAT}"
    import hashlib

    digest = hashlib.sha256(tag.encode()).hexdigest()[:16]
    return cache_dir() / "tensors" / f"{source.stem}-{prep.size}px-{digest}.safetensors"


def _decode_zip(path: Path, kind: str, prep: Preprocessing) -> Characters:
    members = _zip_members(path)
    n_chars, n_images = EXPECTED[kind]
    keys = ["/".join(m.split("/")[-3:-1]) for m in members]
    if len(members) != n_images or len(set(keys)) != n_chars:
        raise OneshotError(
            f"{path} holds {len(set(keys))} characters / {len(members)} drawings, expected {n_chars} / "
            f"{n_images}: the file is incomplete or not the official Omniglot {path.name}; replace it"
        )
    out = np.empty((len(members), prep.channels, prep.size, prep.size), dtype=np.uint8)
    with zipfile.ZipFile(path) as zf:
        for i, name in enumerate(members):
            out[i] = decode_image(zf.read(name), prep, name=f"{path.name}:{name}")
    return Characters(torch.from_numpy(out), keys)


def load_characters(kind: str, prep: Preprocessing, data_dir: str | Path | None = None) -> Characters:
    """Decoded drawings of the ``background`` or ``evaluation`` zip, through the tensor cache."""
    path = locate_files("omniglot", [ZIPS[kind]], data_dir)[ZIPS[kind].name]
    cache = _cache_path(path, prep)
    n_chars, n_images = EXPECTED[kind]
    if cache.is_file():
        try:
            tensors = load_file(str(cache))
            keys = json.loads(bytes(tensors["keys"].numpy()).decode())
            images = tensors["images"]
            if images.shape == (n_images, prep.channels, prep.size, prep.size) and len(keys) == n_images:
                return Characters(images, keys)
        except (SafetensorError, OSError, KeyError, ValueError, RuntimeError):
            pass  # corrupt or stale: rebuild below
    chars = _decode_zip(path, kind, prep)
    keys_blob = torch.frombuffer(bytearray(json.dumps(chars.keys).encode()), dtype=torch.uint8)
    atomic_write_bytes(cache, save({"images": chars.images, "keys": keys_blob}))
    return chars


SPLIT_SHA256 = {
    "train": "984522c194c30fb678ce53304a160a42faf5403ad4f9a67010f32dd3a35738e0",
    "val": "11f99e54faee3e26f53d3231c1cceac5bf7b8730e9be31cb6dab256551dc0c1a",
    "test": "845264cc5c156180828ccf17915668b17ee21424d0170df6e7d81676aa5d1204",
    "trainval": "5276ae50c755596d0bff7f2284e85625695549a85ee6e36b6491ad1e5d1cc26a",
}


def _split_lines(part: str, data_dir: str | Path | None) -> list[str]:
    """The class list of one part of the Vinyals split (``<data>/omniglot/vinyals_splits/<part>.txt``)."""
    name = f"{part}.txt"
    remote = RemoteFile(name, f"{SPLITS_URL}/{name}", f"sha256:{SPLIT_SHA256[part]}")
    path = locate_files("omniglot/vinyals_splits", [remote], data_dir)[name]
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if len(lines) != VINYALS_COUNTS[part]:
        raise OneshotError(f"{path} lists {len(lines)} classes, expected {VINYALS_COUNTS[part]}: replace the file")
    return lines


def load_omniglot(
    split: str = "vinyals",
    part: str = "train",
    size: int = 28,
    data_dir: str | Path | None = None,
) -> ImageSet:
    """One part (``train``, ``val``, ``test``, ``trainval``) of an Omniglot split as an :class:`ImageSet`.

    Args:
        split: ``"vinyals"`` (rotations as classes) or ``"lake"`` (background vs evaluation).
        part: which part of the split.
        size: image side in pixels (28 is the standard).
        data_dir: folder holding the official files (see :mod:`oneshot.data.paths`).
    """
    if split not in SPLITS:
        raise OneshotError(f"unknown Omniglot split {split!r}; choose one of {', '.join(SPLITS)}")
    if part not in SPLITS[split]:
        raise OneshotError(f"unknown part {part!r} of split {split}; choose one of {', '.join(SPLITS[split])}")
    prep = Preprocessing(size=size, channels=1, invert=True)
    if split == "lake":
        if part == "test":
            kinds, keep = ["evaluation"], None
        else:
            kinds = ["background"]
            if part == "train":
                keep = lambda k: k.split("/")[0] not in LAKE_VAL_ALPHABETS  # noqa: E731
            elif part == "val":
                keep = lambda k: k.split("/")[0] in LAKE_VAL_ALPHABETS  # noqa: E731
            else:
                keep = None
        images: list[torch.Tensor] = []
        names: list[str] = []
        labels: list[int] = []
        for kind in kinds:
            chars = load_characters(kind, prep, data_dir)
            order: dict[str, int] = {}
            sel = []
            for i, key in enumerate(chars.keys):
                if keep is None or keep(key):
                    if key not in order:
                        order[key] = len(names)
                        names.append(key)
                    sel.append(i)
                    labels.append(order[key])
            images.append(chars.images[torch.tensor(sel)])
        return ImageSet(torch.cat(images), torch.tensor(labels, dtype=torch.long), names)

    by_key: dict[str, torch.Tensor] = {}
    for kind in ("background", "evaluation"):
        chars = load_characters(kind, prep, data_dir)
        idx_of: dict[str, list[int]] = {}
        for i, key in enumerate(chars.keys):
            idx_of.setdefault(key, []).append(i)
        for key, idx in idx_of.items():
            by_key[key] = chars.images[torch.tensor(idx)]
    lines = _split_lines(part, data_dir)
    images, label_parts = [], []
    for c, line in enumerate(lines):
        alphabet, character, rot = line.split("/")
        key = f"{alphabet}/{character}"
        if key not in by_key or not rot.startswith("rot"):
            raise OneshotError(f"split line {line!r} names no Omniglot character: is the split file corrupt?")
        k = int(rot[3:]) // 90
        imgs = by_key[key]
        images.append(torch.rot90(imgs, k, dims=(2, 3)) if k else imgs)
        label_parts.append(torch.full((imgs.shape[0],), c, dtype=torch.long))
    return ImageSet(torch.cat(images).contiguous(), torch.cat(label_parts), list(lines))


def character_keys(split: str, part: str, data_dir: str | Path | None = None) -> set[str]:
    """The characters (``"Alphabet/characterNN"``, rotations folded) one part of a split draws its classes from,
    read from the zip listings and split files alone (no image is decoded): the way to check that an encoder
    trained on one split never saw the characters it is scored on in another (Lake's background alphabets, for
    example, are Vinyals train and val alphabets, while the Vinyals test alphabets are all evaluation ones)."""
    if split not in SPLITS or part not in SPLITS[split]:
        raise OneshotError(f"unknown part {part!r} of Omniglot split {split!r}")
    if split == "vinyals":
        return {"/".join(line.split("/")[:2]) for line in _split_lines(part, data_dir)}
    kind = "evaluation" if part == "test" else "background"
    path = locate_files("omniglot", [ZIPS[kind]], data_dir)[ZIPS[kind].name]
    with zipfile.ZipFile(path) as zf:
        keys = {"/".join(n.split("/")[-3:-1]) for n in zf.namelist() if n.lower().endswith(".png")}
    if part == "train":
        return {k for k in keys if k.split("/")[0] not in LAKE_VAL_ALPHABETS}
    if part == "val":
        return {k for k in keys if k.split("/")[0] in LAKE_VAL_ALPHABETS}
    return keys


@dataclass
class LakeRun:
    """One of Lake's official 20-way 1-shot runs.

    Attributes:
        support: uint8 (20, 1, S, S), one drawing per class (``training/classNN.png``).
        queries: uint8 (20, 1, S, S), the test drawings (``test/itemNN.png``).
        targets: int64 (20,), the correct support index for each query.
    """

    name: str
    support: torch.Tensor
    queries: torch.Tensor
    targets: torch.Tensor


def _member(run: str, path: str) -> str:
    """Paths in class_labels.txt are relative to the zip root (``run01/test/item01.png``) in the official
    file; accept run-relative paths too."""
    return path if path.startswith(f"{run}/") else f"{run}/{path}"


def load_lake_runs(size: int = 28, data_dir: str | Path | None = None) -> list[LakeRun]:
    """The 20 official one-shot runs of ``all_runs.zip`` with the same preprocessing as training."""
    path = locate_files("omniglot", [RUNS], data_dir)[RUNS.name]
    prep = Preprocessing(size=size, channels=1, invert=True)
    runs: list[LakeRun] = []
    try:
        with zipfile.ZipFile(path) as zf:
            for r in range(1, 21):
                run = f"run{r:02d}"
                pairs = [ln.split() for ln in zf.read(f"{run}/class_labels.txt").decode().splitlines() if ln.strip()]
                train_files = sorted({p[1] for p in pairs})
                col = {f: i for i, f in enumerate(train_files)}
                support = np.stack([decode_image(zf.read(_member(run, f)), prep, f) for f in train_files])
                queries = np.stack([decode_image(zf.read(_member(run, p[0])), prep, p[0]) for p in pairs])
                targets = [col[p[1]] for p in pairs]
                runs.append(LakeRun(run, torch.from_numpy(support), torch.from_numpy(queries), torch.tensor(targets)))
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, IndexError) as exc:
        raise OneshotError(f"{path} is not a valid all_runs.zip ({exc}): replace it with the official file") from None
    if len(runs) != 20 or any(len(r.targets) != 20 for r in runs):
        raise OneshotError(f"{path} does not hold 20 runs of 20 trials: replace it with the official file")
    return runs
