"""Run searches: by image, by indexed document, by text, with filters, hybrid or fused.

The query image is embedded with the model the index records in its ``_meta`` (never a guess),
and every hit's ``model_id`` must be that model.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import time
import weakref
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, cast

import numpy as np
from elasticsearch import Elasticsearch, NotFoundError

from ..errors import SearchError, shown
from ..images import DecodeLimits, decode
from ..index.client import api_errors
from ..index.indices import INFO_TTL_S, IndexInfo, index_info
from ..index.vectors import hit_vector, read_vector
from ..model.card import read_card
from ..model.pixels import square_pixels
from ..model.runtime import Inference, check_runtime, load_embedder
from ..similarity import Metric
from ..types import Fusion, ModelCard
from .cutoff import AUTO, MinSimilarity, auto_cutoff, count_cut, parse_min_similarity
from .examples import STRATEGIES, rocchio
from .diversity import collapse_field
from .facets import TERMS_SIZE, facet_aggs, facets_of
from .gallery import matched_image, product_vector
from .fusion import ADAPTIVE, DEFAULT_FUSION, DEFAULT_IMAGE_WEIGHT, DEFAULT_TEXT_WEIGHT, FUSIONS, adapted, window
from .hybrid import Ranking, Window
from .page import knn_page, windowed_search
from .queries import (MAX_NUM_CANDIDATES, MAX_QE_K, MAX_TEXT_FIELDS, default_candidates, expansion_body,
                      filter_clauses, parse_filter, text_field_paths)
from .textquery import NAME_BOOST, parse_text_query, with_text
from .rerank import NO_RERANK, ReRank, expand_query, query_similarities

log = logging.getLogger(__name__)
MAX_EXAMPLES = 20
MAX_RESULT_WINDOW = 10_000   # Elasticsearch's default index.max_result_window: from + size


@dataclass
class SearchRequest:
    image: bytes | None = None
    like: list[str] = field(default_factory=list)            # example document ids
    text: str | None = None
    filters: list[str] = field(default_factory=list)
    k: int = 10
    page: int = 1
    num_candidates: int | None = None
    fusion: Fusion = DEFAULT_FUSION   # checked again (check_request): surfaces pass user input
    image_weight: float = DEFAULT_IMAGE_WEIGHT
    text_weight: float = DEFAULT_TEXT_WEIGHT
    min_similarity: MinSimilarity = None      # a number, or "auto": the card's calibrated cut-off
    near_duplicates: bool = False
    text_fields: list[str] | None = None   # the default text leg's fields (unweighted); None: all, names x3
    qe_k: int | None = None           # query expansion neighbours; None: the model card's default
    unlike: list[str] = field(default_factory=list)          # negative example document ids
    like_images: list[bytes] = field(default_factory=list)   # more positive examples (uploads)
    unlike_images: list[bytes] = field(default_factory=list)
    examples: str = "mean"            # examples.STRATEGIES
    facets: list[str] = field(default_factory=list)
    facet_size: int = TERMS_SIZE      # values per terms facet (then an "other" row)
    text_query: dict[str, Any] | str | None = None   # the shop's own query as the text leg (textquery.py)
    collapse: str | None = None       # one hit per value of this field
    diversify: float | None = None    # MMR lambda in [0, 1]: 1 = plain relevance
    explain: bool = False             # per hit: each leg's score, rank, normalised score, weight

    def __post_init__(self) -> None:
        for name in ("like", "unlike", "text_fields"):   # one id (or field), as before several were allowed
            if isinstance(getattr(self, name), str):
                setattr(self, name, [getattr(self, name)])
        self.min_similarity = parse_min_similarity(self.min_similarity)
        if self.text_query is not None:
            self.text_query = parse_text_query(self.text_query)
        check_request(self)


def check_request(req: SearchRequest) -> None:
    """Refuse up front what Elasticsearch would refuse (or silently misread) later."""
    if req.fusion not in FUSIONS:
        raise SearchError(f"unknown fusion {shown(req.fusion)}", hint=f"use one of: {', '.join(FUSIONS)}")
    if req.examples not in STRATEGIES:
        raise SearchError(f"unknown example strategy {shown(req.examples)}",
                          hint=f"use one of: {', '.join(STRATEGIES)}")
    for name in ("k", "page"):
        value = getattr(req, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SearchError(f"{name} must be a whole number of at least 1, not {shown(value)}")
    if req.k * req.page > MAX_RESULT_WINDOW:
        raise SearchError(f"page {req.page} of k={req.k} reaches result {req.k * req.page}, past "
                          f"Elasticsearch's {MAX_RESULT_WINDOW:,}-result window",
                          hint="narrow the search with filters or text instead of paging this deep")
    for name, low, high, why in (("num_candidates", 1, MAX_NUM_CANDIDATES, " (Elasticsearch's limit)"),
                                 ("qe_k", 0, MAX_QE_K, " (0: no query expansion)")):
        value = getattr(req, name)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool)
                                      and low <= value <= high):
            raise SearchError(f"{name} must be a whole number from {low} to {high:,}{why}, not {shown(value)}")
    for name in ("image_weight", "text_weight"):
        value = getattr(req, name)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)
                                      and (value >= 0 or name == "min_similarity")):
            raise SearchError(f"{name} must be a finite number"
                              f"{'' if name == 'min_similarity' else ' of at least 0'}, not {shown(value)}")
    if req.text is not None and not (isinstance(req.text, str) and req.text.strip()):
        raise SearchError("empty text", hint="leave text out, or give one")
    for name in ("like", "unlike", "filters", "facets", "text_fields"):
        values = getattr(req, name) or []
        if not isinstance(values, (list, tuple)):
            raise SearchError(f"{name} must be a list of strings, not {shown(values)}")
        if not all(isinstance(v, str) for v in values):
            raise SearchError(f"{name} must be strings", hint="filters look like FIELD=VALUE" * (name == "filters"))
        if not all(v.strip() for v in values):
            raise SearchError(f"empty {name}", hint=f"leave {name} out, or give a value")
    if len(req.like) + len(req.unlike) + len(req.like_images) + len(req.unlike_images) > MAX_EXAMPLES:
        raise SearchError("too many examples", hint=f"give at most {MAX_EXAMPLES} in all")
    if len(req.text_fields or []) > MAX_TEXT_FIELDS:
        raise SearchError("too many text fields", hint=f"give at most {MAX_TEXT_FIELDS}")
    check_ranking(req)


def check_ranking(req: SearchRequest) -> None:
    """The options that shape the ranking after fusion (diversify, collapse, explain); near_duplicates."""
    lam = req.diversify
    if lam is not None and not (isinstance(lam, (int, float)) and not isinstance(lam, bool)
                                and math.isfinite(lam) and 0 <= lam <= 1):
        raise SearchError(f"diversify must be a number from 0 to 1, not {shown(lam)}",
                          hint="1 ranks by relevance alone, 0 by variety alone; try 0.7")
    if req.collapse is not None and not (isinstance(req.collapse, str) and req.collapse.strip()):
        raise SearchError(f"collapse needs a field name, not {shown(req.collapse)}")
    for name in ("explain", "near_duplicates"):
        if not isinstance(getattr(req, name), bool):
            raise SearchError(f"{name} must be true or false, not {shown(getattr(req, name))}")


def mapping_properties(client: Elasticsearch, concrete: str) -> dict[str, Any]:
    properties: dict[str, Any] = client.indices.get_mapping(index=concrete)[concrete]["mappings"].get(
        "properties", {})
    return properties


_INFO_CACHE: "weakref.WeakKeyDictionary[Elasticsearch, dict[str, Any]]" = weakref.WeakKeyDictionary()


def resolve(client: Elasticsearch, index: str, fresh: bool = False) -> tuple[IndexInfo, dict[str, Any]]:
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


def text_fields_of(properties: dict[str, Any]) -> list[str]:
    return sorted(name for name, node in properties.items() if node.get("type") == "text")


def image_vector(info: IndexInfo, data: bytes, limits: DecodeLimits = DecodeLimits(),
                 inference: Inference = Inference()) -> list[float]:
    """Embed query image bytes with the index's own model (the node's runtime and device). With
    an ONNX export, torch is never imported: ONNX Runtime embeds the pixels of Pillow's kernel."""
    model = load_embedder(info.model_path, inference.runtime, inference.device, query=True)
    if model.card["model_id"] != info.model_id:
        raise SearchError(f"model file {info.model_path} is {model.card['model_id']}, but the index "
                          f"serves {info.model_id}; es-metric never mixes models", hint="restore the file")
    check_runtime(model, info.runtime, info.runtime_parity, info.runtime_variant)
    size = int(model.card["preprocess"]["size"])
    pixels = square_pixels(decode(data, limits, draft=size), size, torch_kernel=model.runtime == "torch")
    vector: list[float] = model.embed(pixels[None])[0].tolist()
    return vector


def doc_vector(client: Elasticsearch, info: IndexInfo, doc_id: str) -> list[float]:
    found = (product_vector(client, info, doc_id) if info.photos_field  # its photos combined
             else read_vector(client, info.concrete, doc_id, info.fields))
    if found is None:
        raise SearchError(f"no document {shown(doc_id)} in {info.name!r}")
    vector, model_id = found
    if vector is None:
        raise SearchError(f"document {shown(doc_id)} has no vector yet", hint="ingest its image first")
    if not info.serves(model_id):
        raise SearchError(f"document {shown(doc_id)} was embedded by {model_id}, the index serves "
                          f"{info.model_id}", hint="reindex with `esm reindex`")
    return vector


def recorded_card(info: IndexInfo) -> Mapping[str, Any]:
    """What the index recorded from its model card at mapping creation; indices made before
    the index recorded it fall back to the model file's card (read without torch)."""
    if info.rerank is not None or info.near_duplicate_threshold is not None:
        return {"rerank": info.rerank, "metrics": {
            "near_duplicate_threshold": info.near_duplicate_threshold, "cutoff": info.cutoff,
            "duplicate_threshold": info.duplicate_threshold}}
    path = info.model_path
    return _file_card(path, os.stat(path).st_mtime_ns if os.path.isfile(path) else 0)


@functools.lru_cache(maxsize=8)
def _file_card(path: str, _stamp: int) -> ModelCard:
    """A model file's card, read once per file version (``_stamp``: its mtime), not per search."""
    return read_card(path)


def near_duplicate_threshold(info: IndexInfo) -> float:
    value = (recorded_card(info).get("metrics") or {}).get("near_duplicate_threshold")
    if value is None:
        raise SearchError(f"model {info.model_id} has no calibrated near-duplicate threshold",
                          hint="pass --min-similarity explicitly")
    return float(value)


def similarity_floor(info: IndexInfo, req: SearchRequest) -> float | None:
    """The kNN similarity floor of ``req``: the near-duplicate threshold, the card's calibrated
    cut-off (``auto``), a number, or none."""
    if req.near_duplicates:
        return near_duplicate_threshold(info)
    if req.min_similarity == AUTO:
        return auto_cutoff(recorded_card(info), info.model_id)
    return req.min_similarity  # type: ignore[return-value]  # a float after parse_min_similarity


def query_expansion(info: IndexInfo, req: SearchRequest) -> ReRank:
    """The re-ranking this search applies: the index's recorded default, or ``req.qe_k``
    (0: off, and nothing needs reading)."""
    if req.qe_k == 0 or info.photos_field:  # QE blends documents' vectors, not photos'
        return NO_RERANK
    rr = ReRank.from_dict(recorded_card(info).get("rerank"))
    return rr if req.qe_k is None else replace(rr, qe_k=req.qe_k)


def expanded_vector(client: Elasticsearch, info: IndexInfo, vector: list[float], rr: ReRank,
                    filt: dict[str, Any], exclude_ids: list[str] | None, num_candidates: int | None) -> list[float]:
    """QE: a first kNN round under the same filters; its top ``rr.qe_k`` vectors blended into
    the query (rerank.expand_query), which the second round searches with."""
    body = expansion_body(info.vector_field, vector, rr.qe_k, model_field=info.fields.model_id,
                          filter_query=filt,
                          exclude_ids=exclude_ids, num_candidates=num_candidates)
    hits = client.search(index=info.concrete, body=body)["hits"]["hits"]
    nb = [v for h in hits if info.serves(info.fields.read(h.get("_source"), info.fields.model_id))
          for v in [hit_vector(h, info.vector_field)] if v is not None]
    if not nb:
        return vector
    metric, q, nb_arr = Metric(info.similarity), np.asarray(vector, np.float32), np.asarray(nb, np.float32)
    sims = query_similarities(q, nb_arr, metric)
    expanded: list[float] = expand_query(q, nb_arr, sims, rr.qe_alpha, metric).tolist()
    return expanded


def run_search(client: Elasticsearch, index: str, req: SearchRequest,
               limits: DecodeLimits = DecodeLimits(), where: str = "",
               inference: Inference = Inference()) -> dict[str, Any]:
    """Answer ``req`` on ``index``; the result matches the CLI contract's JSON. ``where``: the
    cluster's (redacted) address, named in errors for operators; the HTTP API leaves it out.
    ``inference``: the runtime and device that embed a query image."""
    started = time.perf_counter()
    with api_errors(f"the search on {shown(index)}", where):
        try:
            return _run(client, index, req, (limits, inference), started, *resolve(client, index))
        except NotFoundError:
            return _run(client, index, req, (limits, inference), started,
                        *resolve(client, index, fresh=True))


def _run(client: Elasticsearch, index: str, req: SearchRequest,
         embedding: tuple[DecodeLimits, Inference], started: float, info: IndexInfo,
         props: dict[str, Any]) -> dict[str, Any]:
    filt = filter_clauses([parse_filter(f) for f in req.filters], props)
    fields = text_field_paths(req.text_fields, props) if req.text_fields else text_fields_of(props)
    limits, inference = embedding
    aggs = facet_aggs(req.facets, props, req.facet_size) if req.facets else None
    pos, neg = _examples(client, info, req, limits, inference)
    if info.photos_field and req.examples == "max" and len(pos) > 1:
        raise SearchError("--examples max needs one vector per document; a multi-photo index has several",
                          hint="use --examples mean (the default)")
    exclude = list(dict.fromkeys(req.like + req.unlike)) or None
    vector = rocchio(np.asarray(pos), np.asarray(neg), Metric(info.similarity)).tolist() \
        if pos and (req.examples == "mean" or len(pos) == 1) else None
    rr = query_expansion(info, req) if pos else None
    size, offset = req.k, (req.page - 1) * req.k
    nc = req.num_candidates or default_candidates(offset + size, info.candidates_factor)
    if vector is not None and rr and rr.qe_k > 0:
        vector = expanded_vector(client, info, vector, rr, filt, exclude,
                                 req.num_candidates or default_candidates(rr.qe_k, info.candidates_factor))
    min_sim = similarity_floor(info, req)
    if not pos and not req.text and req.text_query is None:
        raise SearchError("nothing to search with", hint="give an image, a document id or text")
    w = _window(req, props, (vector, pos, neg), filt, exclude, (min_sim, nc), fields)
    hits, took, ranking, raw_aggs = _search(client, info, w, offset, size, aggs)
    result = _result(info, hits, took, started, req, filtered=bool(filt))
    _annotate(result, req, w, ranking, facets_of(raw_aggs, req.facets) if aggs else None, bool(pos))
    if rr is not None and vector is not None:
        result["query_expansion"] = {"k": rr.qe_k, "alpha": rr.qe_alpha}
    if min_sim is not None and pos:  # how many of the first page x k image matches fell below
        result.update(min_similarity=min_sim, cut=count_cut(
            client, info, [vector] if vector is not None else pos, offset + size, min_sim,
            num_candidates=nc, filter_query=filt, exclude_ids=exclude))
    return result


def _window(req: SearchRequest, props: dict[str, Any], vectors: tuple[Any, ...], filt: dict[str, Any],
            exclude: list[str] | None, knn: tuple[Any, ...], fields: list[str]) -> Window:
    """What the search ranks with: the query vector or examples, text (over ``fields``) or the
    shop's query, filters, exclusions, floor and candidates (``knn``), and what follows fusion."""
    vector, pos, neg = vectors
    min_sim, nc = knn
    return Window(size=window(req.k, req.page), vector=vector, positives=[] if vector else pos,
                  negatives=[] if vector else neg, text=req.text, fields=fields,
                  filt=filt, exclude=exclude or [], min_similarity=min_sim, num_candidates=nc,
                  image_weight=req.image_weight, text_weight=req.text_weight, fusion=req.fusion,
                  text_query=with_text(cast(dict[str, Any], req.text_query), req.text)  # parsed: __post_init__
                  if req.text_query is not None else None,
                  collapse=collapse_field(req.collapse, props) if req.collapse else None,
                  diversify=req.diversify, explain=req.explain,
                  name_boost=1.0 if req.text_fields else NAME_BOOST)


def _search(client: Elasticsearch, info: IndexInfo, w: Window, offset: int, k: int, aggs: dict[str, Any] | None,
            ) -> tuple[list[dict[str, Any]], int, Ranking | None, dict[str, Any]]:
    """(hits, took ms, the fused ranking or None, raw aggregations): an image-only page is one
    kNN search paged (and collapsed) by Elasticsearch; anything else the windowed search."""
    if w.vector is not None and not w.has_text and not aggs and w.diversify is None and not w.explain:
        hits, took = knn_page(client, info, w, offset, k)
        return hits, took, None, {}
    t0 = time.perf_counter()
    hits, raw_aggs, ranking = windowed_search(client, info, w, offset, k, aggs)
    return hits, round((time.perf_counter() - t0) * 1000), ranking, raw_aggs


def _annotate(result: dict[str, Any], req: SearchRequest, w: Window, ranking: Ranking | None,
              facets: dict[str, Any] | None,
              by_image: bool) -> None:
    """The answer's facets and how it was ranked: fusion (and where), collapse, diversify."""
    if facets is not None:
        result["facets"] = facets
    if w.has_text and by_image:
        result["fusion"] = {"method": req.fusion, "image_weight": req.image_weight,
                            "text_weight": req.text_weight, "where": ranking.where if ranking else "client"}
        decided = adapted(ranking.legs)[1] if ranking and req.fusion == ADAPTIVE else None
        if decided is not None:     # the weight this query's text got (fusion.adapted)
            result["fusion"].update(agreement=decided["agreement"], text_weight_used=decided["text_weight"])
    for name, value in (("collapse", req.collapse), ("diversify", req.diversify)):
        if value is not None:
            result[name] = value


def _examples(client: Elasticsearch, info: IndexInfo, req: SearchRequest, limits: DecodeLimits,
              inference: Inference) -> tuple[list[Any], list[Any]]:
    """Positive and negative example vectors: the image, uploads, indexed documents."""
    pos = [image_vector(info, data, limits, inference)
           for data in ([req.image] if req.image is not None else [])
           + req.like_images]
    pos += [doc_vector(client, info, d) for d in req.like]
    neg = [image_vector(info, data, limits, inference) for data in req.unlike_images]
    neg += [doc_vector(client, info, d) for d in req.unlike]
    if neg and not pos:
        raise SearchError("negative examples alone say nothing to search for",
                          hint="add an image or --like, or drop --unlike")
    return pos, neg


def _result(info: IndexInfo, hits: list[dict[str, Any]], took: int, started: float, req: SearchRequest,
            filtered: bool) -> dict[str, Any]:
    out = []
    for h in hits:
        src = h.get("_source", {})
        stamp = info.fields.read(src, info.fields.model_id)
        if not info.serves(stamp):
            raise SearchError(f"hit {h['_id']} was embedded by {stamp}, not "
                              f"{info.model_id}; es-metric never mixes models",
                              hint="finish or abandon the reindex")
        item = {"id": h["_id"], "score": h.get("_score"), "source": src}
        if h.get("highlight"):
            item["highlight"] = h["highlight"]
        if info.photos_field:
            item["matched_image"] = matched_image(h, info.photos_field)
        if "_explain" in h:
            item["explain"] = h["_explain"]
        out.append(item)
    result = {"hits": out, "took_ms": took, "model_id": info.model_id, "index": info.concrete,
              "client_ms": round((time.perf_counter() - started) * 1000, 2), "page": req.page}
    if len(out) < req.k:
        why = "the filters" if filtered else "the index"
        result["note"] = f"only {len(out)} result(s): {why} leave fewer than k={req.k} matches"
    return result

