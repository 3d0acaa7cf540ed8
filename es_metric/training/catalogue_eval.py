"""`esm evaluate` on a catalogue (a class folder, a catalogue JSONL or an index): every photo of a
product with two photos or more searches all the other photos, ranked as search ranks (the
card's re-ranking), the pretrained baseline beside it on the same queries, with the paired
bootstrap interval of each difference.

Products are ranked by their best photo (``recall_at_k`` counts products); MAP@R and mAP rank
photos. On the catalogue a model was trained on, this measures photos it has seen: the figures
are then optimistic, and the answer says so (``trained_on_this_catalogue``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Settings
from ..errors import ConfigError
from ..model.card import card_cutoff
from ..types import NO_RERANK, CutoffCheck, ReRank
from .catalogue import Catalogue, read_catalogue
from .data import fingerprint
from .evaluate import Embedded, baseline_embeddings, model_embeddings
from .scoring import QueryScores, paired_bootstrap, score_queries, summary_of

__all__ = ["CatalogueEvaluation", "evaluate_catalogue", "ranked"]


@dataclass
class CatalogueEvaluation:
    metrics: dict
    model: Embedded                  # the model's vectors (the report ranks them with metrics["rerank"])
    baseline: Embedded | None


def ranked(emb: Embedded, cat: Catalogue, rerank: ReRank = NO_RERANK) -> tuple[QueryScores, np.ndarray]:
    """Per-query scores of every photo searching the others, and the vectors as ranked."""
    import torch

    from ..search.rerank import augment_database, expand_queries

    vecs = np.ascontiguousarray(emb.vectors, np.float32)
    if rerank.dba_k:
        vecs = augment_database(vecs, rerank.dba_k, rerank.dba_alpha, emb.metric)
    counts: dict[str, int] = {}
    for s in cat.samples:
        counts[s.cls] = counts.get(s.cls, 0) + 1
    rows = np.array([i for i, s in enumerate(cat.samples) if counts[s.cls] >= 2])
    if not len(rows):
        raise ConfigError(f"{cat.source}: no product has two usable photos, so no photo can find another "
                          "of its product: nothing to measure", hint="give products with two photos or more")
    q = torch.as_tensor(vecs)
    if rerank.qe_k:
        q = expand_queries(q, q, rerank.qe_k, rerank.qe_alpha, emb.metric, self_index=True)
    products = [s.cls for s in cat.samples]
    scores = score_queries(q.numpy()[rows], [products[i] for i in rows], vecs, products, emb.metric,
                           cat.groups or None, self_rows=rows, full=True)
    return scores, vecs


def _contract(summary: dict, scores: QueryScores, emb: Embedded, rerank: ReRank) -> dict:
    return {**summary, "precision_at_1": summary["recall_at_1"], "n_classes": scores.n_products,
            "metric": emb.metric.value, "name": emb.name, "rerank": rerank.as_dict()}


def evaluate_catalogue(data: str | Path | None, settings: Settings, *, model_path: str | None = None,
                       baseline: str | None = None, weights: str | None = None,
                       from_index: str | None = None, group_field: str | None = None,
                       qe_k: int | None = None, dba_k: int | None = None,
                       batch_size: int = 64) -> CatalogueEvaluation:
    """The metrics of a model (with its backbone's pretrained baseline beside) or of a baseline."""
    if bool(model_path) == bool(baseline):
        raise ConfigError("give exactly one of --model or --baseline")
    cat = read_catalogue(data, settings, group_field=group_field, from_index=from_index)
    if baseline:
        emb = baseline_embeddings(baseline, cat.samples, weights)
        scores, _ = ranked(emb, cat)
        return CatalogueEvaluation({**_contract(summary_of(scores), scores, emb, NO_RERANK),
                                    "skipped": cat.skipped_records()}, emb, None)
    from ..model.modelfile import load_model

    model = load_model(model_path)
    card_rr = ReRank.from_dict(model.card.get("rerank"))
    rerank = ReRank(card_rr.qe_k if qe_k is None else qe_k, card_rr.qe_alpha,
                    card_rr.dba_k if dba_k is None else dba_k, card_rr.dba_alpha)
    emb = model_embeddings(model, cat.samples, batch_size)
    base = baseline_embeddings(model.card["backbone"], cat.samples, (model.card.get("training") or {}).get("weights"))
    scores, _ = ranked(emb, cat, rerank)
    base_scores, _ = ranked(base, cat)
    metrics = _contract(summary_of(scores), scores, emb, rerank)
    metrics.update(baseline=_contract(summary_of(base_scores), base_scores, base, NO_RERANK),
                   difference={n: paired_bootstrap(scores.metric(n), base_scores.metric(n), n).as_dict()
                               for n in scores.names},
                   trained_on_this_catalogue=model.card.get("data_fingerprint") == fingerprint(cat.samples),
                   cutoff=_cutoff_here(model.card, emb, cat, rerank),
                   skipped=cat.skipped_records())
    return CatalogueEvaluation(metrics, emb, base)


def _cutoff_here(card: dict, emb: Embedded, cat: Catalogue, rerank: ReRank) -> CutoffCheck | None:
    """How the card's cut-off (``--min-similarity auto``) does on this catalogue's photos; None
    when the card has none (or a value that is not a finite number)."""
    from .calibrate import check_cutoff

    value = card_cutoff(card)
    if value is None:
        return None
    ids = {c: i for i, c in enumerate(sorted({s.cls for s in cat.samples}))}
    return check_cutoff(emb.vectors, np.array([ids[s.cls] for s in cat.samples]), emb.metric, value,
                        card["metrics"]["cutoff"].get("precision"), rerank)
