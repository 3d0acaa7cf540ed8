"""Training on a shop's catalogue (products are the labels): metric-learning objectives with
early stopping on the run's own validation queries, a gate with a bootstrap margin against the
pretrained baseline, the re-ranking that helps this catalogue, and a model card.

DATA is a class folder (a product per sub-folder) or a catalogue JSONL; ``cfg.from_index``
reads the photos of an index es-metric ingested (training/catalogue.py). Regimes: no head at
all (``head="none"``: the pretrained backbone's own features, nothing trained, indexable at
once), a frozen backbone (features cached; only the head learns, in seconds: frozen.py),
fine-tuning the last blocks of an EfficientNet-Lite on cached early activations (partial.py),
and full fine-tuning (finetune.py).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..config import Settings
from ..model.encoder import Encoder, create_encoder
from ..model.modelfile import build_card, save_model
from ..types import ModelCard
from .catalogue import Catalogue, read_catalogue
from .config import EpochCallback, TrainConfig
from .data import fingerprint
from .losses import Objective, objective
from .protocols import catalogue_split
from .sampling import seed_everything
from .validate import Validator

__all__ = ["train", "TrainResult", "TrainConfig"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    path: Path
    card: ModelCard
    history: list[dict] = field(default_factory=list)


def _validator(cat: Catalogue, cfg: TrainConfig) -> Validator:
    """Both protocols' queries; the gate uses ``cfg.protocol``, or the other one when only it
    can measure (said in the log and on the card)."""
    split = catalogue_split(cat.samples, cfg.val_fraction, cfg.seed)
    measurable = [p for p, v in split.validations.items() if v.measurable]
    gate = cfg.protocol if cfg.protocol in measurable or not measurable else measurable[0]
    if gate != cfg.protocol:
        log.warning("%s; the gate uses %s instead", split.validations[cfg.protocol].note, gate)
    for v in split.validations.values():
        if not v.measurable:
            log.warning(v.note)
    return Validator(split, cat.groups, gate)


def _run(encoder: Encoder, obj: Objective, cfg: TrainConfig, cat: Catalogue, validator: Validator,
         out: Path, on_epoch: EpochCallback | None, resume: bool) -> tuple[list[dict], dict, dict, int]:
    """(history, metrics, re-ranking, refit epochs) of the configured regime."""
    if cfg.head == "none":
        from .pretrained import pretrained_metrics
        return [], *pretrained_metrics(encoder, cfg, cat, validator), 0
    if cfg.freeze_backbone:
        from .frozen import train_frozen
        return train_frozen(encoder, obj, cfg, cat, validator, on_epoch)
    from .backbone import train_backbone
    history, metrics, rerank = train_backbone(encoder, obj, cfg, cat, validator,
                                              Path(str(out) + ".ckpt"), on_epoch, resume)
    return history, metrics, rerank, 0


def train(data: str | Path | None, out: str | Path, cfg: TrainConfig,
          on_epoch: EpochCallback | None = None, resume: bool = False,
          settings: Settings | None = None) -> TrainResult:
    """Train (or, with ``head="none"``, only measure the pretrained model), and write the model
    file with its card."""
    cfg = cfg.resolved()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    cat = read_catalogue(data, settings or Settings.from_env(), group_field=cfg.group_field,
                         from_index=cfg.from_index, product_field=cfg.product_field)
    validator = _validator(cat, cfg)
    obj = objective(cfg.loss)
    encoder = create_encoder(cfg.backbone, dim=cfg.dim if cfg.head != "none" else None, metric=obj.metric,
                             pretrained=cfg.pretrained, weights=cfg.weights, head=cfg.head,
                             feature_norm=obj.name == "mahalanobis" and cfg.head != "none", pool=cfg.pool)
    started = time.monotonic()
    history, metrics, rerank, refit_epochs = _run(encoder, obj, cfg, cat, validator, Path(out), on_epoch, resume)
    metrics["train_seconds"] = round(time.monotonic() - started, 1)
    split = validator.split
    training = {**asdict(cfg), "history": history, "source": cat.source, "n_products": cat.n_products,
                "n_photos": len(cat.samples), "n_train": len(split.train),
                "n_queries": {p: len(v.queries) for p, v in split.validations.items()},
                "group_field": cat.group_field, "groups": len(set(cat.groups.values())),
                "refit_epochs": refit_epochs,
                "skipped_images": cat.skipped_records()}
    loss = "pretrained" if cfg.head == "none" else cfg.loss
    card = build_card(encoder, backbone=cfg.backbone, loss=loss, training=training,
                      data_fingerprint=fingerprint(cat.samples), metrics=metrics)
    card["rerank"] = rerank  # search, ingest and evaluate apply it
    return TrainResult(save_model(out, encoder, card), card, history)
