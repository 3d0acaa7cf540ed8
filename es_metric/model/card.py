"""The model card, read without torch.

A model file (format 2) is a zip: ``card.json`` (backbone, dims, similarity, preprocessing,
provenance) beside ``weights.pt`` (torch's state-dict file). ``esm mapping create``, the enqueue
side of ingest and the index need only the card, so they read it with zipfile + json and never
import torch. Files of format 1 (one torch pickle holding card and weights) still read, through
torch.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Callable

from ..errors import ModelError
from ..types import ModelCard

__all__ = ["CARD_ENTRY", "FORMAT", "FORMAT_V1", "WEIGHTS_ENTRY", "gate_allows", "is_zip_model", "read_card",
           "read_v1"]

FORMAT = "es-metric-model/2"
FORMAT_V1 = "es-metric-model/1"
CARD_ENTRY = "card.json"
WEIGHTS_ENTRY = "weights.pt"
MAX_CARD_BYTES = 16 << 20  # a card is a few kB; a larger entry is not a card (or a zip bomb)


def _exists(path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist", hint="train one with `esm train`")


def is_zip_model(path: Path) -> bool:
    """True for a format-2 file (a zip with ``card.json``; torch's own files are zips too)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return CARD_ENTRY in zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _parsed(path: Path, parse: Callable[[], object], fmt: str) -> dict:
    """What ``parse()`` read, if it is a dict of format ``fmt``; else a ModelError naming the file."""
    try:
        value = parse()
    except Exception as exc:  # torch.load and zipfile raise many kinds: the file is not a model
        raise ModelError(f"{path} is not a readable es-metric model: {exc}") from None
    if not isinstance(value, dict) or value.get("format") != fmt:
        raise ModelError(f"{path} is not an es-metric model file (format {fmt})",
                         hint="pass a file written by `esm train`")
    return value


def _zip_card(path: Path) -> object:
    with zipfile.ZipFile(path) as zf, zf.open(CARD_ENTRY) as f:
        raw = f.read(MAX_CARD_BYTES + 1)
    if len(raw) > MAX_CARD_BYTES:
        raise ValueError(f"{CARD_ENTRY} is larger than {MAX_CARD_BYTES} bytes")
    return json.loads(raw)


def read_v1(path: str | Path) -> dict:
    """A format-1 file: ``{"format", "card", "state_dict"}`` pickled by torch (weights only)."""
    import torch  # only the old format needs torch to read its card

    path = Path(path)
    _exists(path)
    return _parsed(path, lambda: torch.load(path, map_location="cpu", weights_only=True), FORMAT_V1)


def read_card(path: str | Path) -> ModelCard:
    """The card of a model file of either format (format 2 without importing torch)."""
    path = Path(path)
    _exists(path)
    return _parsed(path, lambda: _zip_card(path), FORMAT) if is_zip_model(path) else read_v1(path)["card"]


def gate_allows(card: dict, force: bool) -> None:
    """Refuse (ModelError) a model whose gate did not pass, unless forced: it is not better than
    the pretrained model beyond the bootstrap margin (or could not be measured). A pretrained
    model (``--head none``) and cards without a gate pass."""
    gate = (card.get("metrics") or {}).get("gate") or {}
    if gate.get("passed") is not False or force:
        return
    if "verdict" in gate:
        why = gate["verdict"]
        if gate.get("interval"):
            lo, hi = gate["interval"]
            why += f" ({gate.get('metric', 'MAP@R')} difference {gate.get('difference', 0):+.4f}, 95 % interval [{lo:+.4f}, {hi:+.4f}])"
    else:  # a card of an older version: one comparison, no interval
        why = (f"MAP@R {gate.get('model_map_at_r', 0):.4f} vs {gate.get('against')} "
               f"{gate.get('baseline_map_at_r', 0):.4f}")
    raise ModelError(f"model {card.get('model_id')} did not pass its evaluation gate: {why}",
                     hint="index with the pretrained model (`esm train DATA --head none --out M`), train "
                          "again, or pass --force to use this one anyway")
