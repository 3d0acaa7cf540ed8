"""Training: metric-learning objectives on a labelled image folder, with early stopping on
validation MAP@R, checkpoints, an evaluation gate against the pretrained-cosine baseline, and a
model card.

Three regimes: a frozen backbone (features extracted once and cached; only the head learns, in
seconds: head.py), fine-tuning the last blocks of an EfficientNet-Lite on cached early
activations (partial.py), and full fine-tuning with retrieval augmentations (finetune.py).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..model.encoder import Encoder, create_encoder
from ..model.modelfile import build_card, save_model
from ..search.rerank import ReRank
from .config import DEFAULT_RERANK, EpochCallback, TrainConfig
from .data import Sample, fingerprint, read_folder, validation_split
from .features import backbone_features
from .finetune import fit_full
from .gate import both_protocols, gate_and_calibrate, other_protocol_figures
from .head import train_head
from .losses import Objective, objective
from .partial import fit_tail
from .sampling import seed_everything

__all__ = ["train", "TrainResult"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    path: Path
    card: dict
    history: list[dict] = field(default_factory=list)


def _train_backbone(encoder: Encoder, obj: Objective, cfg: TrainConfig, train_s: list[Sample],
                    val_s: list[Sample], other_s: list[Sample], ckpt: Path,
                    on_epoch: EpochCallback | None, resume: bool) -> tuple[list[dict], dict]:
    """Fine-tuning (the last blocks, or everything), then the gate and both protocols' figures."""
    if cfg.train_blocks:
        history = fit_tail(encoder, obj, cfg, train_s, val_s, ckpt, on_epoch, resume)
    else:
        history = fit_full(encoder, obj, cfg, train_s, val_s, ckpt, on_epoch, resume)
    metrics = {**gate_and_calibrate(encoder, cfg, val_s), "measured_head": "shipped"}
    metrics.update(both_protocols(metrics, cfg, other_protocol_figures(encoder, cfg, other_s)))
    return history, metrics


def train(data_dir: str | Path, out: str | Path, cfg: TrainConfig,
          on_epoch: EpochCallback | None = None, resume: bool = False) -> TrainResult:
    """Train, gate against the baseline, calibrate, and write the model file with its card."""
    cfg = cfg.resolved()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    folder = read_folder(data_dir)
    samples = folder.samples
    train_s, val_s, other_s = validation_split(samples, cfg.protocol, cfg.val_fraction, cfg.seed)
    obj = objective(cfg.loss)
    encoder = create_encoder(cfg.backbone, dim=cfg.dim, metric=obj.metric, pretrained=cfg.pretrained,
                             weights=cfg.weights, head=cfg.head,
                             feature_norm=obj.name == "mahalanobis", pool=cfg.pool)
    started = time.monotonic()
    if cfg.freeze_backbone:
        parts = {"train": train_s, "val": val_s, **({"other": other_s} if other_s else {})}
        feats = {name: backbone_features(cfg.backbone, part, cfg.weights, cfg.pretrained,
                                         module=encoder.backbone).float() for name, part in parts.items()}
        history, metrics, refit_epochs = train_head(encoder, obj, cfg, train_s, val_s, feats, on_epoch,
                                                    other_s)
    else:
        history, metrics = _train_backbone(encoder, obj, cfg, train_s, val_s, other_s,
                                           Path(str(out) + ".ckpt"), on_epoch, resume)
        refit_epochs = 0
    metrics["train_seconds"] = round(time.monotonic() - started, 1)
    training = {**asdict(cfg), "history": history, "n_train": len(train_s), "n_val": len(val_s),
                "n_val_other": len(other_s), "refit_epochs": refit_epochs,
                "skipped_images": folder.skipped_records()}
    card = build_card(encoder, backbone=cfg.backbone, loss=cfg.loss, training=training,
                      data_fingerprint=fingerprint(samples), metrics=metrics)
    card["rerank"] = ReRank(cfg.qe_k, cfg.qe_alpha, cfg.dba_k, DEFAULT_RERANK.dba_alpha).as_dict()  # search applies it
    return TrainResult(save_model(out, encoder, card), card, history)
