"""Re-ranking chosen on the run's own validation queries, bounded on a large catalogue (pure:
vectors made here)."""
from __future__ import annotations

import numpy as np

from es_metric.similarity import Metric
from es_metric.training import rerank_choice
from es_metric.training.data import Sample
from es_metric.training.protocols import catalogue_split
from es_metric.training.rerank_choice import choose_rerank, measured_index
from es_metric.training.validate import Validator


def _catalogue(n_products: int, photos: int, seed: int = 0):
    """Products as clusters: each photo its product's centre plus noise."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_products, 16))
    samples, vectors = [], {}
    for i in range(n_products):
        for j in range(photos):
            s = Sample(f"/c/p{i:03d}/{j}.jpg", i, f"p{i:03d}")
            samples.append(s)
            v = centres[i] + 0.8 * rng.standard_normal(16)
            vectors[s.path] = (v / np.linalg.norm(v)).astype(np.float32)
    return samples, (lambda batch: np.stack([vectors[s.path] for s in batch]))


def test_a_large_catalogue_measures_the_options_on_its_queries_products_and_a_sample():
    samples, embed = _catalogue(60, 4)
    validator = Validator(catalogue_split(samples, 0.2, seed=0), {}, "in-domain")
    index = validator.split.index
    asked = {q.cls for q in validator.split.validations["in-domain"].queries}
    assert measured_index(validator, "in-domain") == list(index)          # under the bound: all
    part = measured_index(validator, "in-domain", limit=len(index) - 10)
    assert len(part) == len(index) - 10 and len({s.path for s in part}) == len(part)
    assert {s.path for s in index if s.cls in asked} <= {s.path for s in part}
    assert part == measured_index(validator, "in-domain", limit=len(index) - 10)  # seeded


def test_the_record_says_when_the_options_were_measured_on_a_sample(monkeypatch):
    samples, embed = _catalogue(60, 4)
    validator = Validator(catalogue_split(samples, 0.2, seed=0), {}, "in-domain")
    _, whole = choose_rerank(validator, embed, Metric.COSINE, qe_k=3, dba_k=3)
    assert "index_photos" not in whole and set(whole["options"]) == {"none", "qe", "dba", "dba+qe"}
    monkeypatch.setattr(rerank_choice, "RERANK_PHOTOS", len(validator.split.index) - 20)
    _, sampled = choose_rerank(validator, embed, Metric.COSINE, qe_k=3, dba_k=3)
    assert sampled["index_photos"].startswith(f"{len(validator.split.index) - 20} of {len(validator.split.index)}")
    assert sampled["chosen"] in sampled["options"]
