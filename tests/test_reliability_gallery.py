"""Issue 11, gallery side: re-embedding against concurrent writers, the index cache bound to its gallery and
checked, imports validated all or nothing, failing commands that leave stored data as it was."""

from __future__ import annotations

import numpy as np
import pytest
from reliability_util import HashEmbedder

from oneshot import Gallery
from oneshot.errors import OneshotError


def _stored(g: Gallery) -> list[tuple[int, bytes, bytes]]:
    return g.store.conn.execute("SELECT class_id, input, embedding FROM examples ORDER BY id").fetchall()


def test_reembed_racing_an_enrolment_spoils_nothing(tmp_path):
    """An enrolment committed while a re-embed is embedding is re-embedded too (failed on the old code: the
    late example kept the old encoder's vector under the new fingerprint)."""
    path = tmp_path / "g.db"
    old, new = HashEmbedder(1), HashEmbedder(2)
    with Gallery.open(path, old) as g:
        for i in range(6):
            g.enrol(f"c{i}", [f"c{i}-a".encode(), f"c{i}-b".encode()], check=False)

    def enrol_meanwhile() -> None:  # another writer (own connection) enrols with the old encoder
        with Gallery.open(path, HashEmbedder(1)) as other:
            other.enrol("late", [b"late-a", b"late-b"], check=False)
            other.enrol("c0", [b"c0-c"], check=False)

    with Gallery.open(path, old) as g:
        g.reembed(HashEmbedder(2, hook=enrol_meanwhile))
    with Gallery.open(path, new) as g:
        rows = _stored(g)
        assert len(rows) == 15
        for _, data, emb in rows:  # every example holds the new encoder's vector of its own input
            np.testing.assert_allclose(np.frombuffer(emb, np.float32), new.vector(data), atol=1e-6)
        for label, first in [("late", b"late-a"), ("c0", b"c0-a"), ("c3", b"c3-a")]:
            assert g.identify(new.vector(first)[None], k=1)[0].candidates[0].label == label


def test_enrolment_prepared_before_a_reembed_is_refused(tmp_path):
    """An enrolment embedded with the old encoder that commits after a re-embed is refused, nothing written."""
    path = tmp_path / "g.db"
    with Gallery.open(path, HashEmbedder(1)) as g:
        g.enrol("a", [b"a"], check=False)

    def reembed_meanwhile() -> None:
        with Gallery.open(path, HashEmbedder(1)) as other:
            other.reembed(HashEmbedder(2))

    with Gallery.open(path, HashEmbedder(1, hook=reembed_meanwhile)) as g:
        with pytest.raises(OneshotError, match="re-embedded"):
            g.enrol("b", [b"b"], check=False)
    with Gallery.open(path, HashEmbedder(2)) as g:
        assert [c.label for c in g.list()] == ["a"]
        np.testing.assert_allclose(np.frombuffer(_stored(g)[0][2], np.float32), HashEmbedder(2).vector(b"a"), atol=1e-6)
