"""Which neighbourhoods new documents enter, and the new lists, without a search per document
(pure): the DBA marker of an augmented document keeps its k nearest ids, best first (``ids``),
and the k-th similarity (``kth``).

When new documents enter that neighbourhood, the document's new k nearest are the k best of
the listed ones and the new ones, computed exactly from raw vectors read by id, as long as the
list still holds: every listed document is still there, with a raw vector at least ``kth``
similar (none deleted, none re-embedded farther away). Any other document was already farther
than the k-th when the list was made, and stays so. A list that does not hold, or a marker
without one (written before lists were kept, or for another k), leaves the document to a kNN
search, as before.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..similarity import Metric
from .dbaknn import Neighbour, exact_top
from .rerank import query_similarities

TOLERANCE = 1e-5  # ``kth`` is kept to 7 decimals, the raw vectors as float32 rounded to 7
Top = tuple[list[str], np.ndarray, np.ndarray]  # ids, similarities, vectors; best first


def enters(sim: float, mark: Mapping[str, Any] | None, in_top: bool, k: int) -> bool:
    """Does a new document of similarity ``sim`` enter the k-neighbourhood of an augmented one
    with marker ``mark``? Exactly when it beats the k-th neighbour the marker records (a marker
    without it, or of another k: when the new document has it among its own k nearest)."""
    if mark and mark.get("kth") is not None and int(mark.get("k", 0)) == k:
        return sim > float(mark["kth"])
    return in_top


def entered(new: set[str], rows: Sequence[Sequence[Neighbour]], k: int) -> dict[str, float]:
    """{augmented document: by how much the closest new document beat its k-th neighbour} for
    the documents whose k-neighbourhood a new document entered, judged on the kNN
    similarities of the new documents' ``rows`` (the augmented documents nearest to each)."""
    found: dict[str, float] = {}
    for row in rows:
        for rank, h in enumerate(row):
            if h.id in new or h.marker is None or not enters(h.similarity, h.marker, rank < k, k):
                continue
            found[h.id] = max(found.get(h.id, -np.inf), h.similarity - float(h.marker.get("kth") or 0.0))
    return found


def new_top(doc_id: str, vector: np.ndarray, row: Sequence[str], new_ids: Sequence[str], k: int,
            known: Mapping[str, np.ndarray], metric: Metric) -> Top:
    """The k nearest of a new document: the best of its nearest augmented documents (``row``,
    from the index's kNN) and the other new documents (compared here, exactly)."""
    ids = list(dict.fromkeys(i for i in (*row, *new_ids) if i != doc_id and i in known))
    cand = np.stack([known[i] for i in ids]) if ids else np.zeros((0, len(vector)), np.float32)
    return exact_top(vector, ids, cand, k, metric, exclude=doc_id)


def listed(mark: Mapping[str, Any] | None, k: int) -> list[str] | None:
    """The k neighbour ids a marker keeps for this ``k``; None when it keeps none usable."""
    if not mark or mark.get("kth") is None or mark.get("k") != k:
        return None
    ids = mark.get("ids")
    if not isinstance(ids, list) or len(ids) != k or not all(isinstance(i, str) for i in ids):
        return None
    return ids


def merged_top(doc_id: str, vector: np.ndarray, mark: Mapping[str, Any] | None, k: int,
               known: Mapping[str, np.ndarray], new: tuple[Sequence[str], np.ndarray], metric: Metric) -> Top | None:
    """(ids, similarities, vectors) of the k nearest of ``doc_id`` among its listed neighbours
    (raw vectors in ``known``) and the new documents ``new`` (ids, raw vectors), best first;
    None when the marker's list is missing or no longer holds (then a kNN search must find
    them). Only new documents at least ``kth`` similar can take a place."""
    old = listed(mark, k)
    if old is None or any(i not in known for i in old):
        return None
    kth = float(mark["kth"]) - TOLERANCE  # type: ignore[index]
    old_vectors = np.stack([known[i] for i in old])
    if float(query_similarities(vector, old_vectors, metric).min()) < kth:
        return None
    new_ids, new_vectors = new
    taken = set(old) | {doc_id}
    close = np.flatnonzero(query_similarities(vector, new_vectors, metric) >= kth).tolist()
    near = [j for j in close if new_ids[j] not in taken]
    ids = old + [new_ids[j] for j in near]
    return exact_top(vector, ids, np.concatenate([old_vectors, new_vectors[near]]), k, metric, exclude=doc_id)
