"""The model card, read without torch.

A model file (format 2) is a zip: ``card.json`` (backbone, dims, similarity, preprocessing,
provenance) beside ``weights.pt`` (torch's state-dict file). ``esm mapping create``, the enqueue
side of ingest and the index need only the card, so they read it with zipfile + json and never
import torch. Files of format 1 (one torch pickle holding card and weights) still read, through
torch. Either way nothing is inflated past the bounds of weights.py, and a card is returned only
once it is checked against the weights' shapes (backbone, head, dims): an index made from it
gets the vectors the model really makes.
"""
from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

from ..errors import EsmError, ModelError
from ..types import ModelCard
from .weights import MAX_WEIGHTS_BYTES, check_card_against_weights, check_members, member_file, state_shapes

__all__ = ["CARD_ENTRY", "FORMAT", "FORMAT_V1", "WEIGHTS_ENTRY", "check_card_fields", "check_preprocess",
           "gate_allows", "is_zip_model", "read_card", "read_v1"]

FORMAT = "es-metric-model/2"
FORMAT_V1 = "es-metric-model/1"
CARD_ENTRY = "card.json"
WEIGHTS_ENTRY = "weights.pt"
MAX_CARD_BYTES = 16 << 20  # a card is a few kB; a larger entry is not a card (or a zip bomb)
MEMBER_CAPS = {CARD_ENTRY: MAX_CARD_BYTES, WEIGHTS_ENTRY: MAX_WEIGHTS_BYTES}
OTHER_MEMBER_CAP = 1 << 20
SIMILARITIES = ("cosine", "dot_product", "l2_norm", "max_inner_product")
MAX_DIMS = 4096  # Elasticsearch's dense_vector limit
MODEL_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,99}")  # it becomes part of an index name
# the square an image is resized to before the backbone: every backbone es-metric knows embeds at
# 64-300 px; past 1024 a single photo's activations alone take gigabytes (a hand-edited or hostile
# card must not make the worker allocate them)
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 1024
MAX_NORM_VALUE = 10.0  # pixels are 0..1 before normalising; a mean or std beyond this is no normalisation


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


def _parsed(path: Path, parse: Callable[[], object], fmt: str) -> dict[str, Any]:
    """What ``parse()`` read, if it is a dict of format ``fmt``; else a ModelError naming the file."""
    try:
        value = parse()
    except EsmError:
        raise
    except Exception as exc:  # torch.load and zipfile raise many kinds: the file is not a model
        raise ModelError(f"{path} is not a readable es-metric model: {exc}") from None
    if not isinstance(value, dict) or value.get("format") != fmt:
        raise ModelError(f"{path} is not an es-metric model file (format {fmt})",
                         hint="pass a file written by `esm train`")
    return value


def _zip_card(path: Path) -> object:
    with zipfile.ZipFile(path) as zf:
        check_members(zf, str(path), MEMBER_CAPS, OTHER_MEMBER_CAP, MAX_CARD_BYTES + MAX_WEIGHTS_BYTES)
        with zf.open(CARD_ENTRY) as f:
            raw = f.read(MAX_CARD_BYTES + 1)
    if len(raw) > MAX_CARD_BYTES:
        raise ValueError(f"{CARD_ENTRY} is larger than {MAX_CARD_BYTES} bytes")
    return json.loads(raw)


def _zip_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensor shapes in the file's weights.pt (read without torch, bounded)."""
    with open(path, "rb") as fh, zipfile.ZipFile(fh) as zf:
        if WEIGHTS_ENTRY not in zf.namelist():
            raise ModelError(f"{path} is not a readable es-metric model: it has no {WEIGHTS_ENTRY}")
        return state_shapes(member_file(zf, fh, WEIGHTS_ENTRY), f"{path}: {WEIGHTS_ENTRY}")


def check_card_fields(card: Mapping[str, Any], where: object) -> None:
    """ModelError unless the fields an index is made from are sound: model id, dims, similarity,
    and the preprocessing every image goes through."""
    dims, model_id = card.get("dims"), card.get("model_id")
    if not (isinstance(dims, int) and not isinstance(dims, bool) and 0 < dims <= MAX_DIMS):
        raise ModelError(f"{where}: the card's dims {dims!r} is not a whole number from 1 to {MAX_DIMS}")
    if card.get("similarity") not in SIMILARITIES:
        raise ModelError(f"{where}: the card's similarity {card.get('similarity')!r} is not one of "
                         + ", ".join(SIMILARITIES))
    if not (isinstance(model_id, str) and MODEL_ID.fullmatch(model_id)):
        raise ModelError(f"{where}: the card's model_id {str(model_id)[:60]!r} is not lowercase "
                         "letters, digits and dashes")
    check_preprocess(card.get("preprocess"), where)


def _three_numbers(value: object, low: float, high: float) -> bool:
    """Three numbers (not booleans) in ``low < x <= high``; NaN fails every comparison."""
    return (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and low < x <= high
                    for x in value))


def check_preprocess(pre: object, where: object) -> None:
    """ModelError unless the card's preprocessing is one an image can go through: a square of
    MIN_IMAGE_SIZE..MAX_IMAGE_SIZE pixels, three channel means and three positive deviations."""
    if not isinstance(pre, Mapping):
        raise ModelError(f"{where}: the card has no preprocessing (size, mean, std)",
                         hint="pass a file written by `esm train`")
    size = pre.get("size")
    if not (isinstance(size, int) and not isinstance(size, bool) and MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE):
        raise ModelError(f"{where}: the card's image size {repr(size)[:40]} is not a whole number of "
                         f"pixels from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}",
                         hint="the card was edited by hand or is not from `esm train`; train the model again")
    if not _three_numbers(pre.get("mean"), -MAX_NORM_VALUE, MAX_NORM_VALUE):
        raise ModelError(f"{where}: the card's normalisation mean {repr(pre.get('mean'))[:60]} is not three "
                         f"numbers from -{MAX_NORM_VALUE:g} to {MAX_NORM_VALUE:g}")
    if not _three_numbers(pre.get("std"), 0.0, MAX_NORM_VALUE):
        raise ModelError(f"{where}: the card's normalisation std {repr(pre.get('std'))[:60]} is not three "
                         f"numbers above 0 and at most {MAX_NORM_VALUE:g}")


def read_v1(path: str | Path) -> dict[str, Any]:
    """A format-1 file: ``{"format", "card", "state_dict"}`` pickled by torch (weights only),
    torch's own zip format, its members bounded before torch inflates any."""
    import torch  # only the old format needs torch to read its card

    path = Path(path)
    _exists(path)

    def load() -> object:
        with zipfile.ZipFile(path) as zf:
            check_members(zf, str(path), {}, MAX_WEIGHTS_BYTES, MAX_WEIGHTS_BYTES)
        return torch.load(path, map_location="cpu", weights_only=True)
    blob = _parsed(path, load, FORMAT_V1)
    state = blob.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} is not a readable es-metric model: no state dict")
    _checked(blob.get("card"), {k: tuple(v.shape) for k, v in state.items()}, path)
    return blob


def _checked(card: object, shapes: Mapping[str, tuple[int, ...]], path: Path) -> ModelCard:
    if not isinstance(card, dict):
        raise ModelError(f"{path} is not an es-metric model file (no card)")
    check_card_fields(card, path)
    check_card_against_weights(card, shapes, str(path))
    return card  # type: ignore[return-value]


def read_card(path: str | Path) -> ModelCard:
    """The card of a model file of either format (format 2 without importing torch), checked
    against its weights."""
    path = Path(path)
    _exists(path)
    if not is_zip_model(path):
        card: ModelCard = read_v1(path)["card"]
        return card
    return _checked(_parsed(path, lambda: _zip_card(path), FORMAT), _zip_shapes(path), path)


def card_cutoff(card: Mapping[str, Any]) -> float | None:
    """The calibrated cut-off a card records (``metrics.cutoff.similarity``) when it is a finite
    number; None otherwise (no calibration, or a hand-edited value that is not one)."""
    cutoff = (card.get("metrics") or {}).get("cutoff")
    value = cutoff.get("similarity") if isinstance(cutoff, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return None
    return float(value)


def gate_allows(card: ModelCard, force: bool) -> None:
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
            why += (f" ({gate.get('metric', 'MAP@R')} difference {gate.get('difference', 0):+.4f}, "
                    f"95 % interval [{lo:+.4f}, {hi:+.4f}])")
    else:  # a card of an older version: one comparison, no interval
        why = (f"MAP@R {gate.get('model_map_at_r', 0):.4f} vs {gate.get('against')} "
               f"{gate.get('baseline_map_at_r', 0):.4f}")
    raise ModelError(f"model {card.get('model_id')} did not pass its evaluation gate: {why}",
                     hint="index with the pretrained model (`esm train DATA --head none --out M`), train "
                          "again, or pass --force to use this one anyway")
