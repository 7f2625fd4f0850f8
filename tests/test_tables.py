"""The README's and docs' result tables are generated from benchmarks/results/*.json (benchmarks/make_tables.py):
the committed documents match their results files, a stale one is reported without being rewritten by ``--check``,
and the tables read what the files record (verification figures, the checkpoint's committed path)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_committed_documents_match_their_results_files():
    run = subprocess.run([sys.executable, "benchmarks/make_tables.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, f"tables out of date -- run python benchmarks/make_tables.py\n{run.stdout}{run.stderr}"


def _row(name: str, method: str, verification: dict | None = None, checkpoint: str | None = None) -> dict:
    ev: dict = {"results": [{"ways": 5, "shots": 1, "accuracy": 0.98, "ci95": 0.002, "episodes": 1000}]}
    if verification:
        ev["verification"] = verification
    row = {"name": name, "method": method, "evaluation": ev}
    if checkpoint:
        row["checkpoint"] = checkpoint
    return row


def test_verification_table_lists_the_rows_scored_on_pairs_in_method_order(tmp_path, monkeypatch):
    import make_tables

    v = {
        "pairs": 20000,
        "seed": 0,
        "similarity": "auto",
        "auc": 0.99,
        "eer": 0.0333,
        "tar_at_far_1e-2": 0.9043,
        "tar_at_far_1e-3": 0.6165,
    }
    rows = {
        "triplet_conv4_vinyals": _row("triplet_conv4_vinyals", "triplet", {**v, "eer": 0.0516}),
        "siamese_conv4_vinyals": _row("siamese_conv4_vinyals", "siamese", v),
        "maml_conv4_vinyals": _row("maml_conv4_vinyals", "maml"),  # no pairs scored: no row
    }
    for name, r in rows.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
    monkeypatch.setattr(make_tables, "RESULTS", tmp_path)
    lines = make_tables.verification_table().splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| siamese", "| triplet"]  # the methods table's order
    assert lines[2] == "| siamese | 90.43 | 61.65 | 0.9900 | 3.33 | 20000 (0), auto |"


def test_the_checkpoint_column_names_where_the_checkpoint_is_committed():
    import make_tables

    shipped = _row("protonet_conv4_vinyals", "protonet", checkpoint="src/oneshot/weights/protonet_conv4_vinyals.safetensors")
    assert make_tables._checkpoint(shipped) == "src/oneshot/weights/protonet_conv4_vinyals.safetensors"
    assert make_tables._checkpoint(_row("memory_conv4_vinyals", "memory")) == "models/memory_conv4_vinyals.safetensors"


def test_check_reports_a_stale_document_and_leaves_it_alone(tmp_path, monkeypatch, capsys):
    import make_tables

    doc = tmp_path / "page.md"
    stale = "intro\n<!-- table:verification -->\n| old |\n<!-- /table:verification -->\nafter\n"
    doc.write_text(stale)
    monkeypatch.setattr(make_tables, "ROOT", tmp_path)
    monkeypatch.setattr(make_tables, "DOCUMENTS", [doc])
    monkeypatch.setattr(sys, "argv", ["make_tables.py", "--check"])
    with pytest.raises(SystemExit) as stop:
        make_tables.main()
    assert stop.value.code == 1 and "page.md" in capsys.readouterr().out and doc.read_text() == stale
    monkeypatch.setattr(sys, "argv", ["make_tables.py"])
    make_tables.main()  # rewrites between the markers only
    text = doc.read_text()
    assert text.startswith("intro\n<!-- table:verification -->\n| method | TAR at FAR 1e-2 %") and text.endswith(
        "<!-- /table:verification -->\nafter\n"
    )
    assert "| old |" not in text


def test_a_row_names_the_models_that_scored_some_of_its_shapes():
    """A shape re-scored by a model trained for it (reevaluate.py --checkpoint) is named in the label, the training
    column adds that model's budget (shape_models) and the checkpoint column lists it after the row's own."""
    import make_tables

    results = [
        {"ways": 5, "shots": 1},
        {"ways": 20, "shots": 1, "checkpoint": "models/reptile20_conv4_vinyals.safetensors"},
        {"ways": 20, "shots": 5, "checkpoint": "models/reptile20_conv4_vinyals.safetensors"},
    ]
    row = {
        "name": "reptile_conv4_vinyals",
        "checkpoint": "models/reptile_conv4_vinyals.safetensors",
        "evaluation": {"results": results},
        "shape_models": [{"train_seconds": 2700, "episodes_run": 1200, "device": "cpu", "shapes": ["20w1s", "20w5s"]}],
    }
    assert make_tables._shape_checkpoints(results) == " (20w1s, 20w5s by reptile20_conv4_vinyals)"
    assert make_tables._shape_checkpoints(results[:1]) == ""
    lake = {"accuracy": 0.7, "checkpoint": "models/reptile20_conv4_vinyals.safetensors"}
    assert make_tables._shape_checkpoints(results[:2], lake) == " (20w1s, Lake by reptile20_conv4_vinyals)"
    assert make_tables._shape_models_training(row) == " + 45 min, 1200 episodes, cpu for 20w1s, 20w5s"
    assert make_tables._shape_models_training({}) == ""
    second = {"train_seconds": 3000, "episodes_run": 1500, "device": "cpu", "shapes": ["20w1s"]}
    second["init_from"] = "models/reptile20_conv4_vinyals.safetensors"  # a stage continued from the first model
    staged = {**row, "shape_models": [{**row["shape_models"][0], "shapes": ["20w5s"]}, second]}
    assert make_tables._shape_models_training(staged) == (
        " + 45 min, 1200 episodes, cpu for 20w5s + 50 more min, 1500 more episodes (from reptile20_conv4_vinyals), cpu for 20w1s"
    )
    superseded = {**row, "shape_models": [{**row["shape_models"][0], "shapes": []}, {**second, "shapes": ["20w1s", "20w5s"]}]}
    assert make_tables._shape_models_training(superseded) == (
        " + 45 min, 1200 episodes, cpu + 50 more min, 1500 more episodes (from reptile20_conv4_vinyals), cpu for 20w1s, 20w5s"
    )
    assert (
        make_tables._checkpoints(row)
        == "`models/reptile_conv4_vinyals.safetensors`; `models/reptile20_conv4_vinyals.safetensors`"
    )
