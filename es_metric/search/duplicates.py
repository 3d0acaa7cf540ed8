"""Near-duplicate documents of an index: each document's nearest neighbours above a threshold,
joined into clusters by union-find.

An O(N·k) pass over the whole index, so an explicit command (``esm duplicates``), never a side
effect of search or ingest. It streams: a point-in-time and search_after page through the
documents with their vectors, each page's kNN searches (one per document, one per photo on a
multi-photo index) go in one msearch, and memory holds one page plus the documents found to
have a duplicate. On an index a DBA pass augmented, the neighbours come from the searched
vectors and each link is judged on the model's own vectors (``<field>_raw``), the space the
card's threshold was calibrated in. Links are in Elasticsearch's kNN ``similarity`` units:
cosine similarity (at least the threshold) or L2 distance (at most it).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
from elasticsearch import Elasticsearch

from ..errors import SearchError, shown
from ..index.indices import IndexInfo, index_info
from ..index.scan import pit_hits
from ..index.vectors import hit_vector
from ..progressbar import progress_iter
from ..types import DuplicateCluster
from .cutoff import AUTO, below, parse_min_similarity, score_similarity
from .queries import knn_clause

__all__ = ["Links", "Scan", "find_duplicates"]

log = logging.getLogger(__name__)


class Links:
    """Union-find over document ids (only those with a link are held), each cluster keeping its
    weakest link: the least similar pair that joined it (single linkage)."""

    def __init__(self, similarity: str = "cosine") -> None:
        self.parent: dict[str, str] = {}
        self.size: dict[str, int] = {}
        self.weakest: dict[str, float] = {}
        self.distance = similarity == "l2_norm"  # a larger value is a weaker link

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        self.size.setdefault(x, 1)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]  # path halving
            x = self.parent[x]
        return x

    def _weaker(self, *values: float | None) -> float:
        known = [v for v in values if v is not None]
        return max(known) if self.distance else min(known)

    def link(self, a: str, b: str, value: float) -> None:
        """Join ``a`` and ``b`` by a link of similarity (or distance) ``value``."""
        ra, rb = self.find(a), self.find(b)
        weakest = self._weaker(self.weakest.get(ra), self.weakest.get(rb), value)
        if ra != rb:
            if self.size[ra] < self.size[rb]:
                ra, rb = rb, ra
            self.parent[rb] = ra
            self.size[ra] += self.size.pop(rb)
            self.weakest.pop(rb, None)
        self.weakest[ra] = weakest

    def clusters(self) -> list[DuplicateCluster]:
        """``[{"ids": [...], "similarity": weakest link}]``, largest first, then most similar."""
        groups: dict[str, list[str]] = {}
        for x in list(self.parent):
            groups.setdefault(self.find(x), []).append(x)
        out: list[DuplicateCluster] = [{"ids": sorted(ids), "similarity": round(self.weakest[root], 6)}
                                       for root, ids in groups.items()]
        sign = 1 if self.distance else -1
        return sorted(out, key=lambda c: (-len(c["ids"]), sign * c["similarity"], c["ids"][0]))


@dataclass(frozen=True)
class Scan:
    """How the pass searches: ``k`` neighbours per vector, ``page`` documents per msearch."""

    threshold: float | str = AUTO
    k: int = 10
    page: int = 100
    num_candidates: int | None = None


def resolve_threshold(info: IndexInfo, threshold: float | str) -> float:
    """A number as given, or ``auto``: the card's copy-calibrated duplicate threshold (a card
    from before it: its near-duplicate threshold, a same-product one that links more)."""
    value = parse_min_similarity(threshold, "threshold")
    if value is None:
        raise SearchError("no threshold", hint="give a number or auto")
    if value != AUTO:
        return float(value)
    from .service import near_duplicate_threshold, recorded_card

    calibrated = (recorded_card(info).get("metrics") or {}).get("duplicate_threshold") or {}
    if isinstance(calibrated.get("similarity"), (int, float)):
        return float(calibrated["similarity"])
    log.warning("model %s has no copy-calibrated duplicate threshold: using its near-duplicate "
                "threshold (same-product pairs; retrain for the copy one)", info.model_id)
    return near_duplicate_threshold(info)


def documents(client: Elasticsearch, info: IndexInfo, page: int) -> Iterator[dict[str, Any]]:
    """Every document with its vectors (doc values; a multi-photo index's photos from
    ``_source``), via point-in-time + search_after: a consistent snapshot, bounded pages."""
    f = info.fields  # where the index keeps es-metric's fields (top level or under one object)
    nested = f.photos is not None
    fields = [] if nested else [f.vector, f.raw_vector]
    source = [f.model_id, f.photos] if nested else [f.model_id]
    return pit_hits(client, info.concrete, page=page, source=source, docvalue_fields=fields or None,
                    track_total_hits=False)


def own_vectors(info: IndexInfo, hit: dict[str, Any]) -> tuple[list[list[float]], list[float] | None]:
    """(the vectors to search with, the model's own vector to judge links with): the searched
    vector and its raw copy; on a multi-photo index every photo's vector (no DBA there)."""
    f = info.fields
    if f.photos:
        return f.layout.photo_vectors(hit.get("_source")), None
    searched = hit_vector(hit, f.vector)
    if searched is None:
        return [], None
    return [searched], hit_vector(hit, f.raw_vector) or searched


def knn_search(info: IndexInfo, vector: list[float], doc_id: str, scan: Scan, floor: float | None) -> dict[str, Any]:
    """One document's neighbours (itself excluded); with their raw vectors when links are
    judged on them, else their kNN score is the link (``floor`` then applied by Elasticsearch)."""
    body: dict[str, Any] = {"size": scan.k, "_source": [info.fields.model_id], "track_total_hits": False,
                  "knn": knn_clause(info.vector_field, vector, scan.k, num_candidates=scan.num_candidates,
                                    exclude_ids=[doc_id], min_similarity=floor)}
    if floor is None:
        body["docvalue_fields"] = [info.fields.vector, info.fields.raw_vector]
    return body


def link_value(own: np.ndarray, other: list[float], similarity: str) -> float:
    """The similarity (cosine) or distance (L2) of two vectors, in kNN ``similarity`` units."""
    o = np.asarray(other, np.float64)
    if similarity == "l2_norm":
        return float(np.linalg.norm(own - o))
    return float(own @ o / max(np.linalg.norm(own) * np.linalg.norm(o), 1e-12))


def _page_links(client: Elasticsearch, info: IndexInfo, page: list[dict[str, Any]], scan: Scan,
                threshold: float, links: Links) -> None:
    """Search one page of documents' neighbours in one msearch and record the links."""
    judged = not info.photos_field  # raw vectors read back; a multi-photo index uses the score
    queries, owners = [], []
    for hit in page:
        if not info.serves(info.fields.read(hit.get("_source"), info.fields.model_id)):
            continue
        vectors, raw = own_vectors(info, hit)
        for v in vectors:
            queries += [{"index": info.concrete}, knn_search(info, v, hit["_id"], scan,
                                                             None if judged else threshold)]
            owners.append((hit["_id"], np.asarray(raw, np.float64) if judged else None))
    if not queries:
        return
    for (doc_id, own), resp in zip(owners, client.msearch(searches=queries)["responses"]):
        if "error" in resp:
            raise SearchError(f"the kNN search of document {shown(doc_id)} failed: {resp['error']}")
        for h in resp["hits"]["hits"]:
            if not info.serves(info.fields.read(h.get("_source"), info.fields.model_id)):
                continue
            other = hit_vector(h, info.fields.raw_vector) or hit_vector(h, info.fields.vector)
            value = (link_value(own, other, info.similarity) if own is not None and other
                     else score_similarity(h["_score"], info.similarity))
            if not below(value, threshold, info.similarity):
                links.link(doc_id, h["_id"], value)


def find_duplicates(client: Elasticsearch, index: str, scan: Scan = Scan()) -> dict[str, Any]:
    """Clusters of near-duplicate documents of ``index``: ``{"clusters": [{"ids", "similarity"}],
    "threshold", "documents", "index"}`` (similarity: the cluster's weakest link)."""
    info = index_info(client, index)
    threshold = resolve_threshold(info, scan.threshold)
    total = client.count(index=info.concrete)["count"]
    links, page, seen = Links(info.similarity), [], 0
    for hit in progress_iter(documents(client, info, scan.page), "near-duplicates", total=total):
        page.append(hit)
        seen += 1
        if len(page) == scan.page:
            _page_links(client, info, page, scan, threshold, links)
            page = []
    if page:
        _page_links(client, info, page, scan, threshold, links)
    clusters = links.clusters()
    log.info("duplicates: %d documents of %s, %d clusters at %s %.4f", seen, info.concrete,
             len(clusters), "distance" if links.distance else "similarity", threshold)
    return {"clusters": clusters, "threshold": threshold, "documents": seen, "index": info.concrete}
