"""Photograph datasets read straight from their tar.gz archives: AT&T faces and NEU surface defects.

* **AT&T / ORL faces** (Samaria & Harter 1994, Olivetti Research Laboratory): ``att_faces.tar.gz`` with
  ``att_faces/sN/K.pgm``, 40 people x 10 images of 92 x 112 8-bit grey. Classes are ``s1`` .. ``s40`` in
  numeric order.
* **NEU surface defects** (Song & Yan 2013): ``NEU-DET.tar.gz`` with ``NEU-DET/IMAGES/<class>_<n>.jpg``,
  6 defect classes x 300 grey 200 x 200 JPEGs. Classes are the six names in alphabetical order.

Like Omniglot's zips (:mod:`oneshot.data.omniglot`), each archive is decoded once per preprocessing into a
uint8 tensor cache keyed by the archive (path, size, mtime) and the preprocessing; a cache that fails to load
or has the wrong counts is rebuilt. A local copy is validated by its structure (counts, image sizes); a
member that does not decode is an error naming it.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from oneshot.data.images import Preprocessing, decode_image, open_image
from oneshot.data.imageset import ImageSet
from oneshot.data.paths import RemoteFile, cache_dir, locate_files
from oneshot.errors import OneshotError
from oneshot.files import atomic_write_bytes

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

CACHE_FORMAT = 1


@dataclass(frozen=True)
class ArchiveSpec:
    """Where a dataset's archive lives and what a valid copy holds."""

    dataset: str  # sub-folder of the data root
    remote: RemoteFile
    pattern: re.Pattern[str]  # member name -> (class, index) groups
    classes: int
    per_class: int
    image_size: tuple[int, int]  # (width, height) of every image
    class_key: Callable[[str], SupportsRichComparison] = str  # sort key of a class name


ATT = ArchiveSpec(
    "faces",
    # The archive here is a tar.gz repack of the official att_faces (originally att_faces.tar.Z at AT&T
    # Laboratories Cambridge); the checksum is that of the copy in ../shared/data.
    RemoteFile(
        "att_faces.tar.gz",
        "https://www.cl.cam.ac.uk/research/dtg/attarchive/pub/data/att_faces.tar.gz",
        "sha256:b8c612e4fc5bb5e2e3114b17e94ff785cdcb86c411af02585a46b420d268f469",
    ),
    re.compile(r"(?:^|/)att_faces/(s\d+)/(\d+)\.pgm$"),
    40,
    10,
    (92, 112),
    class_key=lambda c: int(c[1:]),
)
NEU = ArchiveSpec(
    "defects",
    RemoteFile(
        "NEU-DET.tar.gz",
        "http://faculty.neu.edu.cn/songkechen/zh_CN/zdylm/263270/list/NEU-DET.tar.gz",
        "sha256:c4872f9db713bb6e10672988ee4015f5e407af21aa9e87d6e18ce4fb8577b413",
    ),
    re.compile(r"(?:^|/)NEU-DET/IMAGES/([a-z_-]+)_(\d+)\.jpg$"),
    6,
    300,
    (200, 200),
)


def _cache_path(source: Path, prep: Preprocessing) -> Path:
    st = source.stat()
    tag = f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}|{json.dumps(prep.to_dict(), sort_keys=True)}|{CACHE_FORMAT}"
    digest = hashlib.sha256(tag.encode()).hexdigest()[:16]
    return cache_dir() / "tensors" / f"{source.name.split('.')[0]}-{prep.size}px-{digest}.safetensors"


def _read_members(path: Path, spec: ArchiveSpec) -> list[tuple[str, int, str, bytes]]:
    """(class, index, member name, bytes) of every image member; a damaged archive is a OneshotError."""
    out = []
    try:
        with tarfile.open(path, "r:gz") as tf:
            for m in tf:
                hit = spec.pattern.search(m.name)
                if not hit or not m.isfile():
                    continue
                f = tf.extractfile(m)
                if f is None:
                    continue
                out.append((hit.group(1), int(hit.group(2)), m.name, f.read()))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise OneshotError(
            f"{path} is not a readable tar.gz archive ({exc.__class__.__name__}: {exc}): replace it with a good copy"
        ) from None
    return out


def _decode_archive(path: Path, spec: ArchiveSpec, prep: Preprocessing) -> ImageSet:
    members = _read_members(path, spec)
    names = sorted({c for c, _, _, _ in members}, key=spec.class_key)
    counts = {c: sum(1 for m in members if m[0] == c) for c in names}
    if len(names) != spec.classes or any(n != spec.per_class for n in counts.values()):
        raise OneshotError(
            f"{path} holds {len(names)} classes / {len(members)} images, expected {spec.classes} x "
            f"{spec.per_class}: the file is incomplete or not the official {spec.remote.name}; replace it"
        )
    members.sort(key=lambda m: (spec.class_key(m[0]), m[1]))
    images = np.empty((len(members), prep.channels, prep.size, prep.size), np.uint8)
    for i, (_, _, name, data) in enumerate(members):
        label = f"{path.name}:{name}"
        size = open_image(data, label).size
        if size != spec.image_size:
            raise OneshotError(
                f"{label} is {size[0]}x{size[1]}, expected {spec.image_size[0]}x{spec.image_size[1]}: "
                "the archive is not the official one; replace it"
            )
        images[i] = decode_image(data, prep, name=label)
    labels = torch.tensor([names.index(m[0]) for m in members], dtype=torch.long)
    return ImageSet(torch.from_numpy(images), labels, names)


def load_archive(spec: ArchiveSpec, prep: Preprocessing, data_dir: str | Path | None = None) -> ImageSet:
    """Every image of a dataset archive, decoded with ``prep``, through the tensor cache."""
    path = locate_files(spec.dataset, [spec.remote], data_dir)[spec.remote.name]
    cache = _cache_path(path, prep)
    n = spec.classes * spec.per_class
    if cache.is_file():
        try:
            t = load_file(str(cache))
            names = json.loads(bytes(t["names"].numpy()).decode())
            if (
                t["images"].shape == (n, prep.channels, prep.size, prep.size)
                and t["labels"].shape == (n,)
                and len(names) == spec.classes
            ):
                return ImageSet(t["images"], t["labels"], names)
        except (SafetensorError, OSError, KeyError, ValueError, RuntimeError):
            pass  # corrupt or stale: rebuild
    data = _decode_archive(path, spec, prep)
    blob = torch.frombuffer(bytearray(json.dumps(data.class_names).encode()), dtype=torch.uint8)
    atomic_write_bytes(cache, save({"images": data.images, "labels": data.labels, "names": blob}))
    return data


#: Faces: aspect ratio kept by a centre crop of the 92x112 portraits (the face fills the middle), not inverted.
FACES_PREPROCESSING = Preprocessing(size=64, channels=1, invert=False, resize="crop")
#: Steel surfaces: 200x200 squares shrunk to 64x64, not inverted.
NEU_PREPROCESSING = Preprocessing(size=64, channels=1, invert=False, resize="stretch")


def load_att_faces(prep: Preprocessing = FACES_PREPROCESSING, data_dir: str | Path | None = None) -> ImageSet:
    """AT&T faces: 400 images of 40 people (classes ``s1`` .. ``s40``), uint8 (400, C, S, S)."""
    return load_archive(ATT, prep, data_dir)


def load_neu(prep: Preprocessing = NEU_PREPROCESSING, data_dir: str | Path | None = None) -> ImageSet:
    """NEU surface defects: 1800 images of 6 classes, uint8 (1800, C, S, S)."""
    return load_archive(NEU, prep, data_dir)


def subset(data: ImageSet, classes: list[str]) -> ImageSet:
    """The images of some classes, relabelled 0..len(classes)-1 in the given order."""
    idx, labels = [], []
    for c, name in enumerate(classes):
        members = data.class_indices[data.class_names.index(name)]
        idx.append(members)
        labels.append(np.full(len(members), c))
    sel = torch.from_numpy(np.concatenate(idx))
    return ImageSet(data.images[sel], torch.from_numpy(np.concatenate(labels)).long(), list(classes))


def faces_split(part: str, prep: Preprocessing = FACES_PREPROCESSING, data_dir: str | Path | None = None) -> ImageSet:
    """The faces protocol: ``train`` s1-s16, ``val`` s17-s20 (validation from within the training people s1-s20),
    ``trainval`` s1-s20, ``test`` s21-s40 (never seen in training)."""
    parts = {"train": range(1, 17), "val": range(17, 21), "trainval": range(1, 21), "test": range(21, 41)}
    if part not in parts:
        raise OneshotError(f"unknown part {part!r} of the faces split; choose one of {', '.join(parts)}")
    return subset(load_att_faces(prep, data_dir), [f"s{i}" for i in parts[part]])


#: NEU protocol: a seeded permutation of all 1800 images (drawn without looking at labels) gives 1200 for the
#: self-supervised pool, 200 for validation episodes (model selection) and 400 for test episodes.
NEU_PARTS = {"pool": (0, 1200), "val": (1200, 1400), "test": (1400, 1800)}


def neu_split(part: str, prep: Preprocessing = NEU_PREPROCESSING, data_dir: str | Path | None = None, seed: int = 0) -> ImageSet:
    """A part of the NEU protocol. ``pool`` is unlabelled: every image is its own class (``img<i>``), so a
    method trained on it cannot read a defect label; ``val`` and ``test`` keep the six classes."""
    if part not in NEU_PARTS:
        raise OneshotError(f"unknown part {part!r} of the NEU split; choose one of {', '.join(NEU_PARTS)}")
    data = load_neu(prep, data_dir)
    order = np.random.default_rng(seed).permutation(len(data))
    lo, hi = NEU_PARTS[part]
    sel = np.sort(order[lo:hi])
    images = data.images[torch.from_numpy(sel)]
    if part == "pool":
        return ImageSet(images, torch.arange(len(sel)), [f"img{i}" for i in sel])
    return ImageSet(images, data.labels[torch.from_numpy(sel)], list(data.class_names))
