"""Shared bench helpers: an untrained model file of a given backbone (throughput does not
depend on training), and result files."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from es_metric.model.encoder import create_encoder
from es_metric.model.modelfile import build_card, save_model

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data" / "grocery_store"


def bench_model(backbone: str, dim: int, out: Path) -> Path:
    torch.manual_seed(0)
    enc = create_encoder(backbone, dim=dim, pretrained=False if backbone != "efficientnet-lite0" else None)
    card = build_card(enc.eval(), backbone=backbone, loss="bench", training={"note": "untrained, for timing"},
                      data_fingerprint=None)
    return save_model(out, enc, card)


def write_result(name: str, obj) -> Path:
    (ROOT / "results").mkdir(exist_ok=True)
    path = ROOT / "results" / f"{name}.json"
    path.write_text(json.dumps(obj, indent=2))
    return path
