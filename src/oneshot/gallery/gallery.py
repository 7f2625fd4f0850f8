"""``Gallery``: enrol classes from one example, identify, verify, reject strangers -- persistent and exact.

The SQLite store (:mod:`oneshot.gallery.store`) is the truth; the FAISS index (:mod:`oneshot.gallery.index`)
is a cache caught up from the store's change log before every search. Each class has one *template*: the
L2-normalised mean of its examples' L2-normalised embeddings (its prototype), optionally adapted over time.
Scores are cosine similarities in [-1, 1]; higher means more alike.

Example::

    from oneshot import Gallery

    with Gallery.open("desk.gallery", encoder="omniglot-lake") as g:
        print(g.enrol("alice", ["alice.png"]).warnings)
        g.calibrate_folder("validation_people/", target_far=1e-3)
        print(g.identify(["visitor.png"], k=3)[0].label)    # a label, or None for "unknown"
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oneshot.errors import OneshotError
from oneshot.gallery import calibration
from oneshot.modalities import Embedder, Example, Inline, check_vectors, fingerprint_id, fingerprint_modality, load_embedder, vector_fingerprint
from oneshot.modalities.base import read_file
from oneshot.gallery.index import IndexSettings, TemplateIndex
from oneshot.gallery.store import Store, from_blob, to_blob

STORE_MODES = ("inputs", "paths", "none")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_ADAPT_RATE = 0.5
_CHUNK = 500


def _now() -> str:
    from oneshot.checkpoint import now_iso

    return now_iso()


def _unit(v: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation of (B, D) (or (D,))."""
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return (v / np.maximum(n, 1e-12)).astype(np.float32)


def _check_label(label: str) -> str:
    if not isinstance(label, str) or not label.strip():
        raise OneshotError("a class label must be a non-empty string")
    label = label.strip()
    if len(label) > 256 or _CONTROL.search(label):
        raise OneshotError(f"label {label[:40]!r}... is too long or holds control characters: use a short plain name")
    return label


@dataclass
class Match:
    """One candidate class and its cosine similarity to the query."""

    label: str
    score: float


@dataclass
class Identification:
    """The answer for one query: ``label`` is the best class, or None ("unknown") when its score is below
    ``threshold``; without a threshold (not calibrated) the best class is returned and ``calibrated`` is False."""

    label: str | None
    score: float
    candidates: list[Match]
    threshold: float | None

    @property
    def known(self) -> bool:
        return self.label is not None

    @property
    def calibrated(self) -> bool:
        return self.threshold is not None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label if self.label is not None else "unknown", "known": self.known, "score": self.score,
                "threshold": self.threshold, "candidates": [asdict(m) for m in self.candidates]}


@dataclass
class Verification:
    """Accept or reject a claimed class: ``score`` >= ``threshold``; ``adapted`` when the template moved."""

    label: str
    score: float
    accepted: bool
    threshold: float
    adapted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EnrolReport:
    """What an enrolment did and whether its examples look trustworthy.

    Attributes:
        label: the class.
        created: True when the class is new (else its template was refined).
        examples_added / n_examples: examples added now / held in total.
        self_scores: for each new example, its score against the class's *other* examples' prototype
            (None when it is the class's only example).
        nearest_other: the closest other class to the new examples and its score.
        warnings: ``ambiguous: ...`` (an example is as close to another class as the acceptance threshold, or
            closer than to its own class) and ``uncharacteristic: ...`` (far from the class's other examples).
        notes: what could not be checked (e.g. no threshold yet).
    """

    label: str
    created: bool
    examples_added: int
    n_examples: int
    self_scores: list[float | None] = field(default_factory=list)
    nearest_other: Match | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClassInfo:
    """One enrolled class as listed."""

    id: int
    label: str
    n_examples: int
    adapt_rate: float
    adaptations: int
    created: str
    updated: str
    metadata: dict[str, Any]


@dataclass
class _Prepared:
    """Validated examples of one enrolment: unit embeddings (n, D) and what is stored with each."""

    label: str
    vectors: np.ndarray
    inputs: list[bytes | None]
    paths: list[str | None]
    sources: list[str]
    metadata: dict[str, Any] | None = None


class Gallery:
    """A persistent gallery of classes, each enrolled from as little as one example. Use :meth:`open`."""

    def __init__(self, store: Store, encoder: Embedder | None) -> None:
        self.store = store
        self.path = store.path
        self._encoder = encoder
        meta = store.all_meta()
        self.dim = int(meta["dim"])
        self.fingerprint: dict[str, Any] = meta["fingerprint"]
        self.store_mode: str = meta.get("store", "inputs")
        self.settings = IndexSettings.from_dict(meta.get("index"))
        self._index: TemplateIndex | None = None
        self._gen = 0
        self._epoch = int(meta.get("epoch", 0))
        self._saved_gen = -1

    # ================================================================== opening
    @classmethod
    def open(
        cls,
        path: str | Path,
        encoder: str | Path | Embedder | None = None,
        *,
        create: bool = True,
        dim: int | None = None,
        store: str = "inputs",
        approx_above: int | None = None,
        ef_search: int | None = None,
        name: str = "vectors",
        approx_kind: str | None = None,
    ) -> "Gallery":
        """Open the gallery at ``path``, creating it when missing (and ``create``).

        Args:
            path: the gallery file (SQLite); its index cache is ``<path>.faiss``.
            encoder: a checkpoint path or an :class:`Encoder`. An existing gallery refuses an encoder with another
                fingerprint; when None, the checkpoint recorded at creation is loaded on first use.
            create: create a missing gallery (else it is an error).
            dim: for a new gallery without an encoder: the size of the embeddings it will be given.
            store: what a new gallery keeps of each example besides its embedding: ``inputs`` (the bytes, so
                ``reembed`` works anywhere), ``paths`` (absolute paths) or ``none``.
            approx_above: search approximately (HNSW) above this many classes (saved with the gallery).
            ef_search: HNSW search beam width (saved with the gallery).
            name: fingerprint name of a vector gallery (no encoder).
            approx_kind: which approximate index (``hnsw``, ``hnsw_sq8``, ``ivf_flat``, ``ivf_sq8``, ``ivf_pq``;
                saved with the gallery; see :mod:`oneshot.gallery.index`).
        """
        path = Path(path)
        from oneshot.gallery.index import APPROX_KINDS

        if approx_kind is not None and approx_kind not in APPROX_KINDS:  # before anything is created
            raise OneshotError(f"unknown index kind {approx_kind!r}: choose one of {', '.join(APPROX_KINDS)}")
        enc = cls._load_encoder(encoder)
        if path.exists():
            st = Store.open(path)
        else:
            if not create:
                raise OneshotError(f"gallery {path} does not exist: create it with `oneshot gallery create`")
            if store not in STORE_MODES:
                raise OneshotError(f"unknown store mode {store!r}: choose one of {', '.join(STORE_MODES)}")
            if enc is None and dim is None:
                raise OneshotError("a new gallery needs an encoder checkpoint (or, for precomputed vectors, their dim)")
            if enc is not None and dim is not None and dim != enc.dim:
                raise OneshotError(f"dim {dim} does not match the encoder's {enc.dim}: leave dim out")
            fp = enc.fingerprint if enc is not None else vector_fingerprint(int(dim), name)  # type: ignore[arg-type]
            settings = IndexSettings()
            meta = {"fingerprint": fp, "dim": int(fp["dim"]), "store": store, "index": settings.to_dict(),
                    "encoder_path": enc.spec if enc is not None else None,
                    "threshold": None, "calibration": None, "created": _now()}
            st = Store.create(path, meta)
        g = cls(st, None)
        if enc is not None:
            g._check_encoder(enc)
            g._encoder = enc
        if approx_above is not None or ef_search is not None or approx_kind is not None:
            g.set_index_settings(approx_above=approx_above, ef_search=ef_search, approx_kind=approx_kind)
        return g

    @staticmethod
    def _load_encoder(encoder: str | Path | Embedder | None) -> Embedder | None:
        return None if encoder is None else load_embedder(encoder)

    def _check_encoder(self, enc: Embedder) -> None:
        if fingerprint_id(enc.fingerprint) != fingerprint_id(self.fingerprint):
            raise OneshotError(
                f"gallery {self.path} was built with encoder {fingerprint_id(self.fingerprint)} "
                f"({self.fingerprint.get('kind')}), this one is {fingerprint_id(enc.fingerprint)}: use the gallery's "
                "encoder, or move the gallery to the new one with `oneshot gallery reembed`")

    @property
    def modality(self) -> str:
        """What the gallery's examples are: ``image``, ``text``, ``molecule``, or ``vectors`` (no embedder)."""
        return fingerprint_modality(self.fingerprint)

    @property
    def encoder(self) -> Embedder:
        """The gallery's embedder, loaded from the recorded spec (built-in name or path) on first use."""
        if self._encoder is None:
            if self.modality == "vectors":
                raise OneshotError(f"gallery {self.path} holds precomputed vectors and has no encoder: give embeddings, not files")
            where = self.store.get_meta("encoder_path")
            if not where:
                raise OneshotError(f"gallery {self.path} records no encoder: pass --encoder")
            try:
                enc = load_embedder(where)
            except OneshotError as exc:
                raise OneshotError(f"the encoder of gallery {self.path} ({where}) cannot be loaded ({exc}): pass --encoder") from None
            self._check_encoder(enc)
            self._encoder = enc
        return self._encoder

    def close(self) -> None:
        """Save the index cache when it moved on since it was loaded, then close the database."""
        try:
            if self._index is not None and self._gen != self._saved_gen:
                self.save_index()
        finally:
            self.store.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ================================================================== index cache
    @property
    def index_path(self) -> Path:
        return self.path.with_name(self.path.name + ".faiss")

    def save_index(self) -> None:
        """Write the index cache (atomically) with its epoch and generation."""
        idx = self._ensure_index()
        idx.save(self.index_path, self._epoch, self._gen)
        self._saved_gen = self._gen

    def _read_all_templates(self, conn: sqlite3.Connection) -> tuple[np.ndarray, np.ndarray]:
        ids: list[int] = []
        blobs: list[bytes] = []
        cur = conn.execute("SELECT id, template FROM classes ORDER BY id")
        while rows := cur.fetchmany(65536):
            for i, b in rows:
                ids.append(i)
                blobs.append(b)
        if not ids:
            return np.zeros(0, np.int64), np.zeros((0, self.dim), np.float32)
        t = np.frombuffer(b"".join(blobs), dtype=np.float32)
        if t.size != len(ids) * self.dim:
            raise OneshotError(f"gallery {self.path} holds templates of the wrong size: it is damaged; restore it from an export")
        return np.asarray(ids, np.int64), t.reshape(len(ids), self.dim)

    def _templates_of(self, conn: sqlite3.Connection, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        got_ids, got = [], []
        ids = list(ids)
        for s in range(0, len(ids), _CHUNK):
            part = ids[s:s + _CHUNK]
            q = f"SELECT id, template FROM classes WHERE id IN ({','.join('?' * len(part))})"
            for i, b in conn.execute(q, part):
                got_ids.append(i)
                got.append(from_blob(b, self.dim))
        return np.asarray(got_ids, np.int64), (np.stack(got) if got else np.zeros((0, self.dim), np.float32))

    def _refresh_meta(self, conn: sqlite3.Connection) -> None:
        """After another process re-embedded the gallery: reload dim and fingerprint, refuse a stale encoder."""
        meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        self.dim = int(meta["dim"])
        self.fingerprint = meta["fingerprint"]
        self._epoch = int(meta.get("epoch", 0))
        self.settings = IndexSettings.from_dict(meta.get("index"))
        if self._encoder is not None and fingerprint_id(self._encoder.fingerprint) != fingerprint_id(self.fingerprint):
            self._encoder = None
            raise OneshotError(f"gallery {self.path} was re-embedded with another encoder meanwhile: reopen it with that encoder")

    def _ensure_index(self) -> TemplateIndex:
        """The index, caught up with every change committed so far (loaded, caught up or rebuilt)."""
        with self.store.read() as conn:
            gen = self.store.generation(conn)
            epoch = int(json.loads(conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]))
            if epoch != self._epoch:
                self._refresh_meta(conn)
                self._index = None
            if self._index is not None and self._gen == gen:
                return self._index  # nothing changed since the last search
            n = int(conn.execute("SELECT COUNT(*) FROM classes").fetchone()[0])
            if self._index is None and self.index_path.is_file():
                loaded = TemplateIndex.load(self.index_path, self.settings)
                if loaded is not None:
                    idx, f_epoch, f_gen = loaded
                    if f_epoch == self._epoch and idx.dim == self.dim and f_gen <= gen:
                        self._index, self._gen, self._saved_gen = idx, f_gen, f_gen
            if self._index is not None and self._gen < gen:
                changed = np.array([r[0] for r in conn.execute(
                    "SELECT DISTINCT class_id FROM changes WHERE seq > ? AND seq <= ?", (self._gen, gen))], np.int64)
                if len(changed) > max(10000, n // 2):
                    self._index = None
                else:
                    present, templates = self._templates_of(conn, changed.tolist())
                    self._index.apply(changed, present, templates)
                    self._gen = gen
            if self._index is not None and (self._index.live != n or self._index.wants_rebuild(n)):
                self._index = None
            if self._index is None:
                ids, templates = self._read_all_templates(conn)
                self._index = TemplateIndex.build(self.dim, ids, templates, self.settings)
                self._gen = gen
        return self._index

    # ================================================================== inputs -> embeddings
    def _prepare(self, label: str, examples: Sequence[Example] | np.ndarray, metadata: dict | None = None) -> _Prepared:
        """Validate and embed one enrolment's examples before anything is written."""
        label = _check_label(label)
        if isinstance(examples, (str, Path, bytes, Inline)):
            examples = [examples]
        if isinstance(examples, np.ndarray) and examples.dtype != object:
            if examples.ndim not in (1, 2):
                raise OneshotError(f"examples of {label!r} have shape {examples.shape}: give (D,) or (n, D) embeddings")
            examples = list(np.atleast_2d(examples))
        if examples is None or len(examples) == 0:
            raise OneshotError(f"no examples given for {label!r}: enrol at least one")
        vec_rows: dict[int, np.ndarray] = {}
        raw: list[tuple[int, bytes, str, str | None]] = []
        for i, ex in enumerate(examples):
            if isinstance(ex, np.ndarray):
                vec_rows[i] = check_vectors(ex, self.dim, f"example {i} of {label!r}")[0]
            else:
                r = self.encoder.read(ex)
                raw.append((i, r.data, r.name, r.path))
        vectors = np.zeros((len(examples), self.dim), np.float32)
        inputs: list[bytes | None] = [None] * len(examples)
        paths: list[str | None] = [None] * len(examples)
        sources = ["vector"] * len(examples)
        for i, v in vec_rows.items():
            vectors[i] = v
        if raw:
            emb = self.encoder.embed([r[1] for r in raw], [r[2] for r in raw])
            emb = check_vectors(emb, self.dim, f"the encoder's embedding of {label!r}")
            for (i, data, name, p), v in zip(raw, emb):
                vectors[i] = v
                sources[i] = name
                if self.store_mode == "inputs":
                    inputs[i] = data
                elif self.store_mode == "paths":
                    paths[i] = p
        return _Prepared(label, vectors, inputs, paths, sources, metadata)

    def embed(self, queries: Sequence[Example] | np.ndarray) -> np.ndarray:
        """Queries (files, bytes or (D,)/(B, D) embeddings) -> L2-normalised float32 (B, D)."""
        if isinstance(queries, np.ndarray) and queries.dtype != object:
            return check_vectors(queries, self.dim, "query")
        if isinstance(queries, (str, Path, bytes, Inline)):
            queries = [queries]
        if len(queries) == 0:
            raise OneshotError("no queries given")
        out = np.zeros((len(queries), self.dim), np.float32)
        raw = []
        for i, q in enumerate(queries):
            if isinstance(q, np.ndarray):
                out[i] = check_vectors(q, self.dim, f"query {i}")[0]
            else:
                r = self.encoder.read(q)
                raw.append((i, r.data, r.name))
        if raw:
            emb = check_vectors(self.encoder.embed([r[1] for r in raw], [r[2] for r in raw]), self.dim, "the encoder's embedding")
            for (i, _, _), v in zip(raw, emb):
                out[i] = v
        return out

    # ================================================================== enrolment
    def _existing(self, conn: sqlite3.Connection, labels: list[str]) -> dict[str, tuple[int, int]]:
        found: dict[str, tuple[int, int]] = {}
        for s in range(0, len(labels), _CHUNK):
            part = labels[s:s + _CHUNK]
            q = f"SELECT label, id, n_examples FROM classes WHERE label IN ({','.join('?' * len(part))})"
            for lab, i, n in conn.execute(q, part):
                found[lab] = (i, n)
        return found

    def _example_vectors(self, conn: sqlite3.Connection, class_id: int) -> np.ndarray:
        rows = conn.execute("SELECT embedding FROM examples WHERE class_id = ? ORDER BY id", (class_id,)).fetchall()
        return np.stack([from_blob(r[0], self.dim) for r in rows]) if rows else np.zeros((0, self.dim), np.float32)

    def _write(self, conn: sqlite3.Connection, items: list[_Prepared]) -> list[tuple[int, bool, int]]:
        """Insert or refine the classes of ``items`` inside the caller's transaction.
        Returns (class id, created, total examples) per item."""
        now = _now()
        merged: dict[str, _Prepared] = {}
        for it in items:  # the same label twice in one batch is one enrolment of all its examples
            if it.label in merged:
                m = merged[it.label]
                merged[it.label] = _Prepared(it.label, np.concatenate([m.vectors, it.vectors]), m.inputs + it.inputs,
                                             m.paths + it.paths, m.sources + it.sources, m.metadata or it.metadata)
            else:
                merged[it.label] = it
        existing = self._existing(conn, list(merged))
        result: dict[str, tuple[int, bool, int]] = {}
        new = [it for lab, it in merged.items() if lab not in existing]
        if new:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'classes'").fetchone()
            first = (int(row[0]) if row else 0) + 1
            ids = range(first, first + len(new))
            conn.executemany(
                "INSERT INTO classes (id, label, template, n_examples, metadata, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(cid, it.label, to_blob(it.vectors[0] if len(it.vectors) == 1 else _unit(it.vectors.mean(0))), len(it.vectors),
                  json.dumps(it.metadata) if it.metadata else "{}", now, now) for cid, it in zip(ids, new)])
            for cid, it in zip(ids, new):
                result[it.label] = (cid, True, len(it.vectors))
        examples = []
        for it in merged.values():
            if it.label in existing:
                cid, _ = existing[it.label]
                allv = np.concatenate([self._example_vectors(conn, cid), it.vectors])
                meta_sql, meta_args = ("", ()) if it.metadata is None else (", metadata = ?", (json.dumps(it.metadata),))
                conn.execute(f"UPDATE classes SET template = ?, n_examples = ?, adaptations = 0, updated = ?{meta_sql} WHERE id = ?",
                             (to_blob(_unit(allv.mean(0))), len(allv), now, *meta_args, cid))
                result[it.label] = (cid, False, len(allv))
            cid = result[it.label][0]
            examples.extend((cid, to_blob(v), inp, p, src, now)
                            for v, inp, p, src in zip(it.vectors, it.inputs, it.paths, it.sources))
        conn.executemany("INSERT INTO examples (class_id, embedding, input, input_path, source, added) VALUES (?, ?, ?, ?, ?, ?)", examples)
        conn.executemany("INSERT INTO changes (class_id) VALUES (?)", [(r[0],) for r in result.values()])
        return [result[it.label] for it in items]

    def _quality(self, prep: _Prepared, report: EnrolReport, own_id: int | None, previous: np.ndarray) -> None:
        """Fill the report's self scores, nearest other class and warnings (before the write)."""
        th = self.thresholds()["verify"]
        if th is None:
            report.notes.append("no threshold yet: run calibrate for ambiguity warnings")
        allv = np.concatenate([previous, prep.vectors])
        n_prev = len(previous)
        for j in range(len(prep.vectors)):
            others = np.delete(allv, n_prev + j, axis=0)
            if len(others) == 0:
                report.self_scores.append(None)
                continue
            s_self = float(prep.vectors[j] @ _unit(others.mean(0)))
            report.self_scores.append(s_self)
            if th is not None and s_self < th:
                report.warnings.append(f"uncharacteristic: example {j} scores {s_self:.3f} against the class's other "
                                       f"examples, below the acceptance threshold {th:.3f}; check it is really {prep.label!r}")
            elif len(others) >= 3:
                loo = np.array([float(others[i] @ _unit(np.delete(others, i, 0).mean(0))) for i in range(len(others))])
                floor = float(loo.mean() - 3 * loo.std())
                if s_self < floor:
                    report.warnings.append(f"uncharacteristic: example {j} scores {s_self:.3f} against the class's other "
                                           f"examples, far below theirs ({loo.mean():.3f} +- {loo.std():.3f})")
        idx = self._ensure_index()
        if idx.live == 0:
            return
        scores, ids = idx.search(prep.vectors, min(3, idx.live))
        best: tuple[float, int, int] | None = None
        for j in range(len(prep.vectors)):
            for s, i in zip(scores[j], ids[j]):
                if i >= 0 and i != own_id:
                    if best is None or s > best[0]:
                        best = (float(s), int(i), j)
                    break
        if best is None:
            return
        row = self.store.conn.execute("SELECT label FROM classes WHERE id = ?", (best[1],)).fetchone()
        if row is None:
            return
        report.nearest_other = Match(row[0], best[0])
        for j in range(len(prep.vectors)):
            for s, i in zip(scores[j], ids[j]):
                if i < 0 or i == own_id:
                    continue
                other = self.store.conn.execute("SELECT label FROM classes WHERE id = ?", (int(i),)).fetchone()
                name = other[0] if other else f"#{i}"
                s_self = report.self_scores[j]
                if th is not None and s >= th:
                    report.warnings.append(f"ambiguous: example {j} scores {s:.3f} against {name!r}, above the acceptance "
                                           f"threshold {th:.3f}; it may be confused with that class")
                elif s_self is not None and s > s_self:
                    report.warnings.append(f"ambiguous: example {j} is closer to {name!r} ({s:.3f}) than to its own class ({s_self:.3f})")
                break

    def enrol(self, label: str, examples: Sequence[Example] | np.ndarray, *, metadata: dict[str, Any] | None = None,
              check: bool = True) -> EnrolReport:
        """Enrol ``label`` from one or more examples (files, bytes or embeddings); an existing label is refined.

        The whole enrolment is one transaction: it is wholly present or wholly absent.

        Args:
            label: the class name.
            examples: one or more examples; embeddings are (D,) each or (n, D).
            metadata: JSON-able details to keep with the class (replaces earlier metadata).
            check: compute the quality report's warnings (one search).
        """
        prep = self._prepare(label, examples, metadata)
        row = self.store.conn.execute("SELECT id FROM classes WHERE label = ?", (prep.label,)).fetchone()
        previous = self._example_vectors(self.store.conn, row[0]) if row else np.zeros((0, self.dim), np.float32)
        report = EnrolReport(prep.label, row is None, len(prep.vectors), len(previous) + len(prep.vectors))
        if check:
            self._quality(prep, report, row[0] if row else None, previous)
        with self.store.write() as conn:
            _, created, total = self._write(conn, [prep])[0]
        report.created, report.n_examples = created, total
        return report

    def enrol_many(self, items: Iterable[tuple[str, Sequence[Example] | np.ndarray]], *, batch: int = 1000) -> int:
        """Bulk enrolment without quality checks: ``batch`` enrolments per transaction (each enrolment is
        still wholly present or absent). Returns the number of enrolments written."""
        done = 0
        pending: list[_Prepared] = []
        for label, examples in items:
            pending.append(self._prepare(label, examples))
            if len(pending) >= batch:
                with self.store.write() as conn:
                    self._write(conn, pending)
                done += len(pending)
                pending = []
        if pending:
            with self.store.write() as conn:
                self._write(conn, pending)
            done += len(pending)
        return done

    def enrol_vectors(self, labels: Sequence[str], vectors: np.ndarray, *, batch: int = 10000) -> int:
        """Fast bulk enrolment of one embedding per label: labels (N,), vectors (N, D)."""
        vectors = np.asarray(vectors)
        if len(labels) != len(vectors):
            raise OneshotError(f"{len(labels)} labels for {len(vectors)} vectors: give one label per vector")
        done = 0
        for s in range(0, len(labels), batch):
            v = check_vectors(vectors[s:s + batch], self.dim, "vectors")
            items = [_Prepared(_check_label(lab), v[i:i + 1], [None], [None], ["vector"]) for i, lab in enumerate(labels[s:s + batch])]
            with self.store.write() as conn:
                self._write(conn, items)
            done += len(items)
        return done

    # ================================================================== queries
    def thresholds(self) -> dict[str, float | None]:
        """The current ``identify`` and ``verify`` thresholds (None when not set)."""
        t = self.store.get_meta("threshold") or {}
        return {"identify": t.get("identify"), "verify": t.get("verify")}

    def _labels(self, ids: Iterable[int]) -> dict[int, str]:
        ids = sorted({int(i) for i in ids if i >= 0})
        out: dict[int, str] = {}
        for s in range(0, len(ids), _CHUNK):
            part = ids[s:s + _CHUNK]
            out.update(self.store.conn.execute(f"SELECT id, label FROM classes WHERE id IN ({','.join('?' * len(part))})", part).fetchall())
        return out

    def search(self, queries: Sequence[Example] | np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Raw top-k: (B, k) cosine scores and (B, k) class ids (-1 pads) -- for benchmarks and batch work."""
        q = self.embed(queries)
        idx = self._ensure_index()
        if idx.live == 0:
            raise OneshotError(f"gallery {self.path} is empty: enrol a class first")
        return idx.search(q, max(1, min(k, idx.live)))

    def identify(self, queries: Sequence[Example] | np.ndarray, k: int = 5) -> list[Identification]:
        """Top-k classes for each query, and "unknown" (``label`` None) when the best is below the threshold."""
        if k < 1:
            raise OneshotError("k must be at least 1")
        scores, ids = self.search(queries, k)
        names = self._labels(ids.ravel())
        th = self.thresholds()["identify"]
        out = []
        for srow, irow in zip(scores, ids):
            cands = [Match(names[int(i)], float(s)) for s, i in zip(srow, irow) if int(i) in names]
            best = cands[0] if cands else None
            known = best is not None and (th is None or best.score >= th)
            out.append(Identification(best.label if known else None, best.score if best else float("-inf"), cands, th))
        return out

    def _class_row(self, label: str) -> tuple:
        row = self.store.conn.execute(
            "SELECT id, template, adapt_rate, adapt_min_score, metadata FROM classes WHERE label = ?", (label,)).fetchone()
        if row is None:
            raise OneshotError(f"no class {label!r} in gallery {self.path}: see `oneshot gallery list`")
        return row

    def verify(self, query: Example, label: str, *, confirm: bool = False) -> Verification:
        """Accept or reject ``query`` as ``label`` (score >= the verify threshold).

        With ``confirm`` (the caller vouches the query is ``label``) and adaptation enabled for the class, an
        accepted query scoring at least the class's adaptation minimum moves the template toward it.
        """
        th = self.thresholds()["verify"]
        if th is None:
            raise OneshotError(f"gallery {self.path} has no verify threshold: run `oneshot gallery calibrate` or set one")
        cid, blob, rate, min_score, meta = self._class_row(_check_label(label))
        q = self.embed([query] if not isinstance(query, np.ndarray) else query)
        if len(q) != 1:
            raise OneshotError("verify takes one query")
        score = float(q[0] @ from_blob(blob, self.dim))
        res = Verification(label, score, score >= th, th)
        if confirm and res.accepted and rate > 0:
            floor = th if min_score is None else max(th, min_score)
            if score >= floor:
                res.adapted = self._adapt(cid, q[0], json.loads(meta).get("adapt_max_drift", 0.8))
        return res

    def _adapt(self, cid: int, q: np.ndarray, max_drift: float) -> bool:
        with self.store.write() as conn:
            row = conn.execute("SELECT template, adapt_rate FROM classes WHERE id = ?", (cid,)).fetchone()
            if row is None:
                return False
            t = from_blob(row[0], self.dim)
            new = _unit((1 - row[1]) * t + row[1] * q)
            proto = _unit(self._example_vectors(conn, cid).mean(0))
            if float(new @ proto) < max_drift:
                return False  # bounded: never drift further than max_drift (cosine) from the enrolled examples
            conn.execute("UPDATE classes SET template = ?, adaptations = adaptations + 1, updated = ? WHERE id = ?",
                         (to_blob(new), _now(), cid))
            conn.execute("INSERT INTO changes (class_id) VALUES (?)", (cid,))
        return True

    def set_adaptation(self, label: str, rate: float, *, min_score: float | None = None, max_drift: float = 0.8) -> None:
        """Enable (rate in (0, 0.5]) or disable (rate 0) template adaptation for one class.

        Args:
            rate: how far a confirmed match moves the template toward it (template <- (1-rate) t + rate q).
            min_score: only matches scoring at least this adapt (default: the verify threshold).
            max_drift: the adapted template keeps at least this cosine to its enrolled examples' prototype.
        """
        if not 0 <= rate <= MAX_ADAPT_RATE:
            raise OneshotError(f"adaptation rate {rate} must be between 0 (off) and {MAX_ADAPT_RATE}")
        with self.store.write() as conn:
            row = conn.execute("SELECT id, metadata FROM classes WHERE label = ?", (_check_label(label),)).fetchone()
            if row is None:
                raise OneshotError(f"no class {label!r} in gallery {self.path}: see `oneshot gallery list`")
            meta = json.loads(row[1])
            meta["adapt_max_drift"] = float(max_drift)
            conn.execute("UPDATE classes SET adapt_rate = ?, adapt_min_score = ?, metadata = ? WHERE id = ?",
                         (float(rate), min_score, json.dumps(meta), row[0]))

    # ================================================================== management
    def forget(self, label: str) -> int:
        """Remove a class and its examples; returns how many examples were removed."""
        with self.store.write() as conn:
            row = conn.execute("SELECT id, n_examples FROM classes WHERE label = ?", (_check_label(label),)).fetchone()
            if row is None:
                raise OneshotError(f"no class {label!r} in gallery {self.path}: see `oneshot gallery list`")
            conn.execute("DELETE FROM examples WHERE class_id = ?", (row[0],))
            conn.execute("DELETE FROM classes WHERE id = ?", (row[0],))
            conn.execute("INSERT INTO changes (class_id) VALUES (?)", (row[0],))
        return int(row[1])

    def rename(self, old: str, new: str) -> None:
        """Rename a class (its id, template and examples stay)."""
        old, new = _check_label(old), _check_label(new)
        with self.store.write() as conn:
            if conn.execute("SELECT 1 FROM classes WHERE label = ?", (old,)).fetchone() is None:
                raise OneshotError(f"no class {old!r} in gallery {self.path}: see `oneshot gallery list`")
            if conn.execute("SELECT 1 FROM classes WHERE label = ?", (new,)).fetchone() is not None:
                raise OneshotError(f"class {new!r} already exists: forget it first or choose another name")
            conn.execute("UPDATE classes SET label = ?, updated = ? WHERE label = ?", (new, _now(), old))

    def list(self) -> list[ClassInfo]:
        """All classes, in enrolment order."""
        rows = self.store.conn.execute(
            "SELECT id, label, n_examples, adapt_rate, adaptations, created, updated, metadata FROM classes ORDER BY id")
        return [ClassInfo(*r[:7], json.loads(r[7])) for r in rows]

    def __len__(self) -> int:
        return self.store.count()

    def info(self) -> dict[str, Any]:
        """Summary: size, encoder fingerprint, thresholds and calibration, index kind."""
        meta = self.store.all_meta()
        n_ex = int(self.store.conn.execute("SELECT COUNT(*) FROM examples").fetchone()[0])
        idx = self._ensure_index()
        info = {
            "path": str(self.path), "classes": len(self), "examples": n_ex, "dim": self.dim,
            "encoder": fingerprint_id(self.fingerprint), "fingerprint": self.fingerprint,
            "encoder_path": meta.get("encoder_path"), "store": self.store_mode, "threshold": meta.get("threshold"),
            "calibration": meta.get("calibration"), "index": {"kind": idx.kind, **self.settings.to_dict()},
            "generation": self._gen, "created": meta.get("created"),
        }
        cal = meta.get("calibration")
        if cal and len(self) and not (cal["gallery_size"] / 2 <= len(self) <= cal["gallery_size"] * 2):
            info["warning"] = (f"calibrated for {cal['gallery_size']} classes, the gallery now has {len(self)}: "
                               "the identify false-accept rate has changed; run calibrate again")
        return info

    def set_index_settings(
        self, *, approx_above: int | None = None, ef_search: int | None = None, approx_kind: str | None = None,
        nprobe: int | None = None, refine_factor: int | None = None,
    ) -> None:
        """Change when (``approx_above`` classes) and how (``approx_kind``, ``ef_search``, ``nprobe``,
        ``refine_factor``) the gallery searches approximately; the index is rebuilt on next use if its kind changed."""
        from oneshot.gallery.index import APPROX_KINDS

        if approx_kind is not None and approx_kind not in APPROX_KINDS:
            raise OneshotError(f"unknown index kind {approx_kind!r}: choose one of {', '.join(APPROX_KINDS)}")
        if approx_kind == "ivf_pq" and self.dim % self.settings.pq_m:
            raise OneshotError(f"ivf_pq needs a dimension divisible by {self.settings.pq_m}, the gallery's is {self.dim}: "
                               "choose ivf_sq8")
        for label, v in (("nprobe", nprobe), ("refine_factor", refine_factor)):
            if v is not None and v < (1 if label == "nprobe" else 0):
                raise OneshotError(f"{label} must be >= {1 if label == 'nprobe' else 0}")
        if approx_kind is not None:
            self.settings.approx_kind = approx_kind
        if nprobe is not None:
            self.settings.nprobe = int(nprobe)
        if refine_factor is not None:
            self.settings.refine_factor = int(refine_factor)
        if approx_above is not None:
            if approx_above < 0:
                raise OneshotError("approx_above must be >= 0")
            self.settings.approx_above = int(approx_above)
        if ef_search is not None:
            if ef_search < 1:
                raise OneshotError("ef_search must be >= 1")
            self.settings.ef_search = int(ef_search)
        with self.store.write() as conn:
            Store.set_meta(conn, "index", self.settings.to_dict())
        if self._index is not None:
            self._index.settings = self.settings
            if approx_kind is not None or refine_factor is not None:
                self._index = None  # rebuilt (as the new kind) on next use

    def set_threshold(self, *, identify: float | None = None, verify: float | None = None) -> None:
        """Set thresholds by hand (recorded as ``manual``; the calibration record is kept for reference)."""
        for v in (identify, verify):
            if v is not None and not -1 <= v <= 1:
                raise OneshotError(f"threshold {v} is not a cosine similarity: give a value in [-1, 1]")
        cur = self.thresholds()
        with self.store.write() as conn:
            Store.set_meta(conn, "threshold", {
                "identify": identify if identify is not None else cur["identify"],
                "verify": verify if verify is not None else cur["verify"], "source": "manual", "set": _now()})

    # ================================================================== calibration
    def calibrate(self, embeddings: np.ndarray, labels: np.ndarray, *, target_far: float = 1e-3,
                  gallery_size: int | None = None, trials: int = 20, seed: int = 0, source: str = "") -> dict[str, Any]:
        """Set both thresholds for ``target_far`` from validation embeddings (N, D) with labels (N,) of classes
        not in the gallery; stores and returns the calibration record (chosen rate, measured rates, counts)."""
        x = check_vectors(embeddings, self.dim, "calibration embeddings")
        size = gallery_size if gallery_size is not None else max(1, len(self))
        rec = calibration.calibrate(x, np.asarray(labels), target_far, size, trials, seed)
        rec["source"] = source
        rec["date"] = _now()
        with self.store.write() as conn:
            Store.set_meta(conn, "calibration", rec)
            Store.set_meta(conn, "threshold", {"identify": rec["identify_threshold"], "verify": rec["verify_threshold"],
                                               "source": "calibrated", "target_far": target_far, "set": rec["date"]})
        return rec

    def calibrate_folder(self, folder: str | Path, **kwargs: Any) -> dict[str, Any]:
        """:meth:`calibrate` on a folder of validation classes (one sub-folder of files per class)."""
        from oneshot.data.folder import list_class_folders

        classes = list_class_folders(folder)
        files = [(c, f) for c, (_, fs) in enumerate(classes.items()) for f in fs]
        x = self.embed([f for _, f in files])
        return self.calibrate(x, np.array([c for c, _ in files]), source=str(folder), **kwargs)

    # ================================================================== re-embedding, export, import
    def reembed(self, encoder: str | Path | Embedder, *, batch: int = 512) -> int:
        """Rebuild every template with a new encoder from the stored example inputs (or paths), in one
        transaction. Thresholds are cleared (they belong to the old encoder): calibrate again.
        Returns the number of examples re-embedded."""
        enc = self._load_encoder(encoder)
        assert enc is not None
        if self.fingerprint.get("kind") == "vectors":
            raise OneshotError(f"gallery {self.path} holds precomputed vectors with no inputs: it cannot be re-embedded")
        rows = self.store.conn.execute("SELECT id, class_id, input, input_path, source FROM examples ORDER BY id").fetchall()
        missing = [r for r in rows if r[2] is None and r[3] is None]
        if missing:
            raise OneshotError(f"{len(missing)} examples have neither a stored input nor a path (e.g. {missing[0][4]!r}): "
                               "they cannot be re-embedded; forget their classes or re-enrol them")
        new_vecs = np.zeros((len(rows), enc.dim), np.float32)
        for s in range(0, len(rows), batch):
            part = rows[s:s + batch]
            data = [r[2] if r[2] is not None else read_file(r[3]).data for r in part]
            new_vecs[s:s + len(part)] = check_vectors(enc.embed(data, [r[4] or r[3] or "<stored>" for r in part]), enc.dim, "embedding")
        by_class: dict[int, list[int]] = {}
        for j, r in enumerate(rows):
            by_class.setdefault(r[1], []).append(j)
        now = _now()
        with self.store.write() as conn:
            conn.executemany("UPDATE examples SET embedding = ? WHERE id = ?", [(to_blob(v), r[0]) for v, r in zip(new_vecs, rows)])
            conn.executemany("UPDATE classes SET template = ?, adaptations = 0, updated = ? WHERE id = ?",
                             [(to_blob(_unit(new_vecs[js].mean(0))), now, cid) for cid, js in by_class.items()])
            conn.executemany("INSERT INTO changes (class_id) VALUES (?)", [(cid,) for cid in by_class])
            Store.set_meta(conn, "fingerprint", enc.fingerprint)
            Store.set_meta(conn, "dim", enc.dim)
            Store.set_meta(conn, "encoder_path", enc.spec)
            Store.set_meta(conn, "threshold", None)
            Store.set_meta(conn, "epoch", self._epoch + 1)
        self._encoder = enc
        self.fingerprint, self.dim, self._epoch, self._index = enc.fingerprint, enc.dim, self._epoch + 1, None
        self.index_path.unlink(missing_ok=True)
        return len(rows)

    def export(self, dest: str | Path) -> Path:
        """Write a consistent copy of the gallery (a gallery file itself) to ``dest``, which must not exist."""
        dest = Path(dest)
        if dest.exists():
            raise OneshotError(f"{dest} already exists: choose a new file for the export")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.exporting")
        tmp.unlink(missing_ok=True)
        out = sqlite3.connect(tmp)
        try:
            self.store.conn.backup(out)
            out.execute("PRAGMA journal_mode = DELETE")
        finally:
            out.close()
        tmp.rename(dest)
        return dest

    def import_from(self, source: str | Path, *, on_conflict: str = "error") -> int:
        """Add the classes of another gallery with the same encoder fingerprint, in one transaction.

        Args:
            on_conflict: for a label present in both: ``error`` (nothing imported), ``skip`` or ``merge``
                (add the imported examples to the existing class).

        Returns:
            The number of classes imported or merged.
        """
        if on_conflict not in ("error", "skip", "merge"):
            raise OneshotError(f"unknown conflict policy {on_conflict!r}: choose error, skip or merge")
        src = Store.open(source)
        try:
            fp = src.get_meta("fingerprint")
            if fingerprint_id(fp) != fingerprint_id(self.fingerprint):
                raise OneshotError(f"{source} was built with encoder {fingerprint_id(fp)}, this gallery with "
                                   f"{fingerprint_id(self.fingerprint)}: re-embed one of them first")
            classes = src.conn.execute("SELECT id, label, metadata FROM classes ORDER BY id").fetchall()
            items = []
            for cid, label, meta in classes:
                ex = src.conn.execute("SELECT embedding, input, input_path, source FROM examples WHERE class_id = ? ORDER BY id",
                                      (cid,)).fetchall()
                if not ex:
                    continue
                vecs = np.stack([from_blob(e[0], self.dim) for e in ex])
                items.append(_Prepared(label, vecs, [e[1] for e in ex], [e[2] for e in ex], [e[3] or "imported" for e in ex], json.loads(meta)))
        finally:
            src.close()
        with self.store.write() as conn:
            existing = self._existing(conn, [it.label for it in items])
            if existing and on_conflict == "error":
                raise OneshotError(f"{len(existing)} labels exist in both galleries (e.g. {next(iter(existing))!r}): "
                                   "use --on-conflict skip or merge")
            if on_conflict == "skip":
                items = [it for it in items if it.label not in existing]
            if items:
                self._write(conn, items)
        return len(items)
