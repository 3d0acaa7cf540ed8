"""Run searches: by image, by indexed document, by text, with filters, hybrid or fused.

The query image is embedded with the model the index records in its ``_meta`` (never a guess),
and every hit's ``model_id`` must be that model.
"""
from __future__ import annotations

import logging
import math
import time
import weakref
from dataclasses import dataclass, field, replace

import numpy as np
from elasticsearch import Elasticsearch, NotFoundError

from ..errors import SearchError, shown
from ..images import DecodeLimits, decode
from ..index.client import api_errors
from ..index.indices import IndexInfo, index_info
from ..model.embed import embed_images
from ..model.modelfile import cached_model
from ..similarity import Metric
from .gallery import matched_image, product_vector, with_photos
from .queries import (expansion_body, filter_clauses, knn_clause, parse_filter, rrf_fuse,
                      search_body, text_query)
from .rerank import NO_RERANK, ReRank, expand_query, similarities

log = logging.getLogger(__name__)
FUSIONS = ("weighted", "rrf")
MAX_RESULT_WINDOW = 10_000   # Elasticsearch's default index.max_result_window: from + size
MAX_NUM_CANDIDATES = 10_000  # Elasticsearch's ceiling for a kNN search's num_candidates


@dataclass
class SearchRequest:
    image: bytes | None = None
    like: str | None = None
    text: str | None = None
    filters: list[str] = field(default_factory=list)
    k: int = 10
    page: int = 1
    num_candidates: int | None = None
    fusion: str = "weighted"          # weighted | rrf
    image_weight: float = 1.0
    text_weight: float = 1.0
    min_similarity: float | None = None
    near_duplicates: bool = False
    text_fields: list[str] | None = None
    qe_k: int | None = None           # query expansion neighbours; None: the model card's default

    def __post_init__(self) -> None:
        check_request(self)


def check_request(req: SearchRequest) -> None:
    """Refuse up front what Elasticsearch would refuse (or silently misread) later."""
    if req.fusion not in FUSIONS:
        raise SearchError(f"unknown fusion {shown(req.fusion)}", hint=f"use one of: {', '.join(FUSIONS)}")
    for name in ("k", "page"):
        value = getattr(req, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SearchError(f"{name} must be a whole number of at least 1, not {shown(value)}")
    if req.k * req.page > MAX_RESULT_WINDOW:
        raise SearchError(f"page {req.page} of k={req.k} reaches result {req.k * req.page}, past "
                          f"Elasticsearch's {MAX_RESULT_WINDOW:,}-result window",
                          hint="narrow the search with filters or text instead of paging this deep")
    if req.num_candidates is not None and not 1 <= req.num_candidates <= MAX_NUM_CANDIDATES:
        raise SearchError(f"num_candidates must be from 1 to {MAX_NUM_CANDIDATES:,} "
                          f"(Elasticsearch's limit), not {req.num_candidates}")
    for name in ("image_weight", "text_weight", "min_similarity"):
        value = getattr(req, name)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)
                                      and (value >= 0 or name == "min_similarity")):
            raise SearchError(f"{name} must be a finite number"
                              f"{'' if name == 'min_similarity' else ' of at least 0'}, not {shown(value)}")
    for name in ("text", "like"):
        value = getattr(req, name)
        if value is not None and not (isinstance(value, str) and value.strip()):
            raise SearchError(f"empty {name}", hint=f"leave {name} out, or give one")
    if not all(isinstance(f, str) for f in req.filters):
        raise SearchError("filters must be strings like FIELD=VALUE")


def mapping_properties(client: Elasticsearch, concrete: str) -> dict:
    return client.indices.get_mapping(index=concrete)[concrete]["mappings"].get("properties", {})


INFO_TTL_S = 2.0
_INFO_CACHE: "weakref.WeakKeyDictionary[Elasticsearch, dict]" = weakref.WeakKeyDictionary()


def resolve(client: Elasticsearch, index: str, fresh: bool = False) -> tuple[IndexInfo, dict]:
    """Index info and mapping properties, cached for INFO_TTL_S (saves 4 round trips a query).

    A stale entry can only point at the previous index of an alias, which a reindex keeps
    until --delete-old; a 404 from a deleted one is retried with fresh info.
    """
    per_client = _INFO_CACHE.setdefault(client, {})
    hit = per_client.get(index)
    if not fresh and hit and time.monotonic() - hit[0] < INFO_TTL_S:
        return hit[1], hit[2]
    info = index_info(client, index)
    props = mapping_properties(client, info.concrete)
    per_client[index] = (time.monotonic(), info, props)
    return info, props


def text_fields_of(properties: dict) -> list[str]:
    return sorted(name for name, node in properties.items() if node.get("type") == "text")


def image_vector(info: IndexInfo, data: bytes, limits: DecodeLimits = DecodeLimits()) -> list[float]:
    """Embed query image bytes with the index's own model."""
    model = cached_model(info.model_path)
    if model.model_id != info.model_id:
        raise SearchError(f"model file {info.model_path} is {model.model_id}, but the index serves "
                          f"{info.model_id}; es-metric never mixes models", hint="restore the file")
    img = decode(data, limits, draft=model.preprocess.size)
    return embed_images(model.encoder, [img], model.preprocess)[0].tolist()


def doc_vector(client: Elasticsearch, info: IndexInfo, doc_id: str) -> list[float]:
    if info.photos_field:
        return product_vector(client, info, doc_id)
    try:
        doc = client.get(index=info.concrete, id=doc_id, source_includes=[info.vector_field, "model_id"])
    except NotFoundError:
        raise SearchError(f"no document {shown(doc_id)} in {info.name!r}") from None
    src = doc["_source"]
    if info.vector_field not in src:
        raise SearchError(f"document {shown(doc_id)} has no vector yet", hint="ingest its image first")
    if src.get("model_id") not in (None, info.model_id):
        raise SearchError(f"document {shown(doc_id)} was embedded by {src['model_id']}, the index serves "
                          f"{info.model_id}", hint="reindex with `esm reindex`")
    return src[info.vector_field]


def recorded_card(info: IndexInfo) -> dict:
    """What the index recorded from its model card at mapping creation; indices made before
    the index recorded it fall back to the model file (loaded once per process)."""
    if info.rerank is not None or info.near_duplicate_threshold is not None:
        return {"rerank": info.rerank,
                "metrics": {"near_duplicate_threshold": info.near_duplicate_threshold}}
    return cached_model(info.model_path).card


def near_duplicate_threshold(info: IndexInfo) -> float:
    value = (recorded_card(info).get("metrics") or {}).get("near_duplicate_threshold")
    if value is None:
        raise SearchError(f"model {info.model_id} has no calibrated near-duplicate threshold",
                          hint="pass --min-similarity explicitly")
    return float(value)


def query_expansion(info: IndexInfo, req: SearchRequest) -> ReRank:
    """The re-ranking this search applies: the index's recorded default, or ``req.qe_k``
    (0: off, and nothing needs reading)."""
    if req.qe_k == 0 or info.photos_field:  # QE blends documents' vectors, not photos'
        return NO_RERANK
    rr = ReRank.from_dict(recorded_card(info).get("rerank"))
    return rr if req.qe_k is None else replace(rr, qe_k=req.qe_k)


def expanded_vector(client: Elasticsearch, info: IndexInfo, vector: list[float], rr: ReRank,
                    filt: dict, exclude_ids: list[str] | None, num_candidates: int | None) -> list[float]:
    """QE: a first kNN round under the same filters; its top ``rr.qe_k`` vectors blended into
    the query (rerank.expand_query), which the second round searches with."""
    body = expansion_body(info.vector_field, vector, rr.qe_k, filter_query=filt,
                          exclude_ids=exclude_ids, num_candidates=num_candidates)
    hits = client.search(index=info.concrete, body=body)["hits"]["hits"]
    nb = [h["_source"][info.vector_field] for h in hits
          if info.vector_field in h["_source"] and h["_source"].get("model_id") in (None, info.model_id)]
    if not nb:
        return vector
    import torch

    metric, q, nb_arr = Metric(info.similarity), np.asarray(vector, np.float32), np.asarray(nb, np.float32)
    sims = similarities(torch.from_numpy(q[None]), torch.from_numpy(nb_arr), metric)[0].numpy()
    return expand_query(q, nb_arr, sims, rr.qe_alpha, metric).tolist()


def run_search(client: Elasticsearch, index: str, req: SearchRequest,
               limits: DecodeLimits = DecodeLimits(), where: str = "") -> dict:
    """Answer ``req`` on ``index``; the result matches the CLI contract's JSON. ``where``: the
    cluster's (redacted) address, named in errors for operators; the HTTP API leaves it out."""
    started = time.perf_counter()
    with api_errors(f"the search on {shown(index)}", where):
        try:
            return _run(client, index, req, limits, started, *resolve(client, index))
        except NotFoundError:
            return _run(client, index, req, limits, started, *resolve(client, index, fresh=True))


def _run(client: Elasticsearch, index: str, req: SearchRequest, limits: DecodeLimits,
         started: float, info: IndexInfo, props: dict) -> dict:
    filt = filter_clauses([parse_filter(f) for f in req.filters], props)
    vector = _query_vector(client, info, req, limits)
    rr = query_expansion(info, req) if vector is not None else None
    if rr and rr.qe_k > 0:
        vector = expanded_vector(client, info, vector, rr, filt, [req.like] if req.like else None,
                                 req.num_candidates)
    size, offset = req.k, (req.page - 1) * req.k
    fields = req.text_fields or text_fields_of(props)
    min_sim = near_duplicate_threshold(info) if req.near_duplicates else req.min_similarity
    if vector is None and not req.text:
        raise SearchError("nothing to search with", hint="give an image, a document id or text")
    if vector is not None and req.text and req.fusion == "rrf":
        hits, took = _rrf(client, info, req, vector, filt, fields, min_sim)
    else:
        knn = None
        if vector is not None:
            # with text, a wider kNN window lets text matches also carry their image similarity
            knn_k = max(offset + size, 50) if req.text else offset + size
            knn = with_photos(info, knn_clause(
                info.vector_field, vector, knn_k, num_candidates=req.num_candidates,
                filter_query=filt, min_similarity=min_sim, boost=req.image_weight if req.text else None,
                exclude_ids=[req.like] if req.like else None))
        query = text_query(req.text, fields, filt, boost=req.text_weight) if req.text else None
        body = search_body(knn=knn, query=query, size=size, offset=offset,
                           vector_field=info.vector_field, highlight_fields=fields if req.text else None)
        resp = client.search(index=info.concrete, body=body)
        hits, took = resp["hits"]["hits"], resp["took"]
    result = _result(info, hits, took, started, req, filtered=bool(filt))
    if rr is not None:
        result["query_expansion"] = {"k": rr.qe_k, "alpha": rr.qe_alpha}
    return result


def _query_vector(client, info, req: SearchRequest, limits) -> list[float] | None:
    if req.image is not None and req.like:
        raise SearchError("give either an image or --like, not both")
    if req.image is not None:
        return image_vector(info, req.image, limits)
    if req.like:
        return doc_vector(client, info, req.like)
    return None


def _rrf(client, info: IndexInfo, req: SearchRequest, vector, filt, fields, min_sim):
    window = max(req.k * req.page, 50)
    knn = with_photos(info, knn_clause(info.vector_field, vector, window,
                                       num_candidates=req.num_candidates, filter_query=filt,
                                       min_similarity=min_sim,
                                       exclude_ids=[req.like] if req.like else None))
    by_image = client.search(index=info.concrete, body=search_body(
        knn=knn, size=window, vector_field=info.vector_field))
    by_text = client.search(index=info.concrete, body=search_body(
        query=text_query(req.text, fields, filt), size=window, vector_field=info.vector_field,
        highlight_fields=fields))
    docs = {h["_id"]: h for h in by_text["hits"]["hits"] + by_image["hits"]["hits"]}
    ranked = rrf_fuse([[h["_id"] for h in by_image["hits"]["hits"]],
                       [h["_id"] for h in by_text["hits"]["hits"]]])
    page = ranked[(req.page - 1) * req.k: req.page * req.k]
    hits = [dict(docs[i], _score=score) for i, score in page]
    return hits, by_image["took"] + by_text["took"]


def _result(info: IndexInfo, hits: list[dict], took: int, started: float, req: SearchRequest,
            filtered: bool) -> dict:
    out = []
    for h in hits:
        src = h.get("_source", {})
        if src.get("model_id") not in (None, info.model_id):
            raise SearchError(f"hit {h['_id']} was embedded by {src['model_id']}, not "
                              f"{info.model_id}; es-metric never mixes models",
                              hint="finish or abandon the reindex")
        item = {"id": h["_id"], "score": h.get("_score"), "source": src}
        if h.get("highlight"):
            item["highlight"] = h["highlight"]
        if info.photos_field:
            item["matched_image"] = matched_image(h, info.photos_field)
        out.append(item)
    result = {"hits": out, "took_ms": took, "model_id": info.model_id, "index": info.concrete,
              "client_ms": round((time.perf_counter() - started) * 1000, 2), "page": req.page}
    if len(out) < req.k:
        why = "the filters" if filtered else "the index"
        result["note"] = f"only {len(out)} result(s): {why} leave fewer than k={req.k} matches"
    return result

