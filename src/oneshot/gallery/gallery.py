"""``Gallery``: enrol classes from one example, identify, verify, reject strangers -- persistent and exact.

A thin front over named parts: the store (:mod:`~oneshot.gallery.class_store`) is the truth; the index cache
(:mod:`~oneshot.gallery.index_cache`) is caught up from the store's change log before every search, by the
open gallery this class extends (:mod:`~oneshot.gallery.handle`); enrolment (:mod:`~oneshot.gallery.enrolment`)
and its quality report (:mod:`~oneshot.gallery.quality`), thresholds and calibration
(:mod:`~oneshot.gallery.thresholds`), and re-embedding / export / import (:mod:`~oneshot.gallery.transfer`)
each live in their own module, and what the verbs return in :mod:`~oneshot.gallery.results`. Each class has one *template*: the
L2-normalised mean of its examples' L2-normalised embeddings (its prototype), optionally adapted over time.
Scores are cosine similarities in [-1, 1]; higher means more alike.

Example::

    from oneshot import Gallery

    with Gallery.open("desk.gallery", encoder="omniglot-lake-v4:tta=shift") as g:
        print(g.enrol("alice", ["alice.png"]).warnings)
        g.calibrate_folder("validation_people/", target_far=1e-3)
        print(g.identify(["visitor.png"], k=3)[0].label)    # a label, or None for "unknown"
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oneshot.errors import OneshotError
from oneshot.gallery import adaptation, cohort, enrolment_impostors, identify_rule, rejection, summary, thresholds, transfer
from oneshot.gallery.binding import check_embedder, new_gallery_meta
from oneshot.gallery.class_store import ClassStore, from_blob
from oneshot.gallery.enrolment import Prepared, one_vector_each, with_synthetic
from oneshot.gallery.examples import as_list, check_label, embed_examples, label_key
from oneshot.gallery.handle import GalleryHandle
from oneshot.gallery.index import index_class
from oneshot.gallery.index_settings import change_settings, check_index_settings
from oneshot.gallery.quality import reports_before
from oneshot.gallery.results import ClassInfo, EnrolReport, Identification, Verification
from oneshot.modalities import Embedder, Example, check_vectors, fingerprint_id, load_embedder
from oneshot.provenance import now_iso
from oneshot.ranges import in_range


class Gallery(GalleryHandle):
    """A persistent gallery of classes, each enrolled from as little as one example. Use :meth:`open`."""

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
        check_index_settings(approx_above, ef_search, approx_kind)  # before anything is created
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

    # ================================================================== inputs -> embeddings
    def embed(self, queries: Sequence[Example] | np.ndarray) -> np.ndarray:
        """Queries (files, bytes or (D,)/(B, D) embeddings) -> L2-normalised float32 (B, D)."""
        if isinstance(queries, np.ndarray) and queries.dtype != object:
            return check_vectors(queries, self.dim, "query")
        items = as_list(queries, "no queries given")
        return embed_examples(items, self.dim, lambda: self.encoder, lambda i: f"query {i}", "the encoder's embedding")[0]

    # ================================================================== enrolment
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
        return self.enrol_batch([(label, examples, metadata)], check=check, augment=augment)[0]

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
        preps = [
            with_synthetic(self._prepare(lab, examples, meta), self._generator, augment, self.dim)
            for lab, examples, meta in items
        ]
        reports = reports_before(preps, self.store, self.dim, self.thresholds()["verify"], self._index, check)
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
        """The current ``identify`` and ``verify`` thresholds (None when not set; identify: also when set on
        another score than :attr:`rejection_score`)."""
        return thresholds.read_thresholds(self.store, self.rejection_score)

    def search(self, queries: Sequence[Example] | np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Raw top-k: (B, k) cosine scores and (B, k) class ids (-1 pads) -- for benchmarks and batch work."""
        q = self.embed(queries)
        idx = self._index()
        if idx.live == 0:
            raise OneshotError(f"gallery {self.path} is empty: enrol a class first")
        return idx.search(q, max(1, min(k, idx.live)))

    def identify(self, queries: Sequence[Example] | np.ndarray, k: int = 5) -> list[Identification]:
        """Top-k classes for each query, and "unknown" (``label`` None) when the best is below the threshold.

        By the gallery's :attr:`identify_rule` (the nearest template, or, text, the few-shot intent classifier)
        and :attr:`rejection_score` (the template cosine, or, text, ``mean_distance``): see
        :func:`~oneshot.gallery.identify_rule.answer`; the threshold applies to the first candidate's score."""
        in_range("k", k, 1)
        return identify_rule.answer(self, queries, k)

    @property
    def identify_rule(self) -> str:
        """How :meth:`identify` answers: ``classifier`` or ``nearest_template`` (stored in the gallery)."""
        return identify_rule.read_rule(self.store)

    def set_identify_rule(self, rule: str) -> None:
        """Store the rule :meth:`identify` answers with (``classifier`` needs a text gallery)."""
        identify_rule.check_rule(rule, self.modality)
        with self.store.write() as tx:
            tx.set_meta(identify_rule.RULE_KEY, rule)

    @property
    def rejection_score(self) -> str:
        """What the identify threshold is compared with: ``template_cosine`` or ``mean_distance`` (text)."""
        return rejection.read_score(self.store)

    def set_rejection_score(self, score: str) -> str | None:
        """Store the rejection score; an identify threshold set on the other score is cleared (returns the warning)."""
        return rejection.set_score(self.store, score, self.modality)

    def set_cohort(self, examples: Sequence[Example] | np.ndarray, *, k: int | None = None, source: str = "") -> dict:
        """Store the cohort the ``snorm`` rejection score normalises by: examples (files, bytes or (K, D)
        embeddings) of classes that will never be enrolled, a few per class at most; each side's statistics use
        its ``k`` best cohort scores (default 200, at most the cohort's size). Returns its record (:mod:`.cohort`)."""
        return cohort.set_cohort(
            self.store, self.embed(examples), k=k, fingerprint=self.fingerprint, source=source, now=now_iso()
        )

    def verify(self, query: Example, label: str, *, confirm: bool = False) -> Verification:
        """Accept or reject ``query`` as ``label`` (score >= the verify threshold; the score is the template cosine,
        or its S-norm when the gallery rejects on ``snorm``).

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
        score = cohort.pair_score(self, q[0], from_blob(row.template, self.dim))
        res = Verification(label, score, score >= th, th)
        if confirm and res.accepted:
            fp = fingerprint_id(self.fingerprint)
            res.adapted = adaptation.adapt_confirmed(self.store, row, q[0], score, th, self.dim, now_iso(), fp)
        return res

    def set_adaptation(self, label: str, rate: float, *, min_score: float | None = None, max_drift: float = 0.8) -> None:
        """Enable (rate in (0, 0.5]) or disable (rate 0) template adaptation for one class.

        Args:
            rate: how far a confirmed match moves the template toward it (template <- (1-rate) t + rate q).
            min_score: only matches scoring at least this adapt (default: the verify threshold).
            max_drift: the adapted template keeps at least this cosine to its enrolled examples' prototype.
        """
        score_range = rejection.SCORE_RANGE[rejection.verify_score(self.rejection_score)]
        adaptation.set_adaptation(self.store, label, rate, min_score, max_drift, score_range)

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
        """Summary: size, encoder fingerprint, thresholds and calibration, index kind (:func:`.summary.gallery_info`)."""
        return summary.gallery_info(self)

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
        changes = {"approx_above": approx_above, "ef_search": ef_search, "approx_kind": approx_kind}
        change_settings(self.settings, self.dim, dict(changes, nprobe=nprobe, refine_factor=refine_factor))
        with self.store.write() as tx:
            tx.set_meta("index", self.settings.to_dict())
        self.index_cache.set_settings(self.settings)

    def set_threshold(self, *, identify: float | None = None, verify: float | None = None) -> None:
        """Set thresholds by hand (recorded as ``manual``; the calibration record is kept for reference)."""
        thresholds.set_manual_thresholds(self.store, identify, verify, now_iso(), self.rejection_score)

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
        shots: int | None = None,
        groups: np.ndarray | None = None,
        verify_from: str = "validation",
        confidence: float | None = None,
    ) -> dict[str, Any]:
        """Set both thresholds for ``target_far`` from validation embeddings (N, D) with labels (N,) of classes
        not in the gallery; stores and returns the calibration record (chosen rate, measured rates, counts).
        ``domain`` names the calibration data (``omniglot``, ``att_faces`` ...): one other than the encoder's
        training domain is refused. ``unlike_fraction``: the fraction of inputs that look unlike the encoder's
        training images (above one half the record says so and :meth:`info` warns). ``shots``: examples per
        simulated template (default: the gallery's, :func:`thresholds.shots_for`). ``groups`` (N,): each
        example's family, for thresholds that hold when strangers are siblings of the enrolled classes.
        ``verify_from="enrolments"``: the verify threshold from the gallery's own impostor comparisons instead
        (:mod:`.enrolment_impostors`; the identify threshold still comes from the validation classes).
        ``confidence`` (e.g. 0.95): thresholds whose false-accept rates stay at most ``target_far`` with that
        confidence, not just on the measured comparisons (:func:`.calibration.allowed_exceedances`)."""
        own = enrolment_impostors.for_source(
            verify_from, self.store, self.dim, functools.partial(cohort.pair_scores, self), target_far, confidence
        )
        rec = thresholds.calibration_record(
            embeddings,
            labels,
            self.dim,
            len(self),
            target_far=target_far,
            gallery_size=gallery_size,
            trials=trials,
            seed=seed,
            source=source,
            domain=domain,
            enc_domain=thresholds.encoder_domain(self.modality, lambda: self.encoder),
            unlike_fraction=unlike_fraction,
            now=now_iso(),
            identify_score=self.rejection_score,
            cohort=self.cohort_norm() if self.rejection_score == rejection.SNORM else None,
            groups=groups,
            verify_source=own,
            confidence=confidence,
            **thresholds.shots_for(self.store, labels, shots),
        )
        thresholds.save_calibration(self.store, rec, target_far)
        return rec

    def calibrate_folder(self, folder: str | Path, *, families: bool = False, **kwargs: Any) -> dict[str, Any]:
        """:meth:`calibrate` on a folder of validation classes (one sub-folder of files per class; with
        ``families``, one sub-folder per family holding one per class, and strangers drawn within families)."""
        x, labels, unlike, groups = thresholds.folder_inputs(self.embed, self.encoder, folder, families)
        return self.calibrate(x, labels, source=str(folder), unlike_fraction=unlike, groups=groups, **kwargs)

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
        """Add the classes of another gallery with the same encoder fingerprint, in one transaction; returns the
        number of classes imported or merged. ``on_conflict``, for a label present in both: ``error`` (nothing
        imported), ``skip`` or ``merge`` (add the imported examples to the existing class)."""
        return transfer.import_classes(self.store, source, self.fingerprint, self.dim, on_conflict, now_iso())
