"""``Gallery``: enrol classes from one example, identify, verify, reject strangers -- persistent and exact.

A thin front over named parts: the store (:mod:`~oneshot.gallery.class_store`) is the truth; the index cache
(:mod:`~oneshot.gallery.index_cache`) is caught up from the store's change log before every search;
enrolment (:mod:`~oneshot.gallery.enrolment`) and its quality report (:mod:`~oneshot.gallery.quality`),
calibration, and re-embedding / export / import (:mod:`~oneshot.gallery.transfer`) each live in their own
module, and what the verbs return in :mod:`~oneshot.gallery.results`. Each class has one *template*: the
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

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oneshot.errors import OneshotError, OneshotWarning, os_reason
from oneshot.gallery import adaptation, calibration, transfer
from oneshot.gallery.binding import check_embedder, load_recorded, new_gallery_id, new_gallery_meta
from oneshot.gallery.class_store import ClassStore, from_blob
from oneshot.gallery.enrolment import Prepared, one_vector_each, prepare, write_enrolments
from oneshot.gallery.examples import as_list, check_label, embed_examples, label_key
from oneshot.gallery.index import IndexSettings, TemplateIndex, check_index_settings, index_class, pair_similarity
from oneshot.gallery.index_cache import IndexCache
from oneshot.gallery.quality import fill_report
from oneshot.gallery.results import ClassInfo, EnrolReport, Identification, Match, Verification
from oneshot.modalities import Embedder, Example, check_vectors, fingerprint_id, fingerprint_modality, load_embedder
from oneshot.provenance import now_iso
from oneshot.ranges import in_range


class Gallery:
    """A persistent gallery of classes, each enrolled from as little as one example. Use :meth:`open`."""

    def __init__(self, store: ClassStore, encoder: Embedder | None) -> None:
        self.store = store
        self.path = store.path
        self._encoder = encoder
        try:
            with store.read():
                meta = store.all_meta()
            if not isinstance(meta.get("fingerprint"), dict) or type(meta.get("dim")) is not int or meta["dim"] < 1:
                raise ValueError("fingerprint or dim")
        except OneshotError:
            store.close()
            raise
        except (ValueError, TypeError, KeyError) as exc:
            store.close()
            raise OneshotError(f"gallery {self.path} has damaged meta ({exc}): restore it from an export") from None
        self.dim = int(meta["dim"])
        self.fingerprint: dict[str, Any] = meta["fingerprint"]
        self.store_mode: str = meta.get("store", "inputs")
        self.settings = IndexSettings.from_dict(meta.get("index"))
        self.index_cache = IndexCache(
            self.path.with_name(self.path.name + ".faiss"),
            self.dim,
            int(meta.get("epoch", 0)),
            self.settings,
            index_class(self.fingerprint),
            meta.get("gallery_id"),
        )

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
    ) -> Gallery:
        """Open the gallery at ``path``, creating it when missing (and ``create``).

        Args:
            path: the gallery file (SQLite); its index cache is ``<path>.faiss``.
            encoder: a built-in embedder name, a checkpoint or model folder path, or an
                :class:`~oneshot.modalities.Embedder`. An existing gallery refuses an embedder with another
                fingerprint; when None, the embedder recorded at creation is loaded on first use.
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
        check_index_settings(approx_above, ef_search)  # before anything is created
        from oneshot.gallery.index import APPROX_KINDS

        if approx_kind is not None and approx_kind not in APPROX_KINDS:  # before anything is created
            raise OneshotError(f"unknown index kind {approx_kind!r}: choose one of {', '.join(APPROX_KINDS)}")
        enc = None if encoder is None else load_embedder(encoder)
        if path.exists():
            st = ClassStore.open(path)
        else:
            if not create:
                raise OneshotError(f"gallery {path} does not exist: create it with `oneshot gallery create`")
            st = ClassStore.create(path, new_gallery_meta(enc, dim, store, name, now_iso()))
        g = cls(st, None)
        if enc is not None:
            g._encoder = check_embedder(path, g.fingerprint, enc)
        if approx_above is not None or ef_search is not None or approx_kind is not None:
            g.set_index_settings(approx_above=approx_above, ef_search=ef_search, approx_kind=approx_kind)
        return g

    @property
    def modality(self) -> str:
        """What the gallery's examples are: ``image``, ``text``, ``molecule``, or ``vectors`` (no embedder)."""
        return fingerprint_modality(self.fingerprint)

    @property
    def encoder(self) -> Embedder:
        """The gallery's embedder, loaded from the recorded spec (built-in name or path) on first use."""
        if self._encoder is None:
            self._encoder = load_recorded(self.path, self.fingerprint, self.modality, self.store.get_meta("encoder_path"))
        return self._encoder

    def close(self) -> None:
        """Save the index cache when it moved on since it was loaded, then close the database.

        The cache is only a cache: when it cannot be written (a full disk, a read-only file system) the gallery
        is unaffected, a :class:`~oneshot.errors.OneshotWarning` says why, and the next open rebuilds it."""
        try:
            if self.index_cache.unsaved and self.store.writable:
                self._save_index()
        except (OSError, OneshotError) as exc:
            why = os_reason(exc) if isinstance(exc, OSError) else str(exc)
            warnings.warn(
                f"the index cache {self.index_path} was not saved ({why}); the gallery is unchanged "
                "and the cache is rebuilt on the next open",
                OneshotWarning,
                stacklevel=2,
            )
        finally:
            self.store.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ================================================================== index cache
    @property
    def index_path(self) -> Path:
        return self.index_cache.path

    def save_index(self) -> None:
        """Write the index cache (atomically) with its epoch, generation and the gallery's id; a
        :class:`OneshotError` saying why when it cannot be written (no space, read-only, permissions)."""
        try:
            self._save_index()
        except OSError as exc:
            raise OneshotError(
                f"cannot write the index cache {self.index_path} ({os_reason(exc)}): "
                "the gallery is unchanged; free space or use a writable folder"
            ) from None

    def _save_index(self) -> None:
        self._index()
        if self.index_cache.gallery_id is None:  # a gallery made before ids existed gets one now
            gid = new_gallery_id()
            with self.store.write() as tx:
                tx.set_meta("gallery_id", gid)
            self.index_cache.gallery_id = gid
        self.index_cache.save()

    def _index(self) -> TemplateIndex:
        """The index, caught up with every change committed so far (in one read snapshot of the store)."""
        with self.store.read():
            if int(self.store.get_meta("epoch", 0)) != self.index_cache.epoch:
                self._adopt_new_epoch()
            return self.index_cache.current(self.store)

    def _adopt_new_epoch(self) -> None:
        """After another process re-embedded the gallery: reload dim and fingerprint, refuse a stale encoder."""
        meta = self.store.all_meta()
        self.dim, self.fingerprint = int(meta["dim"]), meta["fingerprint"]
        self.settings = IndexSettings.from_dict(meta.get("index"))
        self.index_cache.reset(self.dim, int(meta.get("epoch", 0)), self.settings, index_class(self.fingerprint))
        if self._encoder is not None and fingerprint_id(self._encoder.fingerprint) != fingerprint_id(self.fingerprint):
            self._encoder = None
            raise OneshotError(f"gallery {self.path} was re-embedded with another encoder meanwhile: reopen it with that encoder")

    # ================================================================== inputs -> embeddings
    def _prepare(self, label: str, examples: Sequence[Example] | np.ndarray, metadata: dict | None = None) -> Prepared:
        return prepare(label, examples, self.dim, lambda: self.encoder, self.store_mode, metadata)

    def embed(self, queries: Sequence[Example] | np.ndarray) -> np.ndarray:
        """Queries (files, bytes or (D,)/(B, D) embeddings) -> L2-normalised float32 (B, D)."""
        if isinstance(queries, np.ndarray) and queries.dtype != object:
            return check_vectors(queries, self.dim, "query")
        items = as_list(queries, "no queries given")
        return embed_examples(items, self.dim, lambda: self.encoder, lambda i: f"query {i}", "the encoder's embedding")[0]

    # ================================================================== enrolment
    def _write(self, items: list[Prepared]) -> list[tuple[int, bool, int]]:
        """Write enrolments in one transaction: (class id, created, total examples) per item."""
        with self.store.write() as tx:
            self._check_not_reembedded()
            return write_enrolments(tx, items, self.dim, now_iso())

    def _check_not_reembedded(self) -> None:
        """Inside a write transaction: refuse to write vectors of this gallery's encoder when another process
        re-embedded the gallery with another one since they were computed (nothing is written)."""
        now = self.store.get_meta("fingerprint")
        if fingerprint_id(now) != fingerprint_id(self.fingerprint):
            raise OneshotError(
                f"gallery {self.path} was re-embedded with encoder {fingerprint_id(now)} while this "
                "enrolment was being prepared: nothing was written; reopen the gallery and enrol again"
            )

    def _augment(self, prep: Prepared, augment: int | None) -> Prepared:
        """Add ``augment`` synthetic examples per real one from the encoder's generator (:mod:`oneshot.generative`).

        ``None`` means the generator's validated default: on (8 per example) only when validation said it helps."""
        gen = getattr(self._encoder or (self.encoder if self.modality != "vectors" else None), "generator", None)
        if augment is None:
            augment = 8 if gen is not None and gen.helps else 0
        if isinstance(augment, bool) or not isinstance(augment, int) or not 0 <= augment <= 100:
            raise OneshotError(f"augment={augment!r}: give a whole number of synthetic examples from 0 to 100")
        if augment == 0:
            return prep
        if gen is None:
            raise OneshotError(
                "this gallery's encoder has no generator (a <checkpoint>.generator.safetensors beside it): "
                "enrol without augment, or fit one with benchmarks/generative_augmentation.py"
            )
        synth = gen.sample(prep.vectors, augment, seed=0).reshape(-1, self.dim)
        synth = check_vectors(synth, self.dim, "synthetic examples")
        n = len(synth)
        return Prepared(
            prep.label,
            np.concatenate([prep.vectors, synth]),
            prep.inputs + [None] * n,
            prep.paths + [None] * n,
            prep.sources + ["synthetic"] * n,
            prep.metadata,
        )

    def enrol(
        self,
        label: str,
        examples: Sequence[Example] | np.ndarray,
        *,
        metadata: dict[str, Any] | None = None,
        check: bool = True,
        augment: int | None = None,
    ) -> EnrolReport:
        """Enrol ``label`` from one or more examples (files, bytes or embeddings); an existing label is refined.

        The whole enrolment is one transaction: it is wholly present or wholly absent.

        Args:
            label: the class name.
            examples: one or more examples; embeddings are (D,) each or (n, D).
            metadata: JSON-able details to keep with the class (replaces earlier metadata).
            check: compute the quality report's warnings (one search).
            augment: synthetic examples generated per real example by the encoder's generator (0: none; None: the
                generator's validated default, docs/images.md). They are stored as vectors (source ``synthetic``).
        """
        prep = self._augment(self._prepare(label, examples, metadata), augment)
        own = self.store.class_id(prep.label)
        previous = self.store.example_vectors(own, self.dim) if own is not None else np.zeros((0, self.dim), np.float32)
        report = EnrolReport(prep.label, own is None, len(prep.vectors), len(previous) + len(prep.vectors))
        if check:
            fill_report(report, prep.vectors, previous, own, self.thresholds()["verify"], self._index(), self.store.labels_of)
        _, report.created, report.n_examples = self._write([prep])[0]
        return report

    def enrol_batch(
        self,
        items: Sequence[tuple[str, Sequence[Example] | np.ndarray, dict[str, Any] | None]],
        *,
        check: bool = True,
        augment: int | None = None,
    ) -> list[EnrolReport]:
        """Enrol several classes all or nothing: (label, examples, metadata or None) each. Every example of
        every class is read, validated and embedded first, then all are written in one transaction (a bad
        example in the last class writes nothing). Quality reports compare each class with the gallery as it
        was before the batch."""
        preps = [self._augment(self._prepare(label, examples, metadata), augment) for label, examples, metadata in items]
        reports = []
        for prep in preps:
            own = self.store.class_id(prep.label)
            previous = self.store.example_vectors(own, self.dim) if own is not None else np.zeros((0, self.dim), np.float32)
            report = EnrolReport(prep.label, own is None, len(prep.vectors), len(previous) + len(prep.vectors))
            if check:
                fill_report(report, prep.vectors, previous, own, self.thresholds()["verify"], self._index(), self.store.labels_of)
            reports.append(report)
        for report, (_, created, n) in zip(reports, self._write(preps), strict=False):
            report.created, report.n_examples = created, n
        return reports

    def enrol_many(self, items: Iterable[tuple[str, Sequence[Example] | np.ndarray]], *, batch: int = 1000) -> int:
        """Bulk enrolment without quality checks: ``batch`` enrolments per transaction (each enrolment is
        still wholly present or absent). Returns the number of enrolments written."""
        done = 0
        pending: list[Prepared] = []
        for label, examples in items:
            pending.append(self._prepare(label, examples))
            if len(pending) >= batch:
                done += len(self._write(pending))
                pending = []
        if pending:
            done += len(self._write(pending))
        return done

    def enrol_vectors(self, labels: Sequence[str], vectors: np.ndarray, *, batch: int = 10000) -> int:
        """Fast bulk enrolment of one embedding per label: labels (N,), vectors (N, D)."""
        vectors = np.asarray(vectors)
        if len(labels) != len(vectors):
            raise OneshotError(f"{len(labels)} labels for {len(vectors)} vectors: give one label per vector")
        done = 0
        for s in range(0, len(labels), batch):
            v = check_vectors(vectors[s : s + batch], self.dim, "vectors")
            done += len(self._write(one_vector_each(labels[s : s + batch], v)))
        return done

    # ================================================================== queries
    def thresholds(self) -> dict[str, float | None]:
        """The current ``identify`` and ``verify`` thresholds (None when not set)."""
        t = self.store.get_meta("threshold") or {}
        return {"identify": t.get("identify"), "verify": t.get("verify")}

    def search(self, queries: Sequence[Example] | np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Raw top-k: (B, k) cosine scores and (B, k) class ids (-1 pads) -- for benchmarks and batch work."""
        q = self.embed(queries)
        idx = self._index()
        if idx.live == 0:
            raise OneshotError(f"gallery {self.path} is empty: enrol a class first")
        return idx.search(q, max(1, min(k, idx.live)))

    def identify(self, queries: Sequence[Example] | np.ndarray, k: int = 5) -> list[Identification]:
        """Top-k classes for each query, and "unknown" (``label`` None) when the best is below the threshold."""
        in_range("k", k, 1)
        scores, ids = self.search(queries, k)
        names = self.store.labels_of(ids.ravel())
        th = self.thresholds()["identify"]
        out = []
        for srow, irow in zip(scores, ids, strict=False):
            cands = [Match(names[int(i)], float(s)) for s, i in zip(srow, irow, strict=False) if int(i) in names]
            best = cands[0] if cands else None
            known = best is not None and (th is None or best.score >= th)
            out.append(Identification(best.label if known else None, best.score if best else float("-inf"), cands, th))
        return out

    def verify(self, query: Example, label: str, *, confirm: bool = False) -> Verification:
        """Accept or reject ``query`` as ``label`` (score >= the verify threshold).

        With ``confirm`` (the caller vouches the query is ``label``) and adaptation enabled for the class, an
        accepted query scoring at least the class's adaptation minimum moves the template toward it.
        """
        th = self.thresholds()["verify"]
        if th is None:
            raise OneshotError(f"gallery {self.path} has no verify threshold: run `oneshot gallery calibrate` or set one")
        row = self.store.class_by_label(label_key(label))
        q = self.embed([query] if not isinstance(query, np.ndarray) else query)
        if len(q) != 1:
            raise OneshotError("verify takes one query")
        score = pair_similarity(self.fingerprint, q[0], from_blob(row.template, self.dim))
        res = Verification(label, score, score >= th, th)
        if confirm and res.accepted and row.adapt_rate > 0:
            floor = th if row.adapt_min_score is None else max(th, row.adapt_min_score)
            if score >= floor:
                res.adapted = adaptation.adapt(
                    self.store,
                    row.id,
                    q[0],
                    row.metadata.get("adapt_max_drift", 0.8),
                    self.dim,
                    now_iso(),
                    fingerprint_id(self.fingerprint),
                )
        return res

    def set_adaptation(self, label: str, rate: float, *, min_score: float | None = None, max_drift: float = 0.8) -> None:
        """Enable (rate in (0, 0.5]) or disable (rate 0) template adaptation for one class.

        Args:
            rate: how far a confirmed match moves the template toward it (template <- (1-rate) t + rate q).
            min_score: only matches scoring at least this adapt (default: the verify threshold).
            max_drift: the adapted template keeps at least this cosine to its enrolled examples' prototype.
        """
        in_range("adaptation rate (between 0, off, and the maximum)", rate, 0, adaptation.MAX_ADAPT_RATE)
        in_range("min_score", min_score, -1, 1)
        in_range("max_drift", max_drift, -1, 1)
        adaptation.set_adaptation(self.store, label, rate, min_score, max_drift)

    # ================================================================== management
    def forget(self, label: str) -> int:
        """Remove a class and its examples; returns how many examples were removed."""
        with self.store.write() as tx:
            row = self.store.class_by_label(label_key(label))
            tx.delete_class(row.id)
        return int(row.n_examples)

    def rename(self, old: str, new: str) -> None:
        """Rename a class (its id, template and examples stay)."""
        old, new = label_key(old), check_label(new)
        with self.store.write() as tx:
            tx.rename(old, new, now_iso())

    def list(self) -> list[ClassInfo]:
        """All classes, in enrolment order."""
        return [ClassInfo(*r) for r in self.store.list_classes()]

    def __len__(self) -> int:
        return self.store.count()

    def info(self) -> dict[str, Any]:
        """Summary: size, encoder fingerprint, thresholds and calibration, index kind."""
        meta = self.store.all_meta()
        n_ex = self.store.count_examples()
        idx = self._index()
        info = {
            "path": str(self.path),
            "classes": len(self),
            "examples": n_ex,
            "dim": self.dim,
            "encoder": fingerprint_id(self.fingerprint),
            "fingerprint": self.fingerprint,
            "encoder_path": meta.get("encoder_path"),
            "store": self.store_mode,
            "threshold": meta.get("threshold"),
            "calibration": meta.get("calibration"),
            "index": {"kind": idx.kind, **self.settings.to_dict()},
            "generation": self.index_cache.generation,
            "created": meta.get("created"),
        }
        cal = meta.get("calibration")
        if cal and len(self) and not (cal["gallery_size"] / 2 <= len(self) <= cal["gallery_size"] * 2):
            info["warning"] = (
                f"calibrated for {cal['gallery_size']} classes, the gallery now has {len(self)}: "
                "the identify false-accept rate has changed; run calibrate again"
            )
        if cal and (cal.get("domain") or {}).get("mismatch"):
            info["warning"] = (
                info.get("warning", "")
                + ("; " if "warning" in info else "")
                + f"calibrated on {cal['domain']['data']}, which looks unlike the encoder's "
                f"{cal['domain']['encoder']} training images: calibrate on data of that domain"
            )
        return info

    def set_index_settings(
        self,
        *,
        approx_above: int | None = None,
        ef_search: int | None = None,
        approx_kind: str | None = None,
        nprobe: int | None = None,
        refine_factor: int | None = None,
    ) -> None:
        """Change when (``approx_above`` classes) and how (``approx_kind``, ``ef_search``, ``nprobe``,
        ``refine_factor``) the gallery searches approximately; the index is rebuilt on next use if its kind changed."""
        from oneshot.gallery.index import APPROX_KINDS

        check_index_settings(approx_above, ef_search)

        if approx_kind is not None and approx_kind not in APPROX_KINDS:
            raise OneshotError(f"unknown index kind {approx_kind!r}: choose one of {', '.join(APPROX_KINDS)}")
        if approx_kind == "ivf_pq" and self.dim % self.settings.pq_m:
            raise OneshotError(
                f"ivf_pq needs a dimension divisible by {self.settings.pq_m}, the gallery's is {self.dim}: choose ivf_sq8"
            )
        for label, v, low in (
            ("nprobe", nprobe, 1),
            ("refine_factor", refine_factor, 0),
            ("approx_above", approx_above, 0),
            ("ef_search", ef_search, 1),
        ):
            if v is not None and v < low:
                raise OneshotError(f"{label} must be >= {low}")
        if approx_kind is not None:
            self.settings.approx_kind = approx_kind
        if nprobe is not None:
            self.settings.nprobe = int(nprobe)
        if refine_factor is not None:
            self.settings.refine_factor = int(refine_factor)
        if approx_above is not None:
            self.settings.approx_above = int(approx_above)
        if ef_search is not None:
            self.settings.ef_search = int(ef_search)
        with self.store.write() as tx:
            tx.set_meta("index", self.settings.to_dict())
        self.index_cache.set_settings(self.settings)

    def set_threshold(self, *, identify: float | None = None, verify: float | None = None) -> None:
        """Set thresholds by hand (recorded as ``manual``; the calibration record is kept for reference)."""
        for name, v in (
            ("identify threshold (a cosine similarity)", identify),
            ("verify threshold (a cosine similarity)", verify),
        ):
            in_range(name, v, -1, 1)
        cur = self.thresholds()
        with self.store.write() as tx:
            tx.set_meta(
                "threshold",
                {
                    "identify": identify if identify is not None else cur["identify"],
                    "verify": verify if verify is not None else cur["verify"],
                    "source": "manual",
                    "set": now_iso(),
                },
            )

    # ================================================================== calibration
    def calibrate(
        self,
        embeddings: np.ndarray,
        labels: np.ndarray,
        *,
        target_far: float = 1e-3,
        gallery_size: int | None = None,
        trials: int = 20,
        seed: int = 0,
        source: str = "",
        domain: str | None = None,
        unlike_fraction: float | None = None,
    ) -> dict[str, Any]:
        """Set both thresholds for ``target_far`` from validation embeddings (N, D) with labels (N,) of classes
        not in the gallery; stores and returns the calibration record (chosen rate, measured rates, counts).

        ``domain`` names what the calibration data is (``omniglot``, ``att_faces`` ...): a named domain other than
        the encoder's training domain is refused (a handwriting threshold is meaningless for faces).
        ``unlike_fraction`` is the fraction of calibration inputs whose pixels look unlike the encoder's training
        images; above one half the record says so and :meth:`info` warns."""
        enc_domain = self._encoder_domain()
        if domain is not None and enc_domain is not None and domain != enc_domain:
            raise OneshotError(
                f"calibration data is {domain} but the gallery's encoder was trained on {enc_domain}: "
                f"calibrate on validation classes of {enc_domain} (e.g. --folder DIR)"
            )
        in_range("target_far", target_far, 0, 1, low_open=True, high_open=True)
        in_range("gallery_size", gallery_size, 1)
        in_range("trials", trials, 1, 100000)
        x = check_vectors(embeddings, self.dim, "calibration embeddings")
        size = gallery_size if gallery_size is not None else max(1, len(self))
        rec = calibration.calibrate(x, np.asarray(labels), target_far, size, trials, seed)
        rec["source"] = source
        rec["domain"] = {
            "data": domain or source or "embeddings",
            "encoder": enc_domain,
            "unlike_encoder_inputs": unlike_fraction,
            "mismatch": bool(unlike_fraction is not None and unlike_fraction > 0.5),
        }
        if rec["domain"]["mismatch"]:
            rec["notes"].append(
                f"{100 * unlike_fraction:.0f}% of the calibration inputs look unlike the images the "
                f"encoder ({enc_domain}) was trained on: these thresholds may not hold for its domain"
            )
        rec["date"] = now_iso()
        with self.store.write() as tx:
            tx.set_meta("calibration", rec)
            tx.set_meta(
                "threshold",
                {
                    "identify": rec["identify_threshold"],
                    "verify": rec["verify_threshold"],
                    "source": "calibrated",
                    "target_far": target_far,
                    "set": rec["date"],
                },
            )
        return rec

    def calibrate_folder(self, folder: str | Path, **kwargs: Any) -> dict[str, Any]:
        """:meth:`calibrate` on a folder of validation classes (one sub-folder of files per class)."""
        from oneshot.data.folder import list_class_folders

        classes = list_class_folders(folder)
        files = [(c, f) for c, (_, fs) in enumerate(classes.items()) for f in fs]
        x = self.embed([f for _, f in files])
        unlike = None
        if hasattr(self.encoder, "unlike_fraction"):
            unlike = self.encoder.unlike_fraction([self.encoder.read(f).data for _, f in files])  # type: ignore[attr-defined]
        return self.calibrate(x, np.array([c for c, _ in files]), source=str(folder), unlike_fraction=unlike, **kwargs)

    def _encoder_domain(self) -> str | None:
        """The training domain of the gallery's encoder (``omniglot``, ``att_faces`` ...) when it records one."""
        if self.modality == "vectors":
            return None
        try:
            return getattr(self.encoder, "domain", None)
        except OneshotError:
            return None

    # ================================================================== re-embedding, export, import
    def reembed(self, encoder: str | Path | Embedder, *, batch: int = 512) -> int:
        """Rebuild every template with a new encoder from the stored example inputs (or paths), in one
        transaction. Thresholds are cleared (they belong to the old encoder): calibrate again.
        Returns the number of examples re-embedded."""
        enc = load_embedder(encoder)
        if self.fingerprint.get("kind") == "vectors":
            raise OneshotError(f"gallery {self.path} holds precomputed vectors with no inputs: it cannot be re-embedded")
        n = transfer.reembed(self.store, enc, self.index_cache.epoch, batch, now_iso())
        self._encoder, self.fingerprint, self.dim = enc, enc.fingerprint, enc.dim
        self.index_cache.reset(enc.dim, int(self.store.get_meta("epoch", 0)), self.settings, index_class(enc.fingerprint))
        self.index_cache.discard()
        return n

    def export(self, dest: str | Path) -> Path:
        """Write a consistent copy of the gallery (a gallery file itself) to ``dest``, which must not exist."""
        return transfer.export(self.store, dest)

    def import_from(self, source: str | Path, *, on_conflict: str = "error") -> int:
        """Add the classes of another gallery with the same encoder fingerprint, in one transaction.

        Args:
            on_conflict: for a label present in both: ``error`` (nothing imported), ``skip`` or ``merge``
                (add the imported examples to the existing class).

        Returns:
            The number of classes imported or merged.
        """
        return transfer.import_classes(self.store, source, self.fingerprint, self.dim, on_conflict, now_iso())
