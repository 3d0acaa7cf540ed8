"""Re-ranking chosen per catalogue: none, query expansion (QE), database-side augmentation
(DBA) or both, measured on the run's own validation queries.

Both blend a vector with its neighbours, which helps when a product's neighbours are mostly its
own photos (many photos per product) and blends in other products when it has few. So nothing
is assumed: each option is scored on the gate protocol's queries (DBA augments the validation
index, QE expands each query against it), and the card records only an option that beats "none"
beyond the paired bootstrap's margin (the best such one); otherwise none.

DBA blends every photo with its neighbours among all of them (photos squared): on a catalogue
of more than ``RERANK_PHOTOS`` photos the options are measured on every photo of the queries'
products and a seeded sample of the others, and the record says so (``index_photos``).
"""
from __future__ import annotations

import numpy as np

from ..search.rerank import augment_database, expand_queries
from ..similarity import Metric
from ..types import NO_RERANK, ReRank
from .config import RERANK_PHOTOS
from .data import Sample
from .scoring import paired_bootstrap, score_queries
from .validate import GATE_METRIC, Embedder, Validator

__all__ = ["RERANK_PHOTOS", "choose_rerank", "measured_index", "rerank_options"]


def rerank_options(qe_k: int, dba_k: int, alpha: float) -> dict[str, ReRank]:
    """The options measured: none, and those the neighbour counts allow (0 leaves one out)."""
    options = {"none": NO_RERANK}
    if qe_k:
        options["qe"] = ReRank(qe_k=qe_k, qe_alpha=alpha)
    if dba_k:
        options["dba"] = ReRank(dba_k=dba_k, dba_alpha=alpha)
    if qe_k and dba_k:
        options["dba+qe"] = ReRank(qe_k=qe_k, qe_alpha=alpha, dba_k=dba_k, dba_alpha=alpha)
    return options


def measured_index(validator: Validator, protocol: str, limit: int | None = None) -> list[Sample]:
    """The photos the options are measured on: the validation index, or on a catalogue larger
    than ``limit`` (default ``RERANK_PHOTOS``) every photo of the queries' products and a
    seeded sample of the others (DBA blends every photo with its neighbours among all: the
    whole index would cost photos squared)."""
    limit = RERANK_PHOTOS if limit is None else limit
    index = validator.split.index
    if len(index) <= limit:
        return list(index)
    own, others = validator.photos_around({q.cls for q in validator.split.validations[protocol].queries})
    return own + others[:max(0, limit - len(own))]


def _scores(queries: list[Sample], q: np.ndarray, index: list[Sample], vectors: np.ndarray, metric: Metric,
            rerank: ReRank) -> np.ndarray:
    """Per-query gate metric of ``q`` (the queries' vectors) searching ``vectors`` (the index,
    already augmented when ``rerank`` has DBA), expanded first when it has QE."""
    import torch

    expanded = torch.as_tensor(q)
    if rerank.qe_k:
        expanded = expand_queries(expanded, torch.as_tensor(vectors), rerank.qe_k, rerank.qe_alpha, metric)
    s = score_queries(expanded.numpy(), [x.cls for x in queries], vectors, [x.cls for x in index], metric)
    return s.metric(GATE_METRIC)


def choose_rerank(validator: Validator, embed: Embedder, metric: Metric, qe_k: int = 10,
                  dba_k: int = 10, alpha: float = 3.0) -> tuple[ReRank, dict]:
    """(the re-ranking to record, what was measured: each option's mean gate metric and its
    interval against none). Nothing is measured when the gate protocol cannot measure."""
    protocol = validator.gate_protocol
    if protocol not in validator.measurable:
        return NO_RERANK, {"chosen": "none", "note": "not measured: the validation cannot measure"}
    queries = validator.split.validations[protocol].queries
    index = measured_index(validator, protocol)
    plain = np.ascontiguousarray(embed(index), np.float32)
    augmented = augment_database(plain, dba_k, alpha, metric) if dba_k else plain  # once for dba and dba+qe
    q = np.ascontiguousarray(embed(queries), np.float32)
    options = rerank_options(qe_k, dba_k, alpha)
    scores = {name: _scores(queries, q, index, augmented if rr.dba_k else plain, metric, rr)
              for name, rr in options.items()}
    measured = {"protocol": protocol, "metric": GATE_METRIC, "qe_k": qe_k, "dba_k": dba_k, "alpha": alpha,
                "options": {}}
    if len(index) < len(validator.split.index):
        measured["index_photos"] = (f"{len(index)} of {len(validator.split.index)} (every photo of the "
                                    "queries' products and a sample of the others)")
    best, best_mean = "none", float(scores["none"].mean())
    for name, values in scores.items():
        row = {"mean": round(float(values.mean()), 4)}
        if name != "none":
            interval = paired_bootstrap(values, scores["none"], GATE_METRIC)
            row["vs_none"] = interval.as_dict()
            if interval.better and values.mean() > best_mean:
                best, best_mean = name, float(values.mean())
        measured["options"][name] = row
    measured["chosen"] = best
    return options[best], measured
