"""The validation of a training run: the queries of both protocols search the catalogue, the
model and the pretrained baseline on the same queries, and a verdict with a margin.

The gate: a model is better only when a paired bootstrap over the gate protocol's queries puts
the lower end of the 95 % interval of the difference in ``GATE_METRIC`` above zero. Otherwise
the pretrained model is as good, and the card says so (``esm mapping create`` and ``esm
reindex`` then refuse the file unless ``--force``).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..similarity import Metric
from .data import Sample
from .protocols import DESCRIPTION, CatalogueSplit
from .scoring import QueryScores, paired_bootstrap, score_queries, summary_of

__all__ = ["Embedder", "GATE_METRIC", "Validator", "gate_verdict"]

#: Per-query MAP@R: graded (every photo of the product counts, not only the first), so it
#: separates models with fewer queries than Recall@1; Recall@1 and MRR intervals are on the card.
GATE_METRIC = "map_at_r"

#: Vectors of samples, in order (a model's, or the baseline's raw features).
Embedder = Callable[[Sequence[Sample]], np.ndarray]


@dataclass
class Validator:
    split: CatalogueSplit
    groups: dict[str, str]
    gate_protocol: str

    @property
    def measurable(self) -> list[str]:
        return [p for p, v in self.split.validations.items() if v.measurable]

    def scores(self, embed: Embedder, metric: Metric, index_vectors: np.ndarray | None = None,
               protocols: Sequence[str] | None = None) -> dict[str, QueryScores]:
        """Every measurable protocol's per-query scores under ``embed`` (``index_vectors``: the
        index already embedded, e.g. augmented by DBA; ``protocols``: only these)."""
        index = self.split.index
        iv = embed(index) if index_vectors is None else index_vectors
        out = {}
        for p in self.measurable:
            if protocols is not None and p not in protocols:
                continue
            queries = self.split.validations[p].queries
            out[p] = score_queries(embed(queries), [q.cls for q in queries], iv, [s.cls for s in index],
                                   metric, self.groups or None)
        return out

    def photos_around(self, products: set[str]) -> tuple[list[Sample], list[Sample]]:
        """The index's photos of ``products``, and its other photos in a seeded order (a sample
        of the index that keeps what the queries must find: take the first, then the others)."""
        own = [s for s in self.split.index if s.cls in products]
        others = [s for s in self.split.index if s.cls not in products]
        random.Random(0).shuffle(others)
        return own, others

    def early_stopping_value(self, embed: Embedder, metric: Metric) -> float | None:
        """Mean gate metric on the gate protocol (None: it cannot measure)."""
        if self.gate_protocol not in self.measurable:
            return None
        scores = self.scores(embed, metric, protocols=[self.gate_protocol])  # once per epoch: that one only
        return float(scores[self.gate_protocol].metric(GATE_METRIC).mean())

    def report(self, model: dict[str, QueryScores], baseline: dict[str, QueryScores]) -> dict:
        """The card's ``validation``: per protocol, model and baseline on the same queries and
        the bootstrap interval of each metric's difference; or the note why it cannot measure."""
        out: dict[str, dict] = {}
        for p, v in self.split.validations.items():
            if not v.measurable:
                out[p] = {"description": DESCRIPTION[p], "note": v.note}
                continue
            m, b = model[p], baseline[p]
            bounded = {"of_possible": v.possible} if v.possible > len(v.queries) else {}
            out[p] = {"description": DESCRIPTION[p], "n_queries": int(len(m.rank)), **bounded,
                      "model": _rounded(summary_of(m)), "baseline": _rounded(summary_of(b)),
                      "difference": {name: paired_bootstrap(m.metric(name), b.metric(name), name).as_dict()
                                     for name in m.names}}
        return out


def _rounded(d: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else _rounded(v) if isinstance(v, dict) else v)
            for k, v in d.items()}


def gate_verdict(validation: dict, protocol: str, against: str) -> dict:
    """The card's ``gate``: passed only when the interval of ``GATE_METRIC`` is above zero."""
    fig = validation.get(protocol) or {}
    if "note" in fig or not fig:
        return {"passed": False, "protocol": protocol, "metric": GATE_METRIC, "against": against,
                "measured": False, "verdict": f"not measured: {fig.get('note', protocol)}"}
    diff = fig["difference"][GATE_METRIC]
    passed = bool(diff["better"])
    verdict = (f"better than {against}" if passed else _not_passed(diff, against, fig["model"].get("n_queries")))
    return {"passed": passed, "protocol": protocol, "metric": GATE_METRIC, "against": against,
            "measured": True, "interval": diff["ci95"], "difference": diff["difference"],
            "model_map_at_r": fig["model"]["map_at_r"], "baseline_map_at_r": fig["baseline"]["map_at_r"],
            "verdict": verdict}


def _not_passed(diff: dict, against: str, n_queries: int | None) -> str:
    """Why the gate did not pass, in the user's terms: worse, or not shown better (and, when the
    difference is positive, that the queries were too few to tell and what to do)."""
    d, (lo, hi) = float(diff["difference"]), (float(x) for x in diff["ci95"])
    n = "?" if n_queries is None else n_queries
    figures = f"MAP@R {d:+.3f} [{lo:+.3f}, {hi:+.3f}] on {n} validation queries"
    if hi < 0:
        return (f"worse than {against} beyond the bootstrap margin ({figures}): index with the pretrained "
                "model (`esm train ... --head none`)")
    verdict = f"not better than {against} beyond the bootstrap margin: the baseline is as good ({figures})"
    if d > 0:
        verdict += ("; the difference is positive but too few queries to tell it from chance: measure it on "
                    "held-out photos of your own (`esm evaluate`) and use --force if it is better, or train "
                    "again when the catalogue has more products with two photos or more")
    return verdict
