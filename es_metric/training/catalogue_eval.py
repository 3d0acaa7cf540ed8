"""`esm evaluate` on a catalogue (a class folder, a catalogue JSONL or an index): every photo of a
product with two photos or more searches all the other photos, ranked as search ranks (the
card's re-ranking), the pretrained baseline beside it on the same queries, with the paired
bootstrap interval of each difference. Beyond ``MAX_EVAL_QUERIES`` such photos, whole products
in a seeded order query (each still searches every photo), and the answer says so. With DBA
(every photo blended with its neighbours among all: photos squared), beyond ``RERANK_PHOTOS``
photos the model and the baseline search every photo of the queries' products and whole other
products in a seeded order up to that many (only those are embedded), and the answer says so.

Products are ranked by their best photo (``recall_at_k`` counts products); MAP@R and mAP rank
photos. On the catalogue a model was trained on, this measures photos it has seen: the figures
are then optimistic, and the answer says so (``trained_on_this_catalogue``).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..config import Settings
from ..errors import ConfigError
from ..model.card import card_cutoff
from ..types import NO_RERANK, CutoffCheck, ReRank
from .catalogue import Catalogue, read_catalogue
from .config import MAX_EVAL_QUERIES, RERANK_PHOTOS
from .data import fingerprint
from .evaluate import Embedded, baseline_embeddings, model_embeddings
from .scoring import QueryScores, paired_bootstrap, score_queries, summary_of

__all__ = ["CatalogueEvaluation", "MAX_EVAL_QUERIES", "QueryRows", "RERANK_PHOTOS", "dba_index",
           "evaluate_catalogue", "query_rows", "ranked"]


@dataclass
class CatalogueEvaluation:
    metrics: dict
    model: Embedded                  # the model's vectors (the report ranks them with metrics["rerank"])
    baseline: Embedded | None


@dataclass(frozen=True)
class QueryRows:
    rows: np.ndarray                 # the query photos' rows in the catalogue
    eligible: int                    # photos of products with two or more: what could query

    @property
    def sampled(self) -> bool:
        return len(self.rows) < self.eligible


def _rows_by_product(cat: Catalogue) -> dict[str, list[int]]:
    by_product: dict[str, list[int]] = {}
    for i, s in enumerate(cat.samples):
        by_product.setdefault(s.cls, []).append(i)
    return by_product


def _whole_products(products: list[str], by_product: dict[str, list[int]], taken: list[int],
                    limit: int) -> list[int]:
    """``taken`` plus the rows of whole ``products`` (sorted, then in a seeded order) until it
    holds at least ``limit`` rows."""
    order = sorted(products)
    random.Random(0).shuffle(order)
    for p in order:
        if len(taken) >= limit:
            break
        taken = taken + by_product[p]
    return taken


def query_rows(cat: Catalogue, max_queries: int | None = MAX_EVAL_QUERIES) -> QueryRows:
    """The photos that query: every photo of a product with two or more, or on a large
    catalogue whole such products in a seeded order until ``max_queries`` (each still searches
    every photo; queries x photos is what evaluation costs)."""
    by_product = _rows_by_product(cat)
    several = sorted(p for p, rows in by_product.items() if len(rows) >= 2)
    eligible = sum(len(by_product[p]) for p in several)
    if not several:
        raise ConfigError(f"{cat.source}: no product has two usable photos, so no photo can find another "
                          "of its product: nothing to measure", hint="give products with two photos or more")
    if max_queries and eligible > max_queries:
        return QueryRows(np.array(sorted(_whole_products(several, by_product, [], max_queries))), eligible)
    return QueryRows(np.array(sorted(i for p in several for i in by_product[p])), eligible)


def dba_index(cat: Catalogue, queries: QueryRows,
              max_photos: int | None = RERANK_PHOTOS) -> tuple[Catalogue, QueryRows, str | None]:
    """The photos searched under DBA, which blends every photo with its neighbours among all of
    them (photos squared): the catalogue, or beyond ``max_photos`` (None or 0: no bound) every
    photo of the queries' products and whole other products in a seeded order up to that many;
    with the queries' rows in it and the note that says so (None when nothing was left out)."""
    total = len(cat.samples)
    if not max_photos or total <= max_photos:
        return cat, queries, None
    by_product = _rows_by_product(cat)
    asked = {cat.samples[i].cls for i in queries.rows}
    keep = sorted(_whole_products([p for p in by_product if p not in asked], by_product,
                                  [i for p in asked for i in by_product[p]], max_photos))
    position = {row: n for n, row in enumerate(keep)}
    sub = replace(cat, samples=[cat.samples[i] for i in keep])
    note = (f"{len(keep)} of {total} photos are searched (every photo of the query products, then whole other "
            "products in a seeded order; the baseline the same): DBA blends every photo with its neighbours "
            "among all of them, photos squared. Fewer other photos rank higher figures than every photo would; "
            "--max-dba-photos 0 searches every photo")
    return sub, QueryRows(np.array([position[i] for i in queries.rows]), queries.eligible), note


def ranked(emb: Embedded, cat: Catalogue, rerank: ReRank = NO_RERANK,
           queries: QueryRows | None = None) -> tuple[QueryScores, np.ndarray]:
    """Per-query scores of the query photos (default: ``query_rows``) searching every other
    photo, and the vectors as ranked."""
    import torch

    from ..search.rerank import augment_database, expand_queries

    vecs = np.ascontiguousarray(emb.vectors, np.float32)
    if rerank.dba_k:
        vecs = augment_database(vecs, rerank.dba_k, rerank.dba_alpha, emb.metric)
    rows = (queries or query_rows(cat)).rows
    refs = torch.as_tensor(vecs)
    own = torch.as_tensor(rows, dtype=torch.long)
    q = expand_queries(refs[own], refs, rerank.qe_k, rerank.qe_alpha, emb.metric, self_rows=own)
    products = [s.cls for s in cat.samples]
    scores = score_queries(q.numpy(), [products[i] for i in rows], vecs, products, emb.metric,
                           cat.groups or None, self_rows=rows, full=True)
    return scores, vecs


def _contract(summary: dict, scores: QueryScores, emb: Embedded, rerank: ReRank, queries: QueryRows,
              index_note: str | None = None) -> dict:
    out = {**summary, "precision_at_1": summary["recall_at_1"], "n_classes": scores.n_products,
           "metric": emb.metric.value, "name": emb.name, "rerank": rerank.as_dict()}
    if queries.sampled:
        searched = "" if index_note else "; each searches every photo"
        out["queries_sampled"] = (f"{len(queries.rows)} of {queries.eligible} photos query (whole products, "
                                  f"seeded{searched}): --max-queries 0 ranks them all")
    if index_note:
        out["index_sampled"] = index_note
    return out


def evaluate_catalogue(data: str | Path | None, settings: Settings, *, model_path: str | None = None,
                       baseline: str | None = None, weights: str | None = None,
                       from_index: str | None = None, group_field: str | None = None,
                       qe_k: int | None = None, dba_k: int | None = None,
                       batch_size: int = 64, max_queries: int | None = MAX_EVAL_QUERIES,
                       max_dba_photos: int | None = RERANK_PHOTOS) -> CatalogueEvaluation:
    """The metrics of a model (with its backbone's pretrained baseline beside) or of a baseline;
    ``max_queries``: photos that query at most (None or 0: every photo); ``max_dba_photos``: with
    DBA, photos searched at most (``dba_index``; the baseline searches the same ones)."""
    if bool(model_path) == bool(baseline):
        raise ConfigError("give exactly one of --model or --baseline")
    cat = read_catalogue(data, settings, group_field=group_field, from_index=from_index)
    queries = query_rows(cat, max_queries)
    if baseline:
        emb = baseline_embeddings(baseline, cat.samples, weights)
        scores, _ = ranked(emb, cat, NO_RERANK, queries)
        return CatalogueEvaluation({**_contract(summary_of(scores), scores, emb, NO_RERANK, queries),
                                    "skipped": cat.skipped_records()}, emb, None)
    from ..model.modelfile import load_model

    model = load_model(model_path)
    card_rr = ReRank.from_dict(model.card.get("rerank"))
    rerank = ReRank(card_rr.qe_k if qe_k is None else qe_k, card_rr.qe_alpha,
                    card_rr.dba_k if dba_k is None else dba_k, card_rr.dba_alpha)
    whole = cat
    if rerank.dba_k:
        cat, queries, index_note = dba_index(cat, queries, max_dba_photos)
    else:
        index_note = None
    emb = model_embeddings(model, cat.samples, batch_size)
    base = baseline_embeddings(model.card["backbone"], cat.samples, (model.card.get("training") or {}).get("weights"))
    scores, _ = ranked(emb, cat, rerank, queries)
    base_scores, _ = ranked(base, cat, NO_RERANK, queries)
    metrics = _contract(summary_of(scores), scores, emb, rerank, queries, index_note)
    metrics.update(baseline=_contract(summary_of(base_scores), base_scores, base, NO_RERANK, queries, index_note),
                   difference={n: paired_bootstrap(scores.metric(n), base_scores.metric(n), n).as_dict()
                               for n in scores.names},
                   trained_on_this_catalogue=model.card.get("data_fingerprint") == fingerprint(whole.samples),
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
