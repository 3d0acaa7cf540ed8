"""Each objective against values worked out by hand on tiny tensors."""
import math

import pytest
import torch

from es_metric.similarity import Metric
from es_metric.training.losses import objective

A = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]])


def _loss(name, emb, labels, **params):
    obj = objective(name)
    loss_fn, miner = obj.build(obj.metric, params)
    labels = torch.tensor(labels)
    return float(loss_fn(emb, labels, miner(emb, labels)) if miner else loss_fn(emb, labels))


def test_contrastive_by_hand():
    # cosine sims: pos pair (0,1) 0.6 -> 1 - 0.6 = 0.4 ; neg pairs (0,2) 1.0 -> 1 - 0.3 = 0.7,
    # (1,2) 0.6 -> 0.6 - 0.3 = 0.3 ; averages over non-zero terms: 0.4 + (0.7 + 0.3) / 2 = 0.9
    emb = torch.tensor([[1.0, 0.0], [0.6, 0.8], [1.0, 0.0]])
    assert _loss("contrastive", emb, [0, 0, 1]) == pytest.approx(0.9, abs=1e-5)


def test_triplet_batch_hard_by_hand():
    # sims: s01=.6 s02=.8 s03=0 s12=.96 s13=.8 s23=.6 ; per anchor hardest pos / neg:
    # a0: .8-.6+.1=.3  a1: .96-.6+.1=.46  a2: .96-.6+.1=.46  a3: .8-.6+.1=.3  -> mean .38
    assert _loss("triplet", A, [0, 0, 1, 1], margin=0.1) == pytest.approx(0.38, abs=1e-5)


def test_mahalanobis_triplet_uses_l2_distance_by_hand():
    # 1-D points 0 (l0), 2 (l0), 1 (l1): anchors 0 and 1 each have d_ap=2, d_an=1 -> 2-1+.5 = 1.5
    emb = torch.tensor([[0.0], [2.0], [1.0]])
    assert objective("mahalanobis").metric is Metric.L2
    assert _loss("mahalanobis", emb, [0, 0, 1], margin=0.5) == pytest.approx(1.5, abs=1e-5)


def test_multi_similarity_by_hand():
    # alpha=2, beta=50, base=.5 ; S01=.6 S02=0 S12=.8 ; labels 0,0,1 (no miner: all pairs)
    from pytorch_metric_learning.losses import MultiSimilarityLoss
    emb = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    pos = 0.5 * math.log(1 + math.exp(-2 * (0.6 - 0.5)))
    a0 = pos + (1 / 50) * math.log(1 + math.exp(50 * (0.0 - 0.5)))
    a1 = pos + (1 / 50) * math.log(1 + math.exp(50 * (0.8 - 0.5)))
    a2 = (1 / 50) * math.log(1 + math.exp(50 * (0.0 - 0.5)) + math.exp(50 * (0.8 - 0.5)))
    got = float(MultiSimilarityLoss(alpha=2, beta=50, base=0.5)(emb, torch.tensor([0, 0, 1])))
    assert got == pytest.approx((a0 + a1 + a2) / 3, abs=1e-5)
    loss_fn, miner = objective("multi-similarity").build(Metric.COSINE, {})
    assert isinstance(loss_fn, MultiSimilarityLoss) and miner is not None


def test_unknown_loss_lists_valid():
    from es_metric.errors import ConfigError
    with pytest.raises(ConfigError, match="contrastive"):
        objective("arcface-ish")
