"""The options of a training run (saved in the model card: provenance, resume) and the
protocols a validation split can be drawn with. Light (no torch): the CLI builds its options
from here."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError
from ..types import ReRank

__all__ = ["AUGMENTATIONS", "DEFAULT_RERANK", "EpochCallback", "HEAD_INITS", "POOLINGS", "PROTOCOLS", "TrainConfig"]

#: ``in-domain``: every class in train and test, unseen images (a shop that trains on its
#: catalogue and searches new photos). ``class-disjoint``: train on some classes, retrieve among
#: unseen ones (the metric-learning literature's protocol).
PROTOCOLS = ("in-domain", "class-disjoint")

#: Augmented views of a photo (its own positives): random resized crops and mirror images,
#: with or without colour jitter (training/views.py).
AUGMENTATIONS = ("crop", "crop+colour")

#: Where a frozen-backbone linear head starts (training/head.py): the learned whitening of the
#: catalogue (closed form, from its products' photos and views) or the features' principal directions.
HEAD_INITS = ("whiten", "pca")

#: How the backbone's maps become the features a head trains on. ``auto``: ``stages`` (the last
#: convolution and the last three stages before it, model/encoder.py) for a head on a frozen
#: EfficientNet-Lite, where it found the right product first +0.027 more often on the shop's own
#: catalogue and +0.06 on products left out of training (BENCHMARKS.md §12b); ``avg`` otherwise
#: (``--head none``: the pretrained model stays the backbone's own 1280-d features; ``--train-blocks``
#: fine-tunes from the last maps only; other backbones have no stages).
POOLINGS = ("auto", "avg", "gem", "stages")

#: What a newly trained model records (chosen by the mean over class folds and image splits of the
#: Grocery Store set, scripts/experiments.py; BENCHMARKS.md §12c).
DEFAULT_RERANK = ReRank(qe_k=10, qe_alpha=3.0, dba_k=10, dba_alpha=3.0)
#: The precision of a first page the search cut-off is calibrated for (docs/searching.md: why 0.95).
DEFAULT_CUTOFF_PRECISION = 0.95
#: Photos `esm evaluate` lets query at most by default (``--max-queries``; 0: every photo).
MAX_EVAL_QUERIES = 10_000
#: Photos DBA is measured on at most, by `esm train`'s re-ranking choice and by `esm evaluate`
#: (``--max-dba-photos``; 0: every photo): DBA blends every photo with its neighbours among all
#: of them, photos squared (`esm evaluate` at 300,000 photos: 541 s; a million, by that growth,
#: 1.7 h; BENCHMARKS.md §11b). Beyond it, every photo of the queries' products and a seeded
#: sample of the others (whole products in `esm evaluate`).
RERANK_PHOTOS = 200_000
#: Photos whose augmented views `esm train` computes at most (``--max-view-photos``; 0: every
#: one). Each view is a backbone pass per photo, the longest step of a run on a CPU (4 views of a
#: million photos: 4 M passes, about 40 h at 288 px on 2 cores). Beyond it, every photo of the
#: products with one photo (views are their only positives), then whole products in a seeded
#: order, so the cost stops growing with the catalogue. It has a price: views of a quarter or a
#: half of a catalogue cost about 0.009 R@1 (BENCHMARKS.md §12b), hence a bound no catalogue
#: measured here reaches, the same as RERANK_PHOTOS.
VIEW_PHOTOS = 200_000

#: Called with each epoch's row of the training history.
EpochCallback = Callable[[dict], None]


@dataclass
class TrainConfig:
    loss: str = "multi-similarity"
    backbone: str = "efficientnet-lite0"
    weights: str | None = None
    pretrained: bool | None = None
    freeze_backbone: bool | None = None   # None: frozen when the backbone is pretrained
    dim: int = 256
    head: str = "linear"
    epochs: int = 30
    batch_size: int = 128
    m_per_class: int = 4
    lr: float | None = None
    weight_decay: float = 1e-4
    seed: int = 0
    protocol: str = "in-domain"           # how the validation split is drawn
    val_fraction: float = 0.2
    patience: int = 5
    miner: str = "batch-hard"
    margin: float | None = None
    time_budget_s: float | None = None
    refit: bool = True                    # frozen backbone: retrain the head on train + val at the end
    head_reg: float = 0.0                 # linear head: pull toward its start (--init)
    pool: str = "auto"                    # POOLINGS: auto | avg | gem | stages (resolved() decides auto)
    train_blocks: int = 0                 # EfficientNet-Lite: fine-tune the last N blocks (cached early ones)
    views: int = 4                        # augmented views per photo (head, whitening start, --train-blocks)
    backbone_lr: float = 1e-4
    qe_k: int = DEFAULT_RERANK.qe_k       # query expansion search applies (recorded in the card)
    qe_alpha: float = DEFAULT_RERANK.qe_alpha
    dba_k: int = DEFAULT_RERANK.dba_k     # DBA the index applies (recorded in the card)
    cutoff_precision: float = DEFAULT_CUTOFF_PRECISION  # --min-similarity auto: first-page precision target
    device: str = "cpu"                   # where the backbone's features are computed (ESM_DEVICE)
    group_field: str | None = "auto"      # catalogue field of the coarse level (auto: category, ...; none)
    group_weight: float = 0.5             # weight of the group loss of the two-level objective
    product_field: str | None = None      # --from-index, one-vector index: documents of one product
    from_index: str | None = None         # train on the photos of this index
    augment: str = "crop"                 # augmented views: crop | crop+colour | none
    view_photos: str = "all"              # whose views the head sees: all photos | single (products with one photo)
    max_view_photos: int = VIEW_PHOTOS    # views of at most this many photos (0: all); VIEW_PHOTOS says which
    init: str = "whiten"                  # linear head's start: whiten (learned whitening) | pca

    def resolved(self) -> "TrainConfig":
        from ..model.encoder import backbone_spec  # torch: only a run resolves its options
        from .losses import objective

        if self.init not in HEAD_INITS:  # the Python API takes any string; the CLI only these
            raise ConfigError(f"unknown head start {self.init!r}", hint="valid: " + ", ".join(HEAD_INITS))
        p = self.cutoff_precision
        if isinstance(p, bool) or not (isinstance(p, (int, float)) and 0.5 <= p <= 1):
            raise ConfigError(f"cutoff precision {self.cutoff_precision!r} is not a number from 0.5 to 1",
                              hint="the share of a first page the cut-off keeps right, e.g. 0.95")
        spec = backbone_spec(self.backbone)
        obj = objective(self.loss)
        cfg = copy.copy(self)
        if cfg.pretrained is None:
            cfg.pretrained = spec.pretrained_default or bool(cfg.weights)
        if cfg.freeze_backbone is None:
            cfg.freeze_backbone = bool(cfg.pretrained) and not cfg.train_blocks
        if obj.frozen_backbone:
            cfg.freeze_backbone = True
        if cfg.lr is None:
            cfg.lr = 1e-3 if cfg.freeze_backbone or cfg.train_blocks else 3e-4
        if cfg.pool not in POOLINGS:
            raise ConfigError(f"unknown pooling {cfg.pool!r}", hint="valid: " + ", ".join(POOLINGS))
        if cfg.pool == "stages" and cfg.train_blocks:  # said before any photo is read or cached
            raise ConfigError("--pool stages reads earlier stages than --train-blocks fine-tunes from",
                              hint="use --pool avg (or auto) with --train-blocks")
        if cfg.pool == "auto":
            stages = (spec.name.startswith("efficientnet-lite") and cfg.head != "none"
                      and bool(cfg.freeze_backbone) and not cfg.train_blocks)
            cfg.pool = "stages" if stages else "avg"
        return cfg

    def loss_params(self) -> dict:
        """The parameters of the objective's loss and miner that this run sets."""
        params: dict = {"miner": self.miner}
        if self.margin is not None:
            params["margin"] = self.margin
        return params
