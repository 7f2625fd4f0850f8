import json

import pytest
import torch
from safetensors.torch import save_file

from oneshot.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from oneshot.encoders import Conv4
from oneshot.errors import OneshotError
from oneshot.methods import ProtoNet

META = {
    "encoder": "conv4",
    "encoder_options": {"in_channels": 1},
    "preprocessing": {"size": 28, "channels": 1, "invert": True},
    "embedding_dim": 64,
}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    m = ProtoNet(Conv4()).eval()
    path = save_checkpoint(tmp_path / "m.safetensors", m, META)
    return m, path


def test_roundtrip_restores_identical_outputs(saved):
    m, path = saved
    ck = load_checkpoint(path)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(m.embed(x), ck.method.embed(x))
    assert ck.metadata["method"] == "protonet" and ck.preprocessing.size == 28
    assert read_metadata(path)["tensors_sha256"] == ck.metadata["tensors_sha256"]


def test_truncated_checkpoint_is_refused(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[: len(data) - 1000])
    with pytest.raises(OneshotError, match="truncated"):
        load_checkpoint(bad)


def test_other_method_is_refused(saved):
    _, path = saved
    with pytest.raises(OneshotError, match="is a protonet checkpoint, not maml"):
        load_checkpoint(path, expect_method="maml")


def test_weights_that_do_not_match_metadata_are_refused(saved, tmp_path):
    _, path = saved
    meta = read_metadata(path)
    meta["encoder_options"] = {"in_channels": 3}  # metadata now describes another network
    meta.pop("metadata_sha256")  # as in a checkpoint saved before metadata was checksummed (else: "edited")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    other = tmp_path / "other.safetensors"
    save_file(tensors, str(other), metadata={"oneshot": json.dumps(meta)})
    with pytest.raises(OneshotError, match="in_channels|not those of|do not match"):
        load_checkpoint(other)


def test_edited_weights_fail_the_checksum(saved, tmp_path):
    _, path = saved
    meta = read_metadata(path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    key = next(k for k in tensors if k.endswith("weight"))
    tensors[key] = tensors[key] + 1
    edited = tmp_path / "edited.safetensors"
    save_file(tensors, str(edited), metadata={"oneshot": json.dumps(meta)})
    with pytest.raises(OneshotError, match="checksum"):
        load_checkpoint(edited)


def test_plain_safetensors_file_is_not_a_checkpoint(tmp_path):
    p = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(OneshotError, match="not a oneshot checkpoint"):
        load_checkpoint(p)
    with pytest.raises(OneshotError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
