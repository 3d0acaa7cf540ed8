"""What a training run's card says about the model: both protocols against the pretrained
baseline, the gate with its margin, the re-ranking it chose, and the near-duplicate threshold.
"""
from __future__ import annotations

import numpy as np

from ..model.encoder import Encoder
from ..similarity import Metric
from .calibrate import calibrate_cutoff, duplicates_for
from .data import Sample
from .gate import calibrate_near_duplicates
from ..types import ReRank
from .rerank_choice import choose_rerank
from .validate import Embedder, Validator, gate_verdict

__all__ = ["calibration_threshold", "calibrations", "validation_metrics", "CALIBRATION_PHOTOS"]

CALIBRATION_PHOTOS = 3000  # pairs of at most this many photos (all pairs: memory grows squared)


def validation_metrics(validator: Validator, model: Embedder, baseline: Embedder, encoder: Encoder,
                       against: str, cfg) -> tuple[dict, dict]:
    """(the card's metrics, the re-ranking measured: ``choose_rerank``'s record); ``encoder``:
    the model ``model`` embeds with (the measured head), for the calibrations."""
    metric = encoder.metric
    model_scores = validator.scores(model, metric)
    validation = validator.report(model_scores, validator.scores(baseline, Metric.COSINE))
    gate = gate_verdict(validation, validator.gate_protocol, against)
    rerank, measured = choose_rerank(validator, model, metric, cfg.qe_k, cfg.dba_k, cfg.qe_alpha)
    out = {"validation": validation, "gate": gate, "rerank_measured": measured,
           **calibrations(validator, model, encoder, cfg, rerank), **_intent(validation)}
    fig = validation.get(validator.gate_protocol) or {}
    if "model" in fig:  # the gate protocol's figures under the keys older cards had
        out["val"] = {k: fig["model"][k] for k in ("map_at_r", "recall_at_1", "recall_at_10", "mrr", "n_queries")}
        out["baseline_val"] = {k: fig["baseline"][k] for k in ("map_at_r", "recall_at_1", "recall_at_10", "mrr")}
    return out, rerank.as_dict()


def _intent(validation: dict) -> dict:
    """Whether the model beats the baseline on products it never saw, and what it is for."""
    unseen = validation.get("class-disjoint") or {}
    transfers = None if "difference" not in unseen else bool(unseen["difference"]["map_at_r"]["better"])
    intended = ("new products as well as the catalogue it was trained on" if transfers else
                "the catalogue it was trained on (new photos of known products)"
                if transfers is False else "the catalogue it was trained on (not measured on new products)")
    return {"transfers_to_new_products": transfers, "intended_for": intended}


def calibration_photos(validator: Validator) -> tuple[list[Sample], np.ndarray]:
    """Validation photos for the calibrations (queries and the photos of their products first,
    then others, at most CALIBRATION_PHOTOS) and their product labels."""
    queries = [q for v in validator.split.validations.values() for q in v.queries]
    own, others = validator.photos_around({q.cls for q in queries})
    photos = (queries + own + others)[:CALIBRATION_PHOTOS]
    names = {c: i for i, c in enumerate(sorted({s.cls for s in photos}))}
    return photos, np.array([names[s.cls] for s in photos], dtype=np.int64)


def calibration_threshold(validator: Validator, model: Embedder, metric: Metric) -> float | None:
    """The near-duplicate threshold from pairs of the validation photos."""
    photos, labels = calibration_photos(validator)
    if len(photos) < 2:
        return None
    return calibrate_near_duplicates(np.ascontiguousarray(model(photos), np.float32), labels, metric)


def calibrations(validator: Validator, model: Embedder, encoder: Encoder, cfg, rerank: ReRank) -> dict:
    """The card's thresholds, on held-out validation photos: the near-duplicate threshold, the
    search cut-off (``--min-similarity auto``, with the re-ranking the card records) and the
    copy-calibrated duplicate threshold (``esm duplicates``), see training/calibrate.py."""
    photos, labels = calibration_photos(validator)
    if len(photos) < 2:
        return {"near_duplicate_threshold": None, "cutoff": None, "duplicate_threshold": None}
    vecs = np.ascontiguousarray(model(photos), np.float32)
    return {"near_duplicate_threshold": calibrate_near_duplicates(vecs, labels, encoder.metric),
            "cutoff": calibrate_cutoff(vecs, labels, encoder.metric, rerank,
                                       precision=cfg.cutoff_precision),
            "duplicate_threshold": duplicates_for(encoder, cfg, photos, vecs, labels)}
