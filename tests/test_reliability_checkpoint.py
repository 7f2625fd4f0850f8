"""Issue 11, checkpoint side: metadata validated against a schema and covered by a checksum; a fuzz test
over checkpoint files (bytes flipped, header and metadata edited): a clear error or a correct model, and the
file byte-identical afterwards."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from gallery_util import file_digest, make_checkpoint

from oneshot.checkpoint import load_checkpoint, read_metadata
from oneshot.errors import OneshotError


def _rewrite_metadata(src, dest, edit, keep_digest=True):
    """Copy a safetensors checkpoint with its ``oneshot`` metadata changed by ``edit(meta)`` (in place)."""
    data = src.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["oneshot"])
    if not keep_digest:
        meta.pop("metadata_sha256", None)
    edit(meta)
    header["__metadata__"]["oneshot"] = json.dumps(meta)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    dest.write_bytes(struct.pack("<Q", len(new)) + new + data[8 + n :])
    return dest


def _drop(key):
    return lambda m: m.pop(key, None)


def _set(path, value):
    def edit(m):
        d = m
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value

    return edit


EDITS = {
    "size 4": _set(["preprocessing", "size"], 4),
    "size -5": _set(["preprocessing", "size"], -5),
    "size huge": _set(["preprocessing", "size"], 10**9),
    "size text": _set(["preprocessing", "size"], "28"),
    "channels 3": _set(["preprocessing", "channels"], 3),
    "channels 0": _set(["preprocessing", "channels"], 0),
    "no preprocessing": _drop("preprocessing"),
    "preprocessing list": _set(["preprocessing"], [28, 1]),
    "invert text": _set(["preprocessing", "invert"], "yes"),
    "method triplet": _set(["method"], "triplet"),
    "method siamese": _set(["method"], "siamese"),
    "method memory": _set(["method"], "memory"),
    "method baseline": _set(["method"], "baseline"),
    "method unknown": _set(["method"], "resnet-magic"),
    "encoder options huge": _set(["encoder_options", "hidden"], 1 << 40),
    "encoder options bad": _set(["encoder_options", "in_channels"], "one"),
    "method options bad": _set(["method_options"], {"memory_size": -1}),
    "options not object": _set(["encoder_options"], [1]),
    "digest gone": _drop("tensors_sha256"),
    "format_version text": _set(["format_version"], "1"),
}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ck") / "enc.safetensors", 0)


def _outcome(path):
    """The loaded model's embedding of a fixed input, or the error (which must be a one-line OneshotError)."""
    try:
        ck = load_checkpoint(path)
    except OneshotError as exc:
        assert "\n" not in str(exc)
        return None
    with torch.no_grad():
        x = torch.zeros(1, 1, 28, 28)
        return ck.method.embed(x).numpy(), ck.metadata


def test_new_checkpoints_carry_a_metadata_checksum(ckpt):
    assert len(read_metadata(ckpt)["metadata_sha256"]) == 64


@pytest.mark.parametrize("name", sorted(EDITS))
@pytest.mark.parametrize("keep_digest", [True, False], ids=["new", "old-style"])
def test_edited_metadata_is_refused_or_harmless(ckpt, tmp_path, name, keep_digest):
    """With the metadata checksum (new saves) every edit is refused; without it (checkpoints saved before the
    checksum existed) the schema and the tensor-shape check refuse what would break, and what loads still
    gives the original model's embeddings."""
    bad = _rewrite_metadata(ckpt, tmp_path / "bad.safetensors", EDITS[name], keep_digest)
    digest = file_digest(bad)
    got = _outcome(bad)
    assert file_digest(bad) == digest
    if keep_digest:
        assert got is None
    elif got is not None:  # e.g. protonet -> triplet: the very same encoder tensors, a valid model of that method
        want = _outcome(ckpt)[0]
        assert got[1]["preprocessing"] == read_metadata(ckpt)["preprocessing"]
        norm = lambda v: v / np.linalg.norm(v)  # noqa: E731 (metric methods may normalise their embeddings)
        np.testing.assert_allclose(norm(got[0]), norm(want), atol=1e-5)


def test_unedited_old_style_checkpoint_still_loads(ckpt, tmp_path):
    old = _rewrite_metadata(ckpt, tmp_path / "old.safetensors", lambda m: None, keep_digest=False)
    assert _outcome(old) is not None


def test_flipped_bytes_give_a_clear_error_or_the_same_model(ckpt, tmp_path):
    data = ckpt.read_bytes()
    want = _outcome(ckpt)[0]
    rng = np.random.default_rng(0)
    for trial in range(60):
        b = bytearray(data)
        for pos in rng.integers(0, len(b), int(rng.integers(1, 4))):
            b[pos] ^= int(rng.integers(1, 256))
        if trial % 10 == 9:
            b = b[: int(rng.integers(0, len(b)))]
        p = tmp_path / f"f{trial}.safetensors"
        p.write_bytes(bytes(b))
        got = _outcome(p)
        assert p.read_bytes() == bytes(b)
        if got is not None:
            np.testing.assert_allclose(got[0], want, atol=1e-6)
