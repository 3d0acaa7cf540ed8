"""Full fine-tuning: the whole encoder learns, with retrieval augmentations, M-per-class
batches, a checkpoint every epoch (``--resume``), and early stopping on validation MAP@R."""
from __future__ import annotations

import logging
import pickle
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchvision.transforms.v2 as T

from ..errors import ModelError
from ..model.encoder import Encoder, backbone_spec
from ..progressbar import progress_iter
from .data import ImageDataset, Sample, labels_tensor, loader
from .losses import Objective
from .sampling import m_per_class_sampler
from .stopping import EarlyStopping

log = logging.getLogger(__name__)


def train_transform(size: int, mean, std) -> T.Compose:
    """Random resized crop, flip and colour jitter: what retrieval should be invariant to."""
    return T.Compose([
        T.PILToTensor(),
        T.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
        T.RandomHorizontalFlip(),
        T.ColorJitter(0.3, 0.3, 0.2, 0.02),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(list(mean), list(std)),
    ])


def _save_ckpt(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


# what must match between a checkpoint and the run that resumes it (the shapes of the weights)
RESUME_KEYS = ("backbone", "loss", "head", "dim")


def load_checkpoint(ckpt: Path, cfg) -> dict:
    """A checkpoint's tensors and plain values, loaded with ``weights_only=True``: a file that
    holds any pickled object is refused (unpickling it could run code), as is one written for
    another model shape."""
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(f"checkpoint {ckpt} holds more than tensors and plain values "
                         f"({str(exc).splitlines()[-1][:160]}): refused, it is not loaded",
                         hint="delete it to start over, or run without --resume") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise ModelError(f"checkpoint {ckpt} is unreadable: {exc}",
                         hint="delete it to start over, or run without --resume") from None
    saved = state.get("config") if isinstance(state, dict) else None
    if not isinstance(saved, dict) or not {"encoder", "optimizer", "epoch"} <= state.keys():
        raise ModelError(f"{ckpt} is not an es-metric training checkpoint",
                         hint="delete it to start over, or run without --resume")
    differ = [k for k in RESUME_KEYS if saved.get(k) != getattr(cfg, k)]
    if differ:
        raise ModelError(f"checkpoint {ckpt} was written with other settings: "
                         + ", ".join(f"{k}={saved.get(k)!r} (now {getattr(cfg, k)!r})" for k in differ),
                         hint="use the same options to resume, or run without --resume")
    return state


def fit_full(encoder: Encoder, obj: Objective, cfg, train_s: list[Sample],
             score: Callable[[Encoder], float | None],
             ckpt: Path, on_epoch=None, resume: bool = False) -> list[dict]:
    """Fine-tune everything (retrieval augmentations); keep the best epoch by ``score`` (the
    validation's gate metric; None when it cannot measure: every epoch is kept)."""
    pre = backbone_spec(cfg.backbone).preprocess
    loss_fn, miner = obj.build(obj.metric, cfg.loss_params())
    sampler, batch = m_per_class_sampler(labels_tensor(train_s), cfg)
    ds = ImageDataset(train_s, train_transform(pre.size, pre.mean, pre.std), draft=pre.size * 2)
    params = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history = 1, []
    stop = EarlyStopping.start(cfg.patience, score(encoder), encoder.state_dict())
    if resume and ckpt.exists():
        state = load_checkpoint(ckpt, cfg)
        encoder.load_state_dict(state["encoder"])
        opt.load_state_dict(state["optimizer"])
        start, history, stop.best_state, stop.bad = (state["epoch"] + 1, state["history"], state["best_state"],
                                                     state["bad"])
        stop.best = state["best"]["map_at_r"]
        log.info("resumed from %s at epoch %d", ckpt, start)
    history = history or [{"epoch": 0, "loss": None, "val_map_at_r": stop.best, "seconds": 0.0}]
    for epoch in range(start, cfg.epochs + 1):
        t0, losses = time.monotonic(), []
        encoder.train()
        for x, y in progress_iter(loader(ds, batch, sampler=sampler), f"epoch {epoch}/{cfg.epochs}",
                                  total=len(sampler) // batch):
            emb = encoder(x)
            loss = loss_fn(emb, y, miner(emb, y)) if miner else loss_fn(emb, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        stop.after_epoch(history, on_epoch, epoch=epoch, loss=float(np.mean(losses)) if losses else None,
                         value=score(encoder), started=t0, state=encoder.state_dict)
        _save_ckpt(ckpt, {"epoch": epoch, "encoder": encoder.state_dict(), "optimizer": opt.state_dict(),
                          "history": history, "best": {"map_at_r": stop.best}, "best_state": stop.best_state,
                          "bad": stop.bad, "config": asdict(cfg)})
        if stop.exhausted:
            break
    encoder.load_state_dict(stop.best_state)
    encoder.eval()
    return history
