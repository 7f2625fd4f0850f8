"""Checkpoints: safetensors weights with the JSON metadata needed to rebuild and trust them.

One ``.safetensors`` file holds the method's tensors; its header's ``oneshot`` entry is a JSON document with
the method and its options, the encoder and its options, the preprocessing, the embedding size, the data
split, the training command, seed and commit, and a SHA-256 of the tensors. Loading rebuilds the method
from the metadata and refuses a file whose tensors do not match it (wrong method, wrong shapes, edited or
truncated bytes). Nothing is unpickled.

The *resume* format beside a checkpoint (``<checkpoint>.resume``) lives in :mod:`oneshot.resume`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from oneshot.data.images import Preprocessing
from oneshot.encoders import build_encoder
from oneshot.errors import OneshotError
from oneshot.files import atomic_write_bytes
from oneshot.methods import METHODS, Method, build_method

FORMAT = "oneshot-checkpoint"
FORMAT_VERSION = 1


def _metadata_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the metadata without its own ``metadata_sha256`` field."""
    body = {k: v for k, v in meta.items() if k != "metadata_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


#: Bounds on what checkpoint metadata may describe: a crafted size must never become a huge allocation.
MAX_IMAGE_SIZE = 1024
MAX_OPTION_INT = 1 << 20
MAX_META_DEPTH = 8


def _check_json_value(path: Path, where: str, v: Any, depth: int = 0) -> None:
    if depth > MAX_META_DEPTH:
        raise OneshotError(f"{path}: metadata {where} is nested too deeply: re-download or retrain it")
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return
    if isinstance(v, (int, float)):
        if (isinstance(v, float) and not math.isfinite(v)) or (isinstance(v, int) and abs(v) > MAX_OPTION_INT):
            raise OneshotError(f"{path}: metadata {where} = {v!r} is out of range: re-download or retrain it")
        return
    if isinstance(v, list):
        for i, x in enumerate(v):
            _check_json_value(path, f"{where}[{i}]", x, depth + 1)
        return
    if isinstance(v, dict):
        for k, x in v.items():
            _check_json_value(path, f"{where}.{k}", x, depth + 1)
        return
    raise OneshotError(f"{path}: metadata {where} has an unexpected type: re-download or retrain it")


def validate_metadata(path: Path, meta: Any) -> dict[str, Any]:
    """Check checkpoint metadata against its schema; a one-line :class:`OneshotError` naming the first field
    that is missing, mistyped or out of range.

    Schema: ``method`` and ``encoder`` (registered names), ``method_options`` and ``encoder_options`` (JSON
    objects of bounded numbers, strings, booleans and lists), ``preprocessing`` (``size`` an int in
    [1, 1024], ``channels`` 1 or 3 and equal to the encoder's ``in_channels`` when given, ``invert`` a bool),
    ``tensors_sha256`` (64 hex digits) and, when present, ``metadata_sha256`` matching the rest."""
    from oneshot.encoders import ENCODERS

    def bad(field: str, want: str) -> OneshotError:
        return OneshotError(f"{path}: checkpoint metadata field {field!r} is missing or not {want}: re-download or retrain it")

    if not isinstance(meta, dict):
        raise OneshotError(f"{path} has corrupt metadata (not a JSON object): re-download or retrain it")
    if "metadata_sha256" in meta and meta["metadata_sha256"] != _metadata_digest(meta):
        raise OneshotError(f"{path} is corrupt or edited: its metadata does not match the checksum it carries")
    if meta.get("method") not in METHODS:
        raise bad("method", f"one of {', '.join(METHODS)}")
    if meta.get("encoder") not in ENCODERS:
        raise bad("encoder", f"one of {', '.join(ENCODERS)}")
    for field in ("method_options", "encoder_options"):
        if not isinstance(meta.get(field, {}), dict):
            raise bad(field, "a JSON object")
        _check_json_value(path, field, meta.get(field, {}))
    if meta.get("modality", "image") != "image":  # other modalities' inputs are not images (docs/molecules.md)
        digest = meta.get("tensors_sha256")
        if not isinstance(digest, str) or len(digest) != 64:
            raise bad("tensors_sha256", "a SHA-256 hex digest")
        return meta
    prep = meta.get("preprocessing")
    if not isinstance(prep, dict):
        raise bad("preprocessing", "a JSON object with size, channels and invert")
    size, channels, invert = prep.get("size"), prep.get("channels"), prep.get("invert")
    if type(size) is not int or not 1 <= size <= MAX_IMAGE_SIZE:
        raise bad("preprocessing.size", f"a whole number in [1, {MAX_IMAGE_SIZE}]")
    if type(channels) is not int or channels not in (1, 3):
        raise bad("preprocessing.channels", "1 or 3")
    in_ch = meta.get("encoder_options", {}).get("in_channels", channels)
    if in_ch != channels:
        raise bad("preprocessing.channels", f"equal to the encoder's in_channels ({in_ch!r})")
    if type(invert) is not bool:
        raise bad("preprocessing.invert", "true or false")
    digest = meta.get("tensors_sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        raise bad("tensors_sha256", "a SHA-256 hex digest")
    return meta


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _check_shapes(path: Path, meta: dict[str, Any], options: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Build the described model on the ``meta`` device (no memory) and compare its tensor names and shapes
    with the file's, before anything is allocated: options that would describe a huge model are refused here.
    The rule is the same for every method: the file's tensors must be exactly the recorded method's."""
    try:
        with torch.device("meta"):
            ghost = build_method(meta["method"], build_encoder(meta["encoder"], **meta.get("encoder_options", {})), **options)
    except OneshotError:
        raise
    except Exception as exc:  # options of the wrong type or value for the constructor
        raise OneshotError(
            f"{path}: its metadata describes no valid {meta['method']}/{meta['encoder']} model "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}): re-download or retrain it"
        ) from None
    want = {k: tuple(v.shape) for k, v in ghost.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if want != got:
        diff = sorted(set(want) ^ set(got)) or sorted(k for k in want if want[k] != got[k])
        raise OneshotError(
            f"{path}: its tensors are not those of the {meta['method']}/{meta['encoder']} model its metadata "
            f"describes (first difference: {diff[0]!r}): use a checkpoint of that method, or retrain it"
        )


@dataclass
class Checkpoint:
    """A loaded checkpoint: the method (in eval mode) and its metadata."""

    method: Method
    metadata: dict[str, Any]

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.metadata.get("preprocessing"))

    @property
    def input_envelope(self) -> dict[str, Any] | None:
        """Range of training inputs' pixel statistics (:func:`oneshot.data.images.checkpoint_envelope`)."""
        from oneshot.data.images import checkpoint_envelope

        return checkpoint_envelope(self.metadata)

    @property
    def domain(self) -> str:
        """What the encoder was trained on, e.g. ``omniglot``, ``att_faces``, ``neu_det``."""
        return str((self.metadata.get("data") or {}).get("dataset", "omniglot"))


def state_tensors(method: Method) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in method.state_dict().items()}


def save_checkpoint(path: str | Path, method: Method, metadata: dict[str, Any]) -> Path:
    """Write ``method``'s tensors and ``metadata`` (plus format, digest) to ``path`` atomically."""
    path = Path(path)
    tensors = state_tensors(method)
    meta = dict(metadata)
    meta.update(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        method=method.name,
        method_options=method.options(),
        tensors_sha256=_tensor_digest(tensors),
    )
    meta["metadata_sha256"] = _metadata_digest(meta)
    atomic_write_bytes(path, save(tensors, metadata={"oneshot": json.dumps(meta, sort_keys=True)}))
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a checkpoint without building the model; clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise OneshotError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise OneshotError(f"{path} is truncated or not a safetensors checkpoint ({exc}): re-download or retrain it") from None
    if "oneshot" not in header:
        raise OneshotError(f"{path} is a safetensors file but not a oneshot checkpoint (no 'oneshot' metadata)")
    try:
        meta = json.loads(header["oneshot"])
    except json.JSONDecodeError:
        raise OneshotError(f"{path} has corrupt metadata: re-download or retrain it") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise OneshotError(f"{path} is not a oneshot checkpoint")
    version = meta.get("format_version", 0)
    if type(version) is not int:
        raise OneshotError(f"{path}: checkpoint metadata field 'format_version' is not a whole number: re-download or retrain it")
    if version > FORMAT_VERSION:
        raise OneshotError(f"{path} was written by a newer oneshot (format {meta['format_version']}): upgrade oneshot")
    return validate_metadata(path, meta)


def load_checkpoint(
    path: str | Path,
    expect_method: str | None = None,
    device: str | torch.device = "cpu",
    method_options: dict[str, Any] | None = None,
) -> Checkpoint:
    """Rebuild the method a checkpoint describes and load its weights; refuse anything inconsistent.

    Args:
        path: the ``.safetensors`` file.
        expect_method: if given, refuse a checkpoint of another method.
        device: where to put the model.
        method_options: options to change when rebuilding (e.g. a transfer baseline's one-shot rule);
            only options that do not change the tensors can be changed.
    """
    path = Path(path)
    meta = read_metadata(path)
    try:
        if meta.get("modality", "image") == "image":  # molecule checkpoints featurise SMILES, no image preprocessing
            Preprocessing.from_dict(meta.get("preprocessing"))
    except OneshotError as exc:
        raise OneshotError(f"{path} has invalid preprocessing metadata ({exc}): re-download or retrain it") from None
    if expect_method is not None and meta["method"] != expect_method:
        raise OneshotError(f"{path} is a {meta['method']} checkpoint, not {expect_method}")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise OneshotError(f"{path} is truncated or corrupt ({exc}): re-download or retrain it") from None
    if _tensor_digest(tensors) != meta.get("tensors_sha256"):
        raise OneshotError(f"{path} is corrupt: its weights do not match the checksum in its metadata")
    legacy = METHODS[meta["method"]].legacy_options  # what a checkpoint lacking a later option meant
    options = {**legacy, **meta.get("method_options", {}), **(method_options or {})}
    _check_shapes(path, meta, options, tensors)
    encoder = build_encoder(meta["encoder"], **meta.get("encoder_options", {}))
    method = build_method(meta["method"], encoder, **options)
    try:
        method.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise OneshotError(
            f"{path}: weights do not match the {meta['method']}/{meta['encoder']} model its metadata describes ({first})"
        ) from None
    if meta.get("modality", "image") == "image":  # molecule checkpoints featurise SMILES, no image preprocessing
        prep = meta["preprocessing"]
        try:
            with torch.no_grad():
                method.eval().embed(torch.zeros(1, prep["channels"], prep["size"], prep["size"]))
        except (RuntimeError, ValueError) as exc:
            raise OneshotError(
                f"{path}: its preprocessing ({prep['channels']}x{prep['size']}x{prep['size']}) does not suit "
                f"its {meta['encoder']} encoder ({str(exc).splitlines()[0][:120]}): re-download or retrain it"
            ) from None
    method.to(device).eval()
    return Checkpoint(method, meta)
