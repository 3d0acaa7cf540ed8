"""The frozen-backbone regime: only the projection head learns, on cached backbone features, in
seconds. A linear head starts at the learned whitening of the catalogue (``--init whiten``, the
default: a closed-form Mahalanobis metric from the products' own photos and views) or at the
features' principal directions (``--init pca``: distances start as the baseline's); early
stopping keeps the best epoch by the validation's gate metric (epoch 0 is the start itself),
and the refit retrains it on everything for the epoch count early stopping chose."""
from __future__ import annotations

import time
from typing import Callable, Literal

import numpy as np
import torch

from ..model.encoder import Encoder, create_encoder
from .config import EpochCallback, TrainConfig
from .headdata import HeadData
from .losses import Objective
from .sampling import epoch_batches, seed_everything
from .stopping import EarlyStopping


def pca_init(head: torch.nn.Linear, feats: torch.Tensor) -> None:
    """Start a linear head at the top principal directions: distances start ≈ the baseline's."""
    centred = (feats - feats.mean(0, keepdim=True)).double()
    # eigenvectors of the D x D covariance: the SVD's right singular vectors, much cheaper for N >> D
    evals, evecs = torch.linalg.eigh(centred.T @ centred)
    v = evecs[:, torch.argsort(evals, descending=True)].T.float()
    k = head.out_features
    with torch.no_grad():
        if v.shape[0] >= k:
            head.weight.copy_(v[:k])
        if head.bias is not None:
            head.bias.zero_()


#: Shrinkage of the within-product covariance toward its mean eigenvalue (x 0.1): with a few
#: photos per product the covariance has far fewer samples than dimensions. Chosen on Grocery as a
#: catalogue at 1, 3 and 5 photos per product, 3 seeds (BENCHMARKS.md §12b): 0.03 to 0.3 within 0.01
#: R@1, 3.0 costs 0.016.
WHITEN_SHRINK = 0.1


def whiten_init(head: torch.nn.Linear, feats: torch.Tensor, labels: torch.Tensor,
                shrink: float = WHITEN_SHRINK) -> bool:
    """Start a linear head at the learned whitening of the rows (photos and their views): whiten
    the within-product covariance (how a product's photos differ: angle, light, crop; shrunk
    toward its mean eigenvalue), then keep the ``out_features`` directions along which the
    whitened rows vary most (what is left is mostly how products differ). Closed
    form and deterministic: O(N·D²) for N rows (25 s for 100k rows of 1280-d on 2 busy cores) and two D x D
    eigendecompositions. False (and the head untouched) when no product has two rows."""
    x = feats.double()
    mean = x.mean(0, keepdim=True)
    counts = torch.bincount(labels)
    means = torch.zeros(len(counts), x.shape[1], dtype=torch.float64).index_add_(0, labels, x)
    means /= counts.clamp(min=1).unsqueeze(1)
    shared = counts[labels] > 1          # rows of products with two or more rows
    dev = (x - means[labels])[shared]
    within = dev.T @ dev
    spread = int(shared.sum())
    if not spread or not torch.trace(within) > 0:
        return False
    d = x.shape[1]
    within = within / spread
    within += shrink * torch.trace(within) / d * torch.eye(d, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(within)
    inv_sqrt = (evecs / evals.sqrt()) @ evecs.T
    # the principal directions of the whitened rows (not of the whitened product means: a
    # discriminant of the catalogue's products, which has at most products - 1 directions and
    # found new products worse than pretrained, R@1 0.557 vs 0.577 offline, where this finds 0.618)
    centred = x - mean
    white = centred @ inv_sqrt
    evals2, evecs2 = torch.linalg.eigh(white.T @ white)
    keep = evecs2[:, torch.argsort(evals2, descending=True)[:head.out_features]]
    if keep.shape[1] < head.out_features:
        return False
    transform = inv_sqrt @ keep
    # outputs as large as the centred features (the PCA start's scale): the optimiser's steps
    # then mean the same from either start
    scale = ((white @ keep).norm(dim=1).mean() / centred.norm(dim=1).mean().clamp(min=1e-12)).clamp(min=1e-12)
    with torch.no_grad():
        head.weight.copy_((transform / scale).T.float())
        if head.bias is not None:
            head.bias.copy_((-(mean @ transform) / scale).squeeze(0).float())
    return True


#: The start a head took (``head_optimizer``): the learned whitening, the principal directions,
#: or None (an MLP head starts at its random initialisation).
HeadStart = Literal["whiten", "pca"] | None


def head_optimizer(encoder: Encoder, feats: torch.Tensor, cfg: TrainConfig,
                   labels: torch.Tensor | None = None) -> tuple[torch.optim.Optimizer, torch.Tensor | None, HeadStart]:
    """AdamW on the head, the start of a linear head (the anchor ``head_reg`` pulls to), and which
    start it took: the learned whitening when ``cfg.init`` asks for it and ``labels`` give a
    product two rows, else PCA."""
    anchor: torch.Tensor | None = None
    start: HeadStart = None
    if isinstance(encoder.head, torch.nn.Linear):
        x = torch.nn.functional.normalize(feats, dim=-1) if encoder.feature_norm else feats
        whitened = cfg.init == "whiten" and labels is not None and whiten_init(encoder.head, x, labels)
        if not whitened:
            pca_init(encoder.head, x)
        anchor = encoder.head.weight.detach().clone()
        start = "whiten" if whitened else "pca"
    return torch.optim.AdamW(encoder.head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay), anchor, start


def anchor_penalty(weight: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """||W - W0||² / ||W0||²: how far a linear head moved from its start, relative to it."""
    return (weight - anchor).pow(2).sum() / anchor.pow(2).sum().clamp(min=1e-12)


Score = Callable[[Encoder], "float | None"]


def _losses(obj: Objective, cfg: TrainConfig, data: HeadData) -> tuple:
    """(product loss, its miner, group loss or None, its miner)."""
    loss_fn, miner = obj.build(obj.metric, cfg.loss_params())
    if data.groups is None or not cfg.group_weight:
        return loss_fn, miner, None, None
    group_fn, group_miner = obj.build(obj.metric, cfg.loss_params())
    return loss_fn, miner, group_fn, group_miner


def _loss(fn, miner, emb: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
    return fn(emb, lab, miner(emb, lab)) if miner else fn(emb, lab)


def _head_epoch(encoder: Encoder, losses: tuple, opt, data: HeadData, cfg: TrainConfig,
                anchor: torch.Tensor | None = None) -> float | None:
    """One pass over M-per-product batches of cached features; the mean loss. The two-level
    objective adds the group loss (products of one group are its positives), weighted lower."""
    loss_fn, miner, group_fn, group_miner = losses
    encoder.head.train()
    seen = []
    for idx in epoch_batches(data.labels, cfg):
        emb = encoder.project(data.feats[idx])
        loss = _loss(loss_fn, miner, emb, data.labels[idx])
        if group_fn is not None:
            loss = loss + cfg.group_weight * _loss(group_fn, group_miner, emb, data.groups[idx])
        if cfg.head_reg and anchor is not None:
            loss = loss + cfg.head_reg * anchor_penalty(encoder.head.weight, anchor)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen.append(loss.item())
    encoder.head.eval()
    return float(np.mean(seen)) if seen else None


def fit_head(encoder: Encoder, obj: Objective, cfg: TrainConfig, data: HeadData, score: Score,
             on_epoch: EpochCallback | None = None) -> tuple[list[dict], int]:
    """Train only the head; keep the best epoch by ``score`` (the validation's gate metric).
    When the validation cannot measure (``score`` gives None), all ``cfg.epochs`` are kept."""
    losses = _losses(obj, cfg, data)
    opt, anchor, start = head_optimizer(encoder, data.feats, cfg, data.labels)
    stop = EarlyStopping.start(cfg.patience, score(encoder), encoder.head.state_dict())
    history = [{"epoch": 0, "loss": None, "val_map_at_r": stop.best, "seconds": 0.0, "start": start}]
    started = time.monotonic()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.monotonic()
        loss = _head_epoch(encoder, losses, opt, data, cfg, anchor)
        stop.after_epoch(history, on_epoch, epoch=epoch, loss=loss, value=score(encoder), started=t0,
                         state=encoder.head.state_dict)
        if stop.exhausted or (cfg.time_budget_s and time.monotonic() - started > cfg.time_budget_s):
            break
    encoder.head.load_state_dict(stop.best_state)
    return history, stop.best_epoch


def refit_head(encoder: Encoder, obj: Objective, cfg: TrainConfig, data: HeadData, epochs: int) -> None:
    """Retrain the head from its start on everything for the epoch count early stopping chose."""
    seed_everything(cfg.seed)
    fresh = create_encoder(cfg.backbone, dim=cfg.dim, metric=obj.metric, pretrained=False,
                           head=cfg.head, feature_norm=encoder.feature_norm, pool=cfg.pool).head
    encoder.head.load_state_dict(fresh.state_dict())
    losses = _losses(obj, cfg, data)
    opt, anchor, _ = head_optimizer(encoder, data.feats, cfg, data.labels)
    for _ in range(epochs):
        _head_epoch(encoder, losses, opt, data, cfg, anchor)
