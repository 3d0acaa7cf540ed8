"""Training the backbone too: the last blocks of an EfficientNet-Lite on cached early
activations (partial.py), or everything (finetune.py), validated on the run's own queries.

The validation embeds the queries and the index with the encoder as it trains (the last blocks
from cached activations of every photo), and the baseline is the backbone as it started
(pretrained, or its initialisation), measured once before training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..model.encoder import Encoder, backbone_spec
from .catalogue import Catalogue
from .config import EpochCallback, TrainConfig
from .data import Sample
from .features import run_module
from .finetune import fit_full
from .losses import Objective
from .partial import early_activations, fit_tail, tail_start, tail_vectors
from .validate import Embedder, Validator
from .verdict import validation_metrics

__all__ = ["train_backbone"]


def _lookup(samples: Sequence[Sample], table: dict[str, int]) -> list[int]:
    return [table[s.path] for s in samples]


def _start_vectors(encoder: Encoder, cfg: TrainConfig, photos: list[Sample]) -> Embedder:
    """The baseline: cosine on the backbone's features before training, of every photo."""
    pre = backbone_spec(cfg.backbone).preprocess
    feats = torch.nn.functional.normalize(run_module(encoder.backbone, photos, pre, desc="baseline").float(), dim=-1)
    rows = {s.path: i for i, s in enumerate(photos)}
    return lambda samples: feats[_lookup(samples, rows)].numpy()


def _tail_embedder(encoder: Encoder, cfg: TrainConfig, photos: list[Sample]) -> Embedder:
    start = tail_start(encoder, cfg.train_blocks)
    acts = early_activations(encoder, cfg.backbone, photos, start, augment=False)
    rows = {s.path: i for i, s in enumerate(photos)}
    return lambda samples: tail_vectors(encoder, acts[_lookup(samples, rows)], start).numpy()


def _module_embedder(encoder: Encoder, cfg: TrainConfig) -> Embedder:
    pre = backbone_spec(cfg.backbone).preprocess
    return lambda samples: run_module(encoder, samples, pre, desc="validation").float().numpy()


def train_backbone(encoder: Encoder, obj: Objective, cfg: TrainConfig, cat: Catalogue, validator: Validator,
                   ckpt: Path, on_epoch: EpochCallback | None, resume: bool) -> tuple[list[dict], dict, dict]:
    """(history, metrics, the re-ranking chosen) after fine-tuning; the best epoch ships."""
    split = validator.split
    photos = split.index + [q for v in split.validations.values() for q in v.queries]
    baseline = _start_vectors(encoder, cfg, photos)
    train_s = split.train if validator.measurable else cat.samples
    embed = _tail_embedder(encoder, cfg, photos) if cfg.train_blocks else _module_embedder(encoder, cfg)

    def score(enc: Encoder) -> float | None:
        return validator.early_stopping_value(embed, enc.metric)

    if cfg.train_blocks:
        history = fit_tail(encoder, obj, cfg, train_s, score, ckpt, on_epoch, resume)
    else:
        history = fit_full(encoder, obj, cfg, train_s, score, ckpt, on_epoch, resume)
    against = f"{'pretrained' if cfg.pretrained else 'untrained'}-cosine {cfg.backbone}"
    metrics, rerank = validation_metrics(validator, embed, baseline, encoder, against, cfg)
    metrics["measured_head"] = "shipped"
    return history, metrics, rerank
