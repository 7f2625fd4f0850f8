"""The cross-cutting parts of issue 10: the change-log rule, the one atomic write, the method registry, provenance."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from oneshot.errors import OneshotError
from oneshot.files import atomic_path, atomic_write_bytes
from oneshot.gallery import Gallery
from oneshot.methods import METHODS, REGISTRY, build_method
from oneshot.provenance import provenance


def _changes(g: Gallery) -> list[int]:
    return [r[0] for r in g.store.conn.execute("SELECT class_id FROM changes ORDER BY seq")]


def test_template_writes_append_the_change_log_once_per_class_and_roll_back_together(tmp_path):
    rng = np.random.default_rng(0)
    with Gallery.open(tmp_path / "g.db", dim=8) as g:
        g.enrol_many([("a", rng.normal(size=(2, 8))), ("b", rng.normal(size=8)), ("a", rng.normal(size=8))])
        a, b = (c.id for c in g.list())
        assert _changes(g) == [a, b]  # one entry per class changed, however many examples
        g.rename("a", "z")  # no template changed: no entry
        g.set_adaptation("z", 0.1)
        assert _changes(g) == [a, b]
        g.enrol("z", rng.normal(size=8), check=False)
        assert _changes(g) == [a, b, a]
        with pytest.raises(RuntimeError), g.store.write() as tx:
            tx.delete_class(b)
            raise RuntimeError("crash mid-transaction")
        assert _changes(g) == [a, b, a] and len(g) == 2  # the delete and its log entry rolled back together
        assert g.forget("b") == 1 and _changes(g) == [a, b, a, b]


def test_atomic_write_replaces_whole_files_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise ValueError("interrupted")
    assert target.read_bytes() == b"second"
    with atomic_path(target, replace=False) as tmp:  # never replaces an existing file
        tmp.write_bytes(b"third")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]


def test_registry_names_match_classes_and_the_cli_lists_them_without_loading_torch():
    for name in REGISTRY:
        assert METHODS[name].name == name
    with pytest.raises(OneshotError, match="unknown method 'nope'"):
        build_method("nope", None)  # type: ignore[arg-type]
    code = "import sys, oneshot.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_provenance_record_names_command_commit_machine_date_versions():
    rec = provenance("oneshot train --method protonet")
    assert rec["command"] == "oneshot train --method protonet"
    assert rec["commit"] and rec["date"][:2] == "20" and "torch" in rec["machine"] and "torch" in rec["versions"]
