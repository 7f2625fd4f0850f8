"""benchmarks/reevaluate.py (issue 17): ``--lake-only`` scores Lake's 20 runs alone on real Omniglot and keeps every
shape's entry and the provenance of the invocations that scored them."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from tests.conftest import requires_omniglot

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
SHIPPED = ROOT / "src" / "oneshot" / "weights" / "protonet_conv4_vinyals.safetensors"


def _row(tmp_path: Path) -> tuple[Path, list[dict]]:
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "models").mkdir()
    shutil.copyfile(SHIPPED, tmp_path / "models" / "p.safetensors")
    shapes = [{"ways": 5, "shots": 1, "accuracy": 0.5, "ci95": 0.01, "episodes": 1000, "options": {"k": 1}}]
    path = tmp_path / "benchmarks" / "results" / "p.json"
    earlier = {"command": "second", "earlier": [{"command": "first"}], "previous": {"results": []}}
    path.write_text(
        json.dumps({"checkpoint": "models/p.safetensors", "evaluation": {"results": shapes}, "reevaluation": earlier})
    )
    return path, shapes


@requires_omniglot
def test_lake_only_scores_lakes_runs_and_keeps_every_shape(tmp_path, omniglot_dir, monkeypatch):
    import reevaluate

    path, shapes = _row(tmp_path)
    monkeypatch.setattr(reevaluate, "ROOT", tmp_path)
    argv = ["reevaluate.py", "--name", "p", "--lake-only", "--device", "cpu", "--data-dir", str(omniglot_dir)]
    monkeypatch.setattr(sys, "argv", argv)
    reevaluate.main()
    r = json.loads(path.read_text())
    assert r["evaluation"]["results"] == shapes  # the shapes are not touched
    lake = r["evaluation"]["lake_runs"]
    assert lake["runs"] == 20 and len(lake["errors"]) == 20 and 0.5 < lake["accuracy"] <= 1.0
    assert "--lake-only" in r["reevaluation"]["command"] and r["reevaluation"]["previous"]["results"] == shapes
    assert [e["command"] for e in r["reevaluation"]["earlier"]] == ["second", "first"]


def test_lake_only_refuses_shapes(tmp_path, monkeypatch, capsys):
    import reevaluate

    path, _ = _row(tmp_path)
    before = path.read_text()
    monkeypatch.setattr(reevaluate, "ROOT", tmp_path)
    monkeypatch.setattr(sys, "argv", ["reevaluate.py", "--name", "p", "--lake-only", "--shapes", "20x1", "--device", "cpu"])
    with pytest.raises(SystemExit) as exc:
        reevaluate.main()
    assert exc.value.code == 2 and "drop --shapes" in capsys.readouterr().err
    assert path.read_text() == before


@requires_omniglot
def test_checkpoint_scores_the_named_shapes_with_another_model_and_says_so(tmp_path, omniglot_dir, monkeypatch, capsys):
    """--checkpoint: a model trained for some shapes scores them (Nichol et al. train one per number of ways); each
    re-scored entry names it, the other shapes and the row's checkpoint stay."""
    import reevaluate

    path, shapes = _row(tmp_path)
    row = json.loads(path.read_text())
    path.write_text(json.dumps({**row, "method": "protonet"}))
    shutil.copyfile(SHIPPED, tmp_path / "models" / "twenty_way.safetensors")
    shutil.copyfile(ROOT / "models" / "memory_conv4_vinyals.safetensors", tmp_path / "models" / "memory.safetensors")
    monkeypatch.setattr(reevaluate, "ROOT", tmp_path)
    base = ["reevaluate.py", "--name", "p", "--device", "cpu", "--data-dir", str(omniglot_dir), "--episodes", "20"]
    for extra, message in (
        (["--checkpoint", str(tmp_path / "models" / "twenty_way.safetensors")], "name them with --shapes"),
        (["--shapes", "20x1", "--checkpoint", str(tmp_path / "models" / "memory.safetensors")], "is a memory checkpoint"),
    ):
        monkeypatch.setattr(sys, "argv", base + extra)
        with pytest.raises(SystemExit) as exc:
            reevaluate.main()
        assert exc.value.code == 2 and message in capsys.readouterr().err
    argv = base + ["--shapes", "20x1", "--no-lake", "--checkpoint", str(tmp_path / "models" / "twenty_way.safetensors")]
    monkeypatch.setattr(sys, "argv", argv)
    reevaluate.main()
    ev = json.loads(path.read_text())["evaluation"]
    assert ev["checkpoint"] == "models/p.safetensors" and ev["results"][0] == shapes[0]  # the row and 5w1s stay
    twenty = ev["results"][1]
    assert (twenty["ways"], twenty["shots"], twenty["episodes"]) == (20, 1, 20) and 0.5 < twenty["accuracy"] <= 1.0
    assert twenty["checkpoint"] == "models/twenty_way.safetensors"


@requires_omniglot
def test_block_scoring_survives_a_killed_invocation_and_equals_one_run(tmp_path, omniglot_dir, monkeypatch, capsys):
    """--block: a shape scored 10 episodes at a time, the invocation killed after its first block, then run again:
    it continues from episode 10 and the entry equals one uninterrupted 30-episode run; other settings refuse the
    partial file."""
    import reevaluate

    path, _ = _row(tmp_path)
    monkeypatch.setattr(reevaluate, "ROOT", tmp_path)
    base = ["reevaluate.py", "--name", "p", "--device", "cpu", "--data-dir", str(omniglot_dir), "--episodes", "30"]
    base += ["--shapes", "5x1", "--no-lake"]
    monkeypatch.setattr(sys, "argv", base)
    reevaluate.main()
    whole = json.loads(path.read_text())["evaluation"]["results"][0]
    real, calls = reevaluate.evaluate_checkpoint, []

    def killed_after_one_block(*a, **kw):
        calls.append(kw["start"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(reevaluate, "evaluate_checkpoint", killed_after_one_block)
    monkeypatch.setattr(sys, "argv", base + ["--block", "10"])
    with pytest.raises(KeyboardInterrupt):
        reevaluate.main()
    partial = reevaluate.partial_path("p", (5, 1))
    assert calls == [0, 10] and len(json.loads(partial.read_text())["per_episode"]) == 10
    monkeypatch.setattr(sys, "argv", base + ["--block", "10", "--option", "test_steps=3"])
    with pytest.raises(SystemExit, match="other settings"):
        reevaluate.main()
    monkeypatch.setattr(reevaluate, "evaluate_checkpoint", real)
    monkeypatch.setattr(sys, "argv", base + ["--block", "10"])
    reevaluate.main()
    assert "continuing from episode 10" in capsys.readouterr().out
    blocked = json.loads(path.read_text())["evaluation"]["results"][0]
    assert [b["episodes"] for b in blocked.pop("blocks")] == [[0, 10], [10, 20], [20, 30]]
    assert blocked["episodes"] == 30 and blocked["accuracy"] == pytest.approx(whole["accuracy"], abs=1e-9)
    assert blocked["ci95"] == pytest.approx(whole["ci95"], abs=1e-9) and not partial.exists()
