"""benchmarks/train_and_evaluate.py (issue 17): ``--test-episodes 0`` trains a candidate and chooses its checkpoint
on validation while its test split stays unread (scored later with reevaluate.py, once chosen)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.conftest import requires_omniglot

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


@requires_omniglot
def test_zero_test_episodes_trains_and_leaves_the_test_split_unread(tmp_path, omniglot_dir, monkeypatch, capsys):
    import train_and_evaluate

    monkeypatch.setattr(train_and_evaluate, "ROOT", tmp_path)
    argv = [
        "train_and_evaluate.py", "--name", "candidate", "--method", "protonet", "--data-dir", str(omniglot_dir),
        "--episodes", "4", "--eval-every", "4", "--val-episodes", "3", "--val-ways", "5", "--ways", "5",
        "--queries", "2", "--test-episodes", "0", "--no-copy",
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    train_and_evaluate.main()
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "benchmarks" / "results" / "candidate.json").read_text())
    assert result["training"]["episodes_run"] == 4 and len(result["training"]["history"]) == 1
    assert result["evaluation"]["results"] == [] and "reevaluate.py" in result["evaluation"]["not_scored"]
    assert "-way" not in out and "Lake" not in out  # no test figure printed
    assert (tmp_path / "benchmarks" / "runs" / "candidate.safetensors").is_file()
    assert not (tmp_path / "models").exists()
