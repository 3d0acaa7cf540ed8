"""Re-ranking chosen per catalogue: none, query expansion (QE), database-side augmentation
(DBA) or both, measured on the run's own validation queries.

Both blend a vector with its neighbours, which helps when a product's neighbours are mostly its
own photos (many photos per product) and blends in other products when it has few. So nothing
is assumed: each option is scored on the gate protocol's queries (DBA augments the validation
index, QE expands each query against it), and the card records only an option that beats "none"
beyond the paired bootstrap's margin (the best such one); otherwise none.
"""
from __future__ import annotations

import numpy as np

from ..search.rerank import augment_database, expand_queries
from ..similarity import Metric
from ..types import NO_RERANK, ReRank
from .scoring import paired_bootstrap, score_queries
from .validate import GATE_METRIC, Embedder, Validator

__all__ = ["choose_rerank", "rerank_options"]


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


def _scores(validator: Validator, protocol: str, embed: Embedder, metric: Metric, rerank: ReRank,
            index: np.ndarray) -> np.ndarray:
    import torch

    queries = validator.split.validations[protocol].queries
    if rerank.dba_k:
        index = augment_database(index, rerank.dba_k, rerank.dba_alpha, metric)
    q = torch.as_tensor(np.ascontiguousarray(embed(queries), np.float32))
    if rerank.qe_k:
        q = expand_queries(q, torch.as_tensor(index), rerank.qe_k, rerank.qe_alpha, metric)
    s = score_queries(q.numpy(), [x.cls for x in queries], index,
                      [x.cls for x in validator.split.index], metric)
    return s.metric(GATE_METRIC)


def choose_rerank(validator: Validator, embed: Embedder, metric: Metric, qe_k: int = 10,
                  dba_k: int = 10, alpha: float = 3.0) -> tuple[ReRank, dict]:
    """(the re-ranking to record, what was measured: each option's mean gate metric and its
    interval against none). Nothing is measured when the gate protocol cannot measure."""
    protocol = validator.gate_protocol
    if protocol not in validator.measurable:
        return NO_RERANK, {"chosen": "none", "note": "not measured: the validation cannot measure"}
    index = np.ascontiguousarray(embed(validator.split.index), np.float32)
    options = rerank_options(qe_k, dba_k, alpha)
    scores = {name: _scores(validator, protocol, embed, metric, rr, index) for name, rr in options.items()}
    measured = {"protocol": protocol, "metric": GATE_METRIC, "qe_k": qe_k, "dba_k": dba_k, "alpha": alpha,
                "options": {}}
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
