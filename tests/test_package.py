"""The installed package as a user meets it: one version, encoders found by name from any folder."""

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import oneshot
from oneshot.cli import app
from oneshot.errors import OneshotError
from oneshot.weights import SHIPPED, resolve_checkpoint, shipped_path

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_version_has_one_source():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"oneshot {oneshot.__version__}"
    assert f"## {oneshot.__version__}" in (ROOT / "CHANGELOG.md").read_text()


def test_every_shipped_encoder_is_package_data_and_loads():
    from oneshot.checkpoint import load_checkpoint

    package_dir = Path(oneshot.__file__).parent
    for name, entry in SHIPPED.items():
        path = shipped_path(name)
        assert path.parent == package_dir / "weights" and path.name == entry.file
        assert load_checkpoint(path).preprocessing.size == 28
        assert resolve_checkpoint(name) == path
    assert resolve_checkpoint("runs/x.safetensors") == Path("runs/x.safetensors")


def test_encoders_command_lists_the_shipped_ones():
    res = runner.invoke(app, ["encoders", "--json"])
    assert res.exit_code == 0
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert set(SHIPPED) <= set(rows)
    assert rows["omniglot"]["modality"] == "image" and "98.83" in rows["omniglot"]["figures"]


def test_gallery_by_encoder_name_reopens_from_another_folder(tmp_path, monkeypatch):
    from oneshot.gallery import Gallery

    rng = np.random.default_rng(0)
    img = (rng.random((28, 28)) > 0.8).astype(np.uint8) * 255
    from PIL import Image

    Image.fromarray(img).save(tmp_path / "a.png")
    with Gallery.open(tmp_path / "g.gallery", encoder="omniglot") as g:
        g.enrol("a", [tmp_path / "a.png"])
        assert g.info()["encoder_path"] == "omniglot"
    monkeypatch.chdir(tmp_path.parent)
    with Gallery.open(tmp_path / "g.gallery") as g:  # the embedder is reloaded by name, not by a path
        assert g.identify([tmp_path / "a.png"])[0].candidates[0].label == "a"


def test_unknown_encoder_name_is_a_clear_error():
    from oneshot.modalities import load_embedder

    with pytest.raises(OneshotError, match="built-in"):
        load_embedder("no-such-encoder")
