"""Fusion by the cluster where it can: the ``linear`` retriever (minmax per retriever) and the
``rrf`` retriever of Elasticsearch's rank-rrf module, with the client-side fusion (fusion.py)
as the fallback.

Whether a cluster has them is asked of the cluster itself, once per client and index every
``PROBE_TTL_S``: a search of size 0 whose retrievers match nothing. ``unknown retriever`` (no
rank-rrf module: the integ-test node, versions before the retriever) and a licence refusal (the
module needs an enterprise or trial licence) both mean "fuse here"; so does a weighted ``rrf``
that an older cluster cannot parse. The bodies are pure functions, unit-tested as dicts.
"""
from __future__ import annotations

import logging
import time
import weakref
from typing import Any

from elasticsearch import ApiError, Elasticsearch

from ..types import Fusion
from .fusion import RRF_K

log = logging.getLogger(__name__)
PROBE_TTL_S = 600.0
RETRIEVER = {"minmax": "linear", "rrf": "rrf"}   # fusion -> the retriever that does it


def components(knn: dict[str, Any], query: dict[str, Any], image_weight: float, text_weight: float,
               normalizer: str | None) -> list[dict[str, Any]]:
    """The two inner retrievers with their weights (and normalizer for ``linear``)."""
    legs = [{"retriever": {"knn": knn}, "weight": float(image_weight)},
            {"retriever": {"standard": {"query": query}}, "weight": float(text_weight)}]
    if normalizer:
        for leg in legs:
            leg["normalizer"] = normalizer
    return legs


def fusion_body(fusion: Fusion, knn: dict[str, Any], query: dict[str, Any], image_weight: float, text_weight: float,
                window: int, rrf_k: float = RRF_K) -> dict[str, Any]:
    """One request that fuses the kNN and text legs on the cluster and returns the whole
    fused window (ids and fused scores; documents are fetched later with the page)."""
    kind = RETRIEVER[fusion]
    inner: dict[str, Any] = {"retrievers": components(knn, query, image_weight, text_weight,
                                            "minmax" if kind == "linear" else None),
                   "rank_window_size": window}
    if kind == "rrf":
        inner["rank_constant"] = int(rrf_k)
    return {"size": window, "_source": False, "track_total_hits": False, "retriever": {kind: inner}}


def probe_body(kind: str) -> dict[str, Any]:
    """The cheapest request that only a cluster with the retriever (and its licence) accepts:
    two weighted inner retrievers that match nothing."""
    nothing: dict[str, Any] = {"standard": {"query": {"match_none": {}}}}
    legs = [{"retriever": nothing, "weight": w} for w in (1.0, 0.5)]
    if kind == "linear":
        legs = [dict(leg, normalizer="minmax") for leg in legs]
    return {"size": 0, "retriever": {kind: {"retrievers": legs, "rank_window_size": 1}}}


_PROBES: weakref.WeakKeyDictionary[Elasticsearch, dict[tuple[str, str], tuple[float, bool]]] = (
    weakref.WeakKeyDictionary())


def cluster_fuses(client: Elasticsearch, index: str, fusion: str) -> bool:
    """Whether the cluster can fuse by ``fusion`` on ``index`` (asked once per PROBE_TTL_S)."""
    kind = RETRIEVER.get(fusion)
    if kind is None:
        return False
    cache = _PROBES.setdefault(client, {})
    hit = cache.get((index, kind))
    if hit and time.monotonic() - hit[0] < PROBE_TTL_S:
        return hit[1]
    try:
        client.search(index=index, body=probe_body(kind))
        ok = True
    except ApiError as exc:
        log.info("the cluster does not fuse by %s retriever (HTTP %s); fusing client-side",
                 kind, exc.meta.status)
        ok = False
    cache[(index, kind)] = (time.monotonic(), ok)
    return ok


def forget(client: Elasticsearch, index: str, fusion: str) -> None:
    """A cluster that accepted the probe but refused a real request: fuse here from now on."""
    kind = RETRIEVER.get(fusion)
    if kind:
        _PROBES.setdefault(client, {})[(index, kind)] = (time.monotonic(), False)


def fused_window(resp: dict[str, Any]) -> list[tuple[str, float]]:
    """(id, fused score) of a retriever response, best first."""
    return [(h["_id"], float(h["_score"])) for h in resp["hits"]["hits"]]
