"""The frozen-backbone regime: only the projection head learns, on cached backbone features, in
seconds. A linear head starts at the features' principal directions (so distances start as
the baseline's), early stopping keeps the best epoch by the validation's gate metric, and the
refit retrains it on everything for the epoch count early stopping chose."""
from __future__ import annotations

import copy
import time
from typing import Callable

import numpy as np
import torch

from ..model.encoder import Encoder, create_encoder
from .config import EpochCallback, TrainConfig
from .headdata import HeadData
from .losses import Objective
from .sampling import epoch_batches, seed_everything


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


def head_optimizer(encoder: Encoder, feats: torch.Tensor,
                    cfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.Tensor | None]:
    """AdamW on the head, and the PCA start of a linear head (the anchor ``head_reg`` pulls to)."""
    anchor = None
    if isinstance(encoder.head, torch.nn.Linear):
        pca_init(encoder.head, torch.nn.functional.normalize(feats, dim=-1) if encoder.feature_norm else feats)
        anchor = encoder.head.weight.detach().clone()
    return torch.optim.AdamW(encoder.head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay), anchor


def anchor_penalty(weight: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """||W - W0||² / ||W0||²: how far a linear head moved from its PCA start, relative to it."""
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
    opt, anchor = head_optimizer(encoder, data.feats, cfg)
    best = score(encoder)
    history = [{"epoch": 0, "loss": None, "val_map_at_r": best, "seconds": 0.0}]
    best_state, best_epoch, bad, started = copy.deepcopy(encoder.head.state_dict()), 0, 0, time.monotonic()
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.monotonic()
        loss = _head_epoch(encoder, losses, opt, data, cfg, anchor)
        value = score(encoder)
        row = {"epoch": epoch, "loss": loss, "val_map_at_r": value, "seconds": round(time.monotonic() - t0, 3)}
        history.append(row)
        if on_epoch:
            on_epoch(row)
        if value is None or value > best:
            best, best_state, best_epoch, bad = value, copy.deepcopy(encoder.head.state_dict()), epoch, 0
        else:
            bad += 1
        if bad >= cfg.patience or (cfg.time_budget_s and time.monotonic() - started > cfg.time_budget_s):
            break
    encoder.head.load_state_dict(best_state)
    return history, best_epoch


def refit_head(encoder: Encoder, obj: Objective, cfg: TrainConfig, data: HeadData, epochs: int) -> None:
    """Retrain the head from its start on everything for the epoch count early stopping chose."""
    seed_everything(cfg.seed)
    fresh = create_encoder(cfg.backbone, dim=cfg.dim, metric=obj.metric, pretrained=False,
                           head=cfg.head, feature_norm=encoder.feature_norm, pool=cfg.pool).head
    encoder.head.load_state_dict(fresh.state_dict())
    losses = _losses(obj, cfg, data)
    opt, anchor = head_optimizer(encoder, data.feats, cfg)
    for _ in range(epochs):
        _head_epoch(encoder, losses, opt, data, cfg, anchor)
