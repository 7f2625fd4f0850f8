"""Encoders shipped inside the package, found by name from any folder (``--encoder omniglot``).

Each entry names its file in this package, its modality, what it was trained on, and the benchmark results
file that holds its figures (``benchmarks/results/<results>.json`` in the repository). ``oneshot encoders``
lists them; :func:`resolve_checkpoint` turns a name or a path into a checkpoint path.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from oneshot.errors import OneshotError

#: The shipped encoder new Omniglot galleries, the open-set benchmark and the docs use. Earlier defaults stay
#: shipped under their own names with their own weights: a gallery records its encoder's name and fingerprint,
#: and changing the weights behind a name would lock its owners out (move a gallery with ``gallery reembed``).
LAKE_DEFAULT = "omniglot-lake-v4"


@dataclass(frozen=True)
class ShippedEncoder:
    """One checkpoint shipped as package data."""

    name: str
    file: str
    modality: str
    trained_on: str
    figures: str
    #: The test-time augmentation its validation chose (`oneshot demo` uses it; a gallery names it: ``NAME:tta=shift``).
    tta: str = "none"


SHIPPED: dict[str, ShippedEncoder] = {
    e.name: e
    for e in (
        ShippedEncoder(
            "omniglot",
            "protonet_conv4_vinyals.safetensors",
            "image",
            "ProtoNet Conv-4 on Omniglot's Vinyals train split (28x28 drawings), 24000 episodes, 38 CPU minutes",
            "test 5w1s 98.83 / 5w5s 99.68 / 20w1s 96.00 / 20w5s 98.94; Lake's 20 runs 95.75 "
            "(benchmarks/results/protonet_conv4_vinyals.json)",
        ),
        ShippedEncoder(
            "omniglot-lake",
            "protonet_conv4_lake.safetensors",
            "image",
            "ProtoNet Conv-4 on the Lake split's background alphabets minus its 5 validation alphabets (28x28), 12 "
            "CPU minutes (1039 episodes, val 20w1s 90.5); superseded by omniglot-lake-v2 for new galleries, kept "
            "unchanged so galleries created with it still open",
            "open-set gallery figures in benchmarks/results/gallery_open_set.json",
        ),
        ShippedEncoder(
            "omniglot-lake-v2",
            "protonet_conv4_lake_v2.safetensors",
            "image",
            "the same recipe trained longer: ProtoNet Conv-4 on the Lake split's background alphabets minus its 5 "
            "validation alphabets (28x28), 42 CPU minutes (10089 episodes, best on val 20w1s 91.7 at episode 6000); "
            "superseded by omniglot-lake-v3 for new galleries, kept unchanged so galleries created with it still open",
            "Lake's 20 runs 89.25 (92.50 with --tta shift); open-set gallery figures in benchmarks/results/gallery_open_set_protonet_conv4_lake_v2.json",
            tta="shift",
        ),
        ShippedEncoder(
            "omniglot-lake-v3",
            "protonet_conv4_lake_v3.safetensors",
            "image",
            "ProtoNet Conv-4 with 128 filters per block (-e hidden=128) on the Lake split's background alphabets minus its 5 validation alphabets (28x28), each character's four 90-degree rotations as four classes (--rotated-classes) and the stroke augmentation (--augment), 80 CPU minutes (9084 episodes, best on val 20w1s 95.30 at episode 9084); superseded by omniglot-lake-v4 for new galleries, kept unchanged so galleries created with it still open",
            "figures in benchmarks/results/omniglot_inference_encoder_protonet_conv4_lake_v3.json and gallery_open_set_protonet_conv4_lake_v3*.json",
            tta="shift",
        ),
        ShippedEncoder(
            LAKE_DEFAULT,
            "protonet_conv4_lake_v4.safetensors",
            "image",
            "ProtoNet with five conv blocks of 64 filters (-e blocks=5) on 56x56 drawings (--size 56), the Lake split's background alphabets minus its 5 validation alphabets, each character's four 90-degree rotations as four classes (--rotated-classes) and the stroke augmentation (--augment), 85 CPU minutes on one thread (9000 episodes, best on val 20w1s 95.70 at episode 9000); the default for new Omniglot galleries calibrated on `--omniglot lake-val`, whose alphabets it never saw",
            "with --tta shift: Lake's 20 runs 97.25; Vinyals test 5w1s 99.06 / 5w5s 99.70 / 20w1s 96.96 / 20w5s 99.10 (none of "
            "its characters seen in training); benchmarks/results/omniglot_inference_encoder_protonet_conv4_lake_v4.json, "
            "omniglot_inference_vinyals_test_protonet_conv4_lake_v4.json, gallery_open_set_protonet_conv4_lake_v4*.json",
            tta="shift",
        ),
    )
}


def shipped_path(name: str) -> Path:
    """The file of a shipped encoder (a clear error when the installation lacks it)."""
    entry = SHIPPED[name]
    path = Path(str(resources.files(__name__).joinpath(entry.file)))
    if not path.is_file():
        raise OneshotError(
            f"the built-in encoder {name!r} ({entry.file}) is missing from this installation: reinstall oneshot-learn"
        )
    return path


def resolve_checkpoint(spec: str | Path) -> Path:
    """A shipped encoder's name -> its file; anything else (or a name that is also an existing file) is a path."""
    if str(spec) in SHIPPED and not Path(spec).exists():
        return shipped_path(str(spec))
    return Path(spec)


def shipped_embedder(name: str, tta: str = "none"):  # noqa: ANN201 -- the ImageEmbedder type is imported lazily
    """A shipped image encoder as a gallery embedder, recorded by its name (so a gallery reopens from any folder);
    ``tta="shift"`` averages each image's embedding over shifted copies (``--encoder NAME:tta=shift``)."""
    from oneshot.modalities.image import ImageEmbedder

    return ImageEmbedder(shipped_path(name), spec=name, tta=tta)


def load_omniglot(tta: str = "none"):  # noqa: ANN201
    """The shipped Omniglot ProtoNet (Vinyals split) as a gallery embedder."""
    return shipped_embedder("omniglot", tta)


def load_omniglot_lake(tta: str = "none"):  # noqa: ANN201
    """The first shipped Lake-split ProtoNet (12 CPU minutes), kept for the galleries created with it."""
    return shipped_embedder("omniglot-lake", tta)


def load_omniglot_lake_v2(tta: str = "none"):  # noqa: ANN201
    """The second Lake-split ProtoNet (42 CPU minutes), kept for the galleries created with it."""
    return shipped_embedder("omniglot-lake-v2", tta)


def load_omniglot_lake_v3(tta: str = "none"):  # noqa: ANN201
    """The third Lake-split ProtoNet (28x28, 128 filters), kept for the galleries created with it."""
    return shipped_embedder("omniglot-lake-v3", tta)


def load_omniglot_lake_v4(tta: str = "none"):  # noqa: ANN201
    """The default Lake-split ProtoNet (:data:`LAKE_DEFAULT`; 56x56, five blocks) as a gallery embedder."""
    return shipped_embedder(LAKE_DEFAULT, tta)
