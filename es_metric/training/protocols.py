"""Validation that works with few photos per product: two protocols drawn from one catalogue.

* ``in-domain`` ("this catalogue"): of every product with at least two photos, some photos
  (a fifth, at least one, never all) are held out; each searches the rest of the catalogue.
  With 2–6 photos per product this is leave-one-photo-out.
* ``class-disjoint`` ("new arrivals"): a fifth of the products with two photos or more are held
  out of training entirely; their held-out photos search the catalogue, which holds their
  other photos as new products would be.

Both search one index: every photo of the catalogue except the query photos. A protocol with
fewer than ``MIN_QUERIES`` queries cannot measure anything worth a verdict: it says so in one
line (``note``) instead of reporting a figure.

On a large catalogue each protocol stops at ``MAX_QUERIES`` (the products in the seed's order,
whole products): a validation costs queries x photos, and early stopping scores one per epoch,
so without a bound a catalogue ten times larger would validate a hundred times longer. The
queries still search every photo; the products without queries train with all their photos.
2,000 queries put the gate's 95 % interval within about +-0.02 MAP@R (the per-query spread of the
difference on Grocery's 81-product catalogue, +-0.10 with its 65 queries, over sqrt(2000 / 65)).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Sequence

from .config import PROTOCOLS
from .data import Sample, relabel

__all__ = ["CatalogueSplit", "MAX_QUERIES", "MIN_QUERIES", "Validation", "catalogue_split", "held_out_count"]

MIN_QUERIES = 10
MAX_QUERIES = 2000
DESCRIPTION = {"in-domain": "this catalogue (held-out photos of known products)",
               "class-disjoint": "new arrivals (held-out products)"}


@dataclass
class Validation:
    protocol: str
    queries: list[Sample] = field(default_factory=list)
    note: str | None = None          # why this protocol cannot measure (then no queries)
    possible: int = 0                # queries it would have had without MAX_QUERIES

    @property
    def measurable(self) -> bool:
        return self.note is None


@dataclass
class CatalogueSplit:
    train: list[Sample]              # what the validated run trains on (labels 0..C-1)
    index: list[Sample]              # every photo but the queries: what the queries search
    validations: dict[str, Validation]


def held_out_count(n_photos: int, fraction: float) -> int:
    """Photos of one product held out as queries: a fraction, at least one, never all."""
    if n_photos < 2:
        return 0
    return min(n_photos - 1, max(1, math.floor(n_photos * fraction)))


def _by_product(samples: Sequence[Sample], rng: random.Random) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for s in sorted(samples, key=lambda s: (s.cls, s.path)):
        out.setdefault(s.cls, []).append(s)
    for photos in out.values():
        rng.shuffle(photos)
    return out


def catalogue_split(samples: Sequence[Sample], fraction: float = 0.2, seed: int = 0,
                    min_queries: int = MIN_QUERIES, max_queries: int = MAX_QUERIES) -> CatalogueSplit:
    """The validation queries of both protocols, the training photos and the searched index;
    deterministic for a seed. Each protocol takes whole products until it has ``max_queries``."""
    rng = random.Random(seed)
    products = _by_product(samples, rng)
    several = sorted(p for p, photos in products.items() if len(photos) >= 2)
    rng.shuffle(several)
    planned = set(several[:round(len(several) * fraction)])
    queries: dict[str, list[Sample]] = {p: [] for p in PROTOCOLS}
    possible = dict.fromkeys(PROTOCOLS, 0)
    arrivals = set()
    for p in several:
        protocol = "class-disjoint" if p in planned else "in-domain"
        photos = products[p]
        possible[protocol] += held_out_count(len(photos), fraction)
        if len(queries[protocol]) >= max_queries:
            continue              # enough queries: the product trains with every photo
        queries[protocol] += photos[:held_out_count(len(photos), fraction)]
        if p in planned:
            arrivals.add(p)
    asked = {s.path for part in queries.values() for s in part}
    index = [s for s in samples if s.path not in asked]
    train = relabel([s for s in index if s.cls not in arrivals])
    return CatalogueSplit(train, index, {p: _validation(p, queries[p], len(several), min_queries, possible[p])
                                         for p in PROTOCOLS})


def _validation(protocol: str, queries: list[Sample], n_several: int, min_queries: int,
                possible: int) -> Validation:
    if len(queries) >= min_queries:
        return Validation(protocol, queries, possible=possible)
    return Validation(protocol, [], note=(
        f"{DESCRIPTION[protocol]}: cannot measure, {len(queries)} validation queries (needs "
        f"{min_queries}; {n_several} products have two photos or more)"))
