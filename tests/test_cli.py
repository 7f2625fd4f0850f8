"""The CLI as a user runs it: JSON output, tables, and one-line errors with a non-zero exit."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from oneshot.cli import app

runner = CliRunner()


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, vinyals_train, small_val):
    from oneshot.encoders import Conv4
    from oneshot.methods import ProtoNet
    from oneshot.training import TrainConfig, train

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ck") / "protonet.safetensors"
    meta = {
        "encoder": "conv4",
        "encoder_options": {"in_channels": 1},
        "preprocessing": {"size": 28, "channels": 1, "invert": True},
        "data": {"dataset": "omniglot", "split": "vinyals"},
    }
    train(
        ProtoNet(Conv4()),
        vinyals_train,
        small_val,
        TrainConfig(episodes=150, ways=20, queries=5, eval_every=150, val_ways=5, val_episodes=50),
        path,
        meta,
    )
    return path


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_evaluate_json_is_one_object_and_repeatable(checkpoint, omniglot_dir):
    args = [
        "evaluate",
        "--checkpoint",
        checkpoint,
        "--ways",
        5,
        "--shots",
        1,
        "--episodes",
        100,
        "--split",
        "test",
        "--json",
        "--data-dir",
        omniglot_dir,
    ]
    first = run(*args)
    assert first.exit_code == 0, first.output
    obj = json.loads(first.stdout)
    assert {"accuracy", "ci95", "ways", "shots", "episodes", "split", "seed"} <= obj.keys()
    assert (obj["ways"], obj["shots"], obj["episodes"], obj["split"]) == (5, 1, 100, "test")
    assert 0.6 < obj["accuracy"] <= 1 and 0 < obj["ci95"] < 0.1
    assert json.loads(run(*args).stdout) == obj  # same checkpoint, same number


@pytest.mark.slow
def test_evaluate_standard_shapes_and_lake_runs(checkpoint, omniglot_dir):
    res = run(
        "evaluate",
        "--checkpoint",
        checkpoint,
        "--standard",
        "--episodes",
        30,
        "--lake-runs",
        "--json",
        "--data-dir",
        omniglot_dir,
    )
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert [(r["ways"], r["shots"]) for r in obj["results"]] == [(5, 1), (5, 5), (20, 1), (20, 5)]
    assert obj["results"][1]["accuracy"] >= obj["results"][0]["accuracy"] - 0.02  # 5-shot no worse than 1-shot
    assert len(obj["lake_runs"]["errors"]) == 20 and obj["lake_runs"]["accuracy"] > 0.3  # chance is 0.05


def test_evaluate_errors_are_one_line(checkpoint, omniglot_dir, tmp_path):
    res = run("evaluate", "--checkpoint", tmp_path / "nope.safetensors")
    assert res.exit_code == 2 and "does not exist" in res.output and "Traceback" not in res.output
    res = run("evaluate", "--checkpoint", checkpoint, "--ways", 2000, "--episodes", 5, "--data-dir", omniglot_dir)
    assert res.exit_code == 2 and "omniglot vinyals test has 1692 classes, too few for 2000-way episodes" in res.output
    res = run("evaluate", "--checkpoint", checkpoint, "--shots", 10, "--queries", 15, "--episodes", 5, "--data-dir", omniglot_dir)
    assert res.exit_code == 2 and "need 25 examples per class but omniglot vinyals test has 20" in res.output
    res = run("evaluate", "--checkpoint", checkpoint, "--workers", 0, "--episodes", 5, "--data-dir", omniglot_dir)
    assert res.exit_code == 2 and "--workers" in res.output and "Traceback" not in res.output
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(checkpoint.read_bytes()[:500])
    res = run("evaluate", "--checkpoint", truncated)
    assert res.exit_code == 2 and "truncated" in res.output and len(res.output.strip().splitlines()) == 1


def _support_and_queries(tmp_path, data, n_classes=5):
    """One drawing per class as the support set, two other drawings per class as queries."""
    sup, qry = tmp_path / "support", tmp_path / "queries"
    sup.mkdir()
    qry.mkdir()
    truth = {}
    for c in range(n_classes):
        idx = data.class_indices[c * 4]  # rot000 of different characters
        name = f"char{c}"
        for j, i in enumerate(idx[:3]):
            img = Image.fromarray(255 - data.images[i, 0].numpy())  # back to black ink on white, as files are
            if j == 0:
                img.save(sup / f"{name}.png")
            else:
                img.save(qry / f"{name}_{j}.png")
                truth[f"{name}_{j}.png"] = name
    return sup, qry, truth


@pytest.mark.slow
def test_predict_classifies_new_drawings_from_one_example(checkpoint, vinyals_test, tmp_path):
    sup, qry, truth = _support_and_queries(tmp_path, vinyals_test)
    res = run("predict", "--checkpoint", checkpoint, "--support", sup, qry, "--json")
    assert res.exit_code == 0, res.output
    preds = json.loads(res.stdout)["predictions"]
    assert len(preds) == 10
    correct = sum(p["class"] == truth[Path(p["query"]).name] for p in preds)
    assert correct >= 7  # chance is 2 of 10
    assert all(0 < p["probability"] <= 1 for p in preds)
    table = run("predict", "--checkpoint", checkpoint, "--support", sup, qry)
    # the table shows each predicted class (which classes occur depends on the predictions, not on char0 existing)
    assert table.exit_code == 0 and all(p["class"] in table.output for p in preds)


def test_predict_errors(checkpoint, vinyals_test, tmp_path):
    sup, qry, _ = _support_and_queries(tmp_path, vinyals_test, n_classes=3)
    bad = tmp_path / "bad.png"
    bad.write_text("this is not a picture")
    res = run("predict", "--checkpoint", checkpoint, "--support", sup, bad)
    assert res.exit_code == 2 and "not a readable image" in res.output
    nested = tmp_path / "nested"
    (nested / "a").mkdir(parents=True)
    (nested / "b").mkdir()
    Image.new("L", (28, 28)).save(nested / "a" / "x.png")
    res = run("predict", "--checkpoint", checkpoint, "--support", nested, qry)
    assert res.exit_code == 2 and "holds no image" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run("predict", "--checkpoint", checkpoint, "--support", empty, qry)
    assert res.exit_code == 2 and "holds no images" in res.output


def test_console_script_help_and_exit_code(tmp_path):
    exe = Path(sys.executable).parent / "oneshot"
    out = subprocess.run([str(exe), "evaluate", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--episodes" in out.stdout and "--json" in out.stdout
    out = subprocess.run(
        [str(exe), "evaluate", "--checkpoint", str(tmp_path / "missing.safetensors"), "--json"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error:") and "Traceback" not in out.stderr


def test_train_help_names_every_registered_method():
    from oneshot.methods import METHODS

    res = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    missing = [name for name in METHODS if name not in text]
    assert not missing, f"train --help does not name {missing}"


@pytest.mark.slow
def test_demo_with_the_committed_checkpoint_prints_accuracy_and_draws_episodes(omniglot_dir, tmp_path):
    committed = Path(__file__).resolve().parent.parent / "src" / "oneshot" / "weights" / "protonet_conv4_vinyals.safetensors"
    res = run("demo", "--checkpoint", committed, "--episodes", 50, "--out", tmp_path / "demo", "--data-dir", omniglot_dir)
    assert res.exit_code == 0, res.output
    assert "5-way 1-shot on unseen Omniglot alphabets" in res.output and "95% CI" in res.output
    acc = float(res.output.split("5-way 1-shot on unseen Omniglot alphabets: ")[1].split("%")[0])
    assert acc > 95  # the committed ProtoNet; chance is 20%
    png = tmp_path / "demo" / "episodes.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "test-time augmentation" not in res.output and "Lake's 20" not in res.output  # a path: no TTA; Vinyals-split


@pytest.mark.slow
def test_demo_of_a_shipped_lake_split_encoder_uses_its_validated_tta_and_scores_lakes_runs(omniglot_dir, tmp_path):
    """A built-in Lake-split encoder (the small v2 here; the default v4 takes minutes): its validation's TTA choice,
    the Vinyals test alphabets (none of which it saw), and Lake's 20 runs."""
    res = run("demo", "--checkpoint", "omniglot-lake-v2", "--episodes", 20, "--out", tmp_path / "d", "--data-dir", omniglot_dir)
    assert res.exit_code == 0, res.output
    assert "checkpoint: omniglot-lake-v2 (test-time augmentation: shift)" in res.output
    acc = float(res.output.split("20-way 1-shot on unseen Omniglot alphabets: ")[1].split("%")[0])
    lake = float(res.output.split("Lake's 20 official within-alphabet 20-way 1-shot runs: ")[1].split("%")[0])
    assert acc > 85 and lake == 92.5  # 20w1s chance is 5%; Lake's runs as recorded in the inference table
    assert "not a one-shot figure" not in res.output  # the leakage warning stays silent on a clean pair
    plain = run(
        "demo",
        "--checkpoint",
        "omniglot-lake-v2",
        "--tta",
        "none",
        "--episodes",
        1,
        "--out",
        tmp_path / "e",
        "--data-dir",
        omniglot_dir,
    )
    assert plain.exit_code == 0 and "test-time augmentation" not in plain.output and "runs: 89.25%" in plain.output
