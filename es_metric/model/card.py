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

__all__ = ["CARD_ENTRY", "FORMAT", "FORMAT_V1", "WEIGHTS_ENTRY", "is_zip_model", "read_card",
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
