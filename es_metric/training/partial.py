"""Fine-tuning the last blocks of an EfficientNet-Lite backbone, fast enough for a CPU.

The frozen early blocks (stem + blocks [0, start)) run once per image and view: their
activations of ``views`` randomly augmented views of every training image (random resized crop,
flip, colour jitter) and of a plain view of every validation image are cached (float16, on disk
too). An epoch then runs only the trainable tail (the last ``train_blocks`` blocks, the head
convolution, pooling and the projection head) on a random cached view of each image. BatchNorm
statistics stay frozen (M-per-class batches are small and class-skewed). A checkpoint is
written every epoch (``resume``); early stopping on validation MAP@R (held-out classes under
the class-disjoint protocol).
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from ..model.embed import PIXELS_VERSION, to_tensor
from ..model.encoder import Encoder, backbone_spec
from ..progressbar import progress_iter
from .data import ImageDataset, Sample, cache_dir, labels_tensor, loader
from .finetune import train_transform
from .head import head_optimizer
from .losses import Objective
from .sampling import epoch_batches, seed_everything
from .stopping import EarlyStopping

log = logging.getLogger(__name__)


def _lite(encoder: Encoder):
    if not hasattr(encoder.backbone, "tail"):
        raise ConfigError("--train-blocks needs an efficientnet-lite backbone",
                          hint="use --train-backbone to fine-tune other backbones entirely")
    return encoder.backbone


@torch.inference_mode()
def early_activations(encoder: Encoder, name: str, samples: Sequence[Sample], start: int, *,
                      augment: bool, seed: int = 0, batch_size: int = 32) -> torch.Tensor:
    """float16 activations of the frozen early blocks of the pretrained backbone ``name`` for
    ``samples``, one view each (a random augmentation when ``augment``, else the plain centre
    crop), cached on disk."""
    h = hashlib.sha256(f"early|{name}|{start}|{augment}|{seed}|{PIXELS_VERSION}|".encode())
    h.update("\n".join(f"{os.path.abspath(s.path)}:{os.path.getmtime(s.path)}" for s in samples).encode())
    path = cache_dir() / f"early-{name}-{h.hexdigest()[:20]}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    pre = backbone_spec(name).preprocess
    torch.manual_seed(seed)
    transform = (train_transform(pre.size, pre.mean, pre.std) if augment
                 else (lambda im: to_tensor(im, pre)))
    backbone = _lite(encoder)
    backbone.eval()
    ds = ImageDataset(samples, transform, draft=pre.size * 2 if augment else pre.size)
    out = [backbone.early(x.contiguous(memory_format=torch.channels_last), start).half()
           for x, _ in progress_iter(loader(ds, batch_size, workers=0 if augment else None),
                                     "early blocks", total=-(-len(ds) // batch_size))]
    acts = torch.cat(out)
    torch.save(acts, path)
    return acts


def tail_vectors(encoder: Encoder, acts: torch.Tensor, start: int, chunk: int = 128) -> torch.Tensor:
    """Embeddings from cached early activations (eval mode)."""
    encoder.eval()
    with torch.no_grad():
        return torch.cat([encoder.project(encoder.backbone.tail(acts[i:i + chunk].float(), start))
                          for i in range(0, len(acts), chunk)])


def _trainable(encoder: Encoder, start: int) -> list[torch.nn.Parameter]:
    """Freeze everything but the tail and the head; BatchNorm layers stay in eval mode."""
    net = encoder.backbone.net
    for p in encoder.parameters():
        p.requires_grad_(False)
    tail = [*net._blocks[start:], net._conv_head, net._bn1]
    params = [p for m in tail for p in m.parameters()] + list(encoder.head.parameters())
    for p in params:
        p.requires_grad_(True)
    return params


def _train_mode(encoder: Encoder) -> None:
    encoder.train()
    for m in encoder.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def _epoch(encoder, loss_fn, miner, opt, views: torch.Tensor, labels: torch.Tensor, cfg, start: int,
           gen: torch.Generator) -> float | None:
    _train_mode(encoder)
    losses = []
    for idx in epoch_batches(labels, cfg):
        idx = torch.as_tensor(idx)
        pick = torch.randint(len(views), (len(idx),), generator=gen)
        x = views[pick, idx].float()
        emb = encoder.project(encoder.backbone.tail(x, start))
        lab = labels[idx]
        loss = loss_fn(emb, lab, miner(emb, lab)) if miner else loss_fn(emb, lab)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    encoder.eval()
    return float(np.mean(losses)) if losses else None


def tail_start(encoder: Encoder, train_blocks: int) -> int:
    """Index of the first trainable block when the last ``train_blocks`` are fine-tuned."""
    n = _lite(encoder).n_blocks
    if not 1 <= train_blocks <= n:
        raise ConfigError(f"--train-blocks must be 1..{n}")
    return n - train_blocks


def fit_tail(encoder: Encoder, obj: Objective, cfg, train_s: list[Sample],
             score: Callable[[Encoder], float | None], ckpt: Path, on_epoch=None, resume: bool = False,
             views: torch.Tensor | None = None) -> list[dict]:
    """Fine-tune the last ``cfg.train_blocks`` blocks and the head; returns the history. Keeps
    the best epoch by ``score`` (None: cannot measure, every epoch kept). ``views``: the
    (views x N_train) early activations when the caller has them cached."""
    start = tail_start(encoder, cfg.train_blocks)
    if views is None:
        views = torch.stack([early_activations(encoder, cfg.backbone, train_s, start, augment=True, seed=v)
                             for v in range(cfg.views)])
    seed_everything(cfg.seed)
    params = _trainable(encoder, start)
    head_optimizer(encoder, tail_vectors_features(encoder, views[0], start), cfg)  # PCA start (no labels here)
    opt = torch.optim.AdamW([{"params": [p for p in params if p not in set(encoder.head.parameters())],
                              "lr": cfg.backbone_lr},
                             {"params": list(encoder.head.parameters()), "lr": cfg.lr}],
                            weight_decay=cfg.weight_decay)
    loss_fn, miner = obj.build(obj.metric, cfg.loss_params())
    labels, gen = labels_tensor(train_s), torch.Generator().manual_seed(cfg.seed)
    stop = EarlyStopping.start(cfg.patience, score(encoder), encoder.state_dict())
    history: list[dict] = [{"epoch": 0, "loss": None, "val_map_at_r": stop.best, "seconds": 0.0}]
    first = 1
    if resume and ckpt.exists():
        first, history, stop.best, stop.best_state, stop.bad = _restore(ckpt, encoder, opt, gen)
    for epoch in range(first, cfg.epochs + 1):
        if stop.exhausted:
            break
        t0 = time.monotonic()
        loss = _epoch(encoder, loss_fn, miner, opt, views, labels, cfg, start, gen)
        stop.after_epoch(history, on_epoch, epoch=epoch, loss=loss, value=score(encoder), started=t0,
                         state=encoder.state_dict)
        _save(ckpt, {"epoch": epoch, "encoder": encoder.state_dict(), "optimizer": opt.state_dict(),
                     "generator": gen.get_state(), "history": history, "best": stop.best,
                     "best_state": stop.best_state, "bad": stop.bad})
    encoder.load_state_dict(stop.best_state)
    for p in encoder.parameters():
        p.requires_grad_(True)
    encoder.eval()
    return history


def _restore(ckpt: Path, encoder: Encoder, opt, gen: torch.Generator) -> tuple:
    """Load a checkpoint into the encoder, optimiser and view sampler; (first epoch, history,
    best score, best state, epochs without improvement)."""
    state = torch.load(ckpt, weights_only=False)
    encoder.load_state_dict(state["encoder"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    log.info("resumed from %s at epoch %d", ckpt, state["epoch"] + 1)
    return state["epoch"] + 1, state["history"], state["best"], state["best_state"], state["bad"]


def tail_vectors_features(encoder: Encoder, acts: torch.Tensor, start: int, chunk: int = 128) -> torch.Tensor:
    """Pooled backbone features (before the projection head) from cached early activations."""
    with torch.no_grad():
        encoder.eval()
        return torch.cat([encoder.backbone.tail(acts[i:i + chunk].float(), start)
                          for i in range(0, len(acts), chunk)])


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
