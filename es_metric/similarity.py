"""One similarity choice drives both training and the Elasticsearch mapping.

``cosine``: embeddings are L2-normalised; training uses cosine similarity; the index uses
``similarity: cosine``. ``l2_norm``: a learned linear (Mahalanobis) map whose outputs are compared
by plain Euclidean distance, which Elasticsearch serves natively with ``similarity: l2_norm``.
"""
from __future__ import annotations

from enum import Enum

__all__ = ["Metric"]


class Metric(str, Enum):
    COSINE = "cosine"
    L2 = "l2_norm"

    @property
    def normalize(self) -> bool:
        """Whether embeddings are L2-normalised before use."""
        return self is Metric.COSINE

    @property
    def es_similarity(self) -> str:
        """The ``dense_vector`` similarity Elasticsearch must use for this metric."""
        return self.value

    def pml_distance(self):
        """The pytorch-metric-learning distance that trains for this metric."""
        from pytorch_metric_learning.distances import CosineSimilarity, LpDistance

        if self is Metric.COSINE:
            return CosineSimilarity()
        return LpDistance(normalize_embeddings=False, p=2, power=1)
