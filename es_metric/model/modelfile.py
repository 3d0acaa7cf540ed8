"""Model files: weights plus a model card (backbone, dims, similarity, preprocessing, provenance).

The card's ``similarity`` is what the Elasticsearch mapping uses; its ``model_id`` is recorded
on every indexed document and in the index's ``_meta``.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelError
from ..similarity import Metric
from ..types import ModelCard
from ..version import __version__
from .card import CARD_ENTRY, FORMAT, WEIGHTS_ENTRY, is_zip_model, read_card, read_v1
from .weights import member_file
from .encoder import Encoder, Preprocess, backbone_spec, create_encoder

__all__ = ["LoadedModel", "build_card", "cached_model", "load_model", "make_model_id", "read_card",
           "save_model", "state_fingerprint"]


@dataclass
class LoadedModel:
    encoder: Encoder
    card: ModelCard
    path: Path

    @property
    def model_id(self) -> str:
        return self.card["model_id"]

    @property
    def metric(self) -> Metric:
        return Metric(self.card["similarity"])

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess.from_dict(self.card["preprocess"])


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def make_model_id(backbone: str, loss: str, fingerprint: str) -> str:
    """Stable, lowercase and safe inside an index name: ``<backbone>-<loss>-<hash10>``."""
    raw = f"{backbone}-{loss}-{fingerprint[:10]}".lower()
    return re.sub(r"[^a-z0-9-]+", "-", raw)


def build_card(encoder: Encoder, *, backbone: str, loss: str, training: dict,
               data_fingerprint: str | None, metrics: dict | None = None) -> ModelCard:
    fingerprint = state_fingerprint(encoder.state_dict())
    return {
        "format": FORMAT,
        "model_id": make_model_id(backbone, loss, fingerprint),
        "backbone": backbone,
        "head": encoder.head_kind,
        "feature_norm": bool(encoder.feature_norm),
        "pool": getattr(encoder.backbone, "pool", "avg"),
        "loss": loss,
        "dims": encoder.dim,
        "feat_dim": encoder.feat_dim,
        "similarity": encoder.metric.es_similarity,
        "preprocess": backbone_spec(backbone).preprocess.as_dict(),
        "training": training,
        "data_fingerprint": data_fingerprint,
        "metrics": metrics or {},
        "weights_sha256": fingerprint,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "es_metric_version": __version__,
    }


def save_model(path: str | Path, encoder: Encoder, card: ModelCard) -> Path:
    """Write a format-2 file: ``card.json`` (readable without torch) and ``weights.pt``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = io.BytesIO()
    torch.save(encoder.state_dict(), weights)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr(CARD_ENTRY, json.dumps({**card, "format": FORMAT}, indent=1),
                    compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(WEIGHTS_ENTRY, weights.getvalue())  # stored: weights do not compress
    tmp.replace(path)
    return path


def _read(path: Path) -> tuple[ModelCard, dict[str, torch.Tensor]]:
    """(card, state dict) of a model file of either format."""
    if not is_zip_model(path):
        blob = read_v1(path)
        return blob["card"], blob["state_dict"]
    card = read_card(path)  # members bounded, card checked against the weights' shapes
    try:
        with open(path, "rb") as fh, zipfile.ZipFile(fh) as zf:
            state = torch.load(member_file(zf, fh, WEIGHTS_ENTRY), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path} is not a readable es-metric model: {first_line(exc)}") from None
    return card, state


def first_line(exc: BaseException) -> str:
    """An exception's message as one line (torch's run to many)."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def load_model(path: str | Path) -> LoadedModel:
    """Rebuild the encoder described by the card and load its weights (no download, no hub)."""
    path = Path(path)
    card, state = _read(path)
    encoder = create_encoder(card["backbone"], dim=card["dims"] if card["head"] != "none" else None,
                             metric=card["similarity"], pretrained=False, head=card["head"],
                             feature_norm=bool(card.get("feature_norm", False)),
                             pool=card.get("pool", "avg"))
    try:
        encoder.load_state_dict(state)
    except RuntimeError as exc:  # read_card checked the shapes; this is the last line of defence
        raise ModelError(f"{path}: the weights do not fit the card's encoder: {first_line(exc)}") from None
    encoder.eval()
    return LoadedModel(encoder, card, path)


_MODELS: dict[tuple[str, float], LoadedModel] = {}
_LOCK = threading.Lock()


def cached_model(path: str | Path) -> LoadedModel:
    """A process loads each model file once (and again only if the file changes)."""
    if not Path(path).is_file():
        raise ModelError(f"model file {path} does not exist",
                         hint="the index records this path; restore the file or reindex")
    key = (str(Path(path).resolve()), os.path.getmtime(path))
    with _LOCK:
        if key not in _MODELS:
            if len(_MODELS) >= 4:
                _MODELS.pop(next(iter(_MODELS)))
            _MODELS[key] = load_model(path)
        return _MODELS[key]
