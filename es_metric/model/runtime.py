"""The inference runtime of an encoder: torch (the reference) or ONNX Runtime on its export.

Both take what the decode step makes: uint8 pixels, N x S x S x 3 (channels last, as decoded),
and return float32 embeddings. An export (``MODEL.onnx`` beside ``MODEL.pt``) carries the model
card in its metadata, so a node without torch can run it. This module imports torch only when
the torch runtime is used: it is the worker's and the query path's only way to embed.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from ..errors import ConfigError, MappingMismatch, ModelError
from ..device import batch_size_for, ort_providers, resolve_device
from ..types import ModelCard, Runtime
from .card import check_card_fields, is_zip_model, read_card

if TYPE_CHECKING:  # the model file loader imports torch
    from .modelfile import LoadedModel

log = logging.getLogger(__name__)

INT8: Literal["onnxruntime-int8"] = "onnxruntime-int8"  # opt-in only: ``esm model quantize`` wrote MODEL.int8.onnx
RUNTIMES: tuple[Runtime, ...] = ("torch", "onnxruntime", INT8)
# Vectors of two runtimes may share an index when every image's cosine is at least this.
PARITY_COSINE = 0.9999
CARD_KEY = "es_metric_card"
PARITY_KEY = "es_metric_parity"  # the export's measured min cosine to torch
GATE_KEY = "es_metric_int8_gate"  # the int8 model's gate figures (quantize.py)


@dataclass(frozen=True)
class Inference:
    """Which runtime and device embed on this node (``ESM_RUNTIME``, ``ESM_DEVICE``)."""

    runtime: str = "auto"
    device: str = "auto"

    @classmethod
    def of(cls, settings) -> "Inference":
        return cls(settings.runtime, settings.device)


def export_path(model_path: str | Path) -> Path:
    """Where the ONNX export of a model file lives: beside it, ``.onnx`` instead of ``.pt``."""
    return Path(model_path).with_suffix(".onnx")


def int8_path(model_path: str | Path) -> Path:
    """Where the gated int8 model of a model file lives: ``MODEL.int8.onnx``."""
    return Path(model_path).with_suffix(".int8.onnx")


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (a light node has no torch)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


_THREADS: dict[str, int] = {}


def set_threads(n: int | None, spin: bool | None = None) -> None:
    """Bound the model's intra-op threads in this process (several worker processes share the
    cores): torch's when torch is here, and every ONNX Runtime session made afterwards.
    ``spin=False``: ONNX Runtime's threads do not busy-wait between runs (workers: spinning
    threads take the cores from the decode threads that run between two batches; bench/embed.py
    measured the worker path 3x slower with them). Queries keep spinning (0.8 ms less per image)."""
    if spin is not None:
        _THREADS["spin"] = int(spin)
    if n and n > 0:
        _THREADS["n"] = n
        if installed("torch"):
            import torch

            torch.set_num_threads(n)


def model_threads() -> int:
    """The model's intra-op threads in this process (0: the runtime's default, every core)."""
    return _THREADS.get("n", 0)


def model_spins() -> bool:
    """Whether ONNX Runtime sessions made in this process may busy-wait between runs."""
    return bool(_THREADS.get("spin", 1))


class Embedder(Protocol):
    runtime: Runtime
    parity: float | None  # min cosine to torch (1.0 for torch itself; None: not measured)
    variant: str | None   # int8: the id of the quantisation (None for float runtimes)

    @property
    def card(self) -> ModelCard: ...

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 N x S x S x 3 -> float32 N x dims."""


@dataclass
class OnnxEmbedder:
    """ONNX Runtime on the export; needs neither torch nor the model file."""

    session: Any  # an onnxruntime.InferenceSession (no type stubs)
    card: ModelCard
    parity: float | None = None
    runtime: Runtime = "onnxruntime"
    variant: str | None = None  # int8: the id of this quantisation (each `esm model quantize` run)

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.zeros((0, int(self.card["dims"])), np.float32)
        out = self.session.run(None, {"pixels": np.ascontiguousarray(pixels, dtype=np.uint8)})[0]
        return out.astype(np.float32, copy=False)


@dataclass
class TorchEmbedder:
    """torch eager on the model file's encoder (channels-last batches)."""

    model: LoadedModel
    device: str = "cpu"
    batch_size: int = 64
    runtime: Runtime = "torch"
    parity: float | None = 1.0
    variant: str | None = None

    @property
    def card(self) -> ModelCard:
        return self.model.card

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        from .embed import embed_tensors, normalise

        batch = torch.from_numpy(np.asarray(pixels, dtype=np.uint8)).permute(0, 3, 1, 2)
        return embed_tensors(self.model.encoder, normalise(batch, self.model.preprocess),
                             self.batch_size, device=self.device)


def onnx_embedder(path: str | Path, device: str = "cpu", runtime: Runtime = "onnxruntime") -> OnnxEmbedder:
    """ONNX Runtime on an export (or the int8 model: ``runtime=INT8``), with the model card and
    parity the file carries."""
    session = open_session(Path(path), device)
    meta = session.get_modelmeta().custom_metadata_map
    if not meta.get(CARD_KEY):
        raise ModelError(f"{path} is not an es-metric ONNX export (no model card inside)",
                         hint="export it with `esm model export MODEL`")
    try:
        card = json.loads(meta[CARD_KEY])
        parity = float(meta[PARITY_KEY]) if meta.get(PARITY_KEY) else None
        variant = json.loads(meta[GATE_KEY]).get("id") if meta.get(GATE_KEY) else None
    except (ValueError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path}: the metadata of this ONNX export is unreadable ({exc})",
                         hint="export it again with `esm model export MODEL`") from None
    return OnnxEmbedder(session, _checked_export_card(card, session, path), parity, runtime, variant)


def _checked_export_card(card: object, session, path: str | Path) -> ModelCard:
    """ModelError unless the export's card is a card (dims, similarity, model id, weights
    digest) and its dims are those of the graph's output."""
    if not isinstance(card, dict) or not isinstance(card.get("weights_sha256"), str):
        raise ModelError(f"{path}: the model card in this ONNX export is not an es-metric card",
                         hint="export it again with `esm model export MODEL`")
    check_card_fields(card, f"{path} (ONNX export)")
    made = (session.get_outputs()[0].shape or [None])[-1]
    if isinstance(made, int) and made != card["dims"]:
        raise ModelError(f"{path}: the ONNX export makes {made}-d vectors but its card says "
                         f"{card['dims']}", hint="export it again with `esm model export MODEL`")
    return card  # type: ignore[return-value]  # a dict whose card fields were checked above


def open_session(path: Path, device: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if model_threads():
        opts.intra_op_num_threads = model_threads()
    if not model_spins():
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), opts, providers=ort_providers(device))
    except Exception as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ModelError(f"{path} is not a readable ONNX export: {why}",
                         hint="export it again with `esm model export MODEL`") from None


def choose_runtime(requested: str, preferred: str | None, has_export: bool,
                   have_ort: bool, have_torch: bool, has_int8: bool = False) -> Runtime:
    """Which runtime embeds. ``requested``: ``ESM_RUNTIME`` (auto, torch, onnxruntime,
    onnxruntime-int8); ``preferred``: what ``esm model bench`` measured fastest here (None: not
    measured, ONNX Runtime when present). int8 is never chosen unless requested."""
    named = next((r for r in RUNTIMES if r == requested), None)  # the setting, as a Runtime
    if named is None and requested != "auto":
        raise ConfigError(f"ESM_RUNTIME={requested!r} is not a runtime",
                          hint="valid: auto, " + ", ".join(RUNTIMES))
    if requested == INT8:
        if not (has_int8 and have_ort):
            raise ConfigError(f"ESM_RUNTIME={INT8} but " + (
                "onnxruntime is not installed" if has_int8 else "the model has no int8 file"),
                hint="`esm model quantize MODEL --calib DIR --val DIR` (the gate must pass)")
        return INT8
    ort_ok = has_export and have_ort
    if requested == "onnxruntime" and not ort_ok:
        raise ConfigError("ESM_RUNTIME=onnxruntime but " + (
            "onnxruntime is not installed" if has_export else "the model has no ONNX export"),
            hint="pip install 'es-metric[runtime]', or `esm model export MODEL`")
    if requested == "torch" and not have_torch:
        raise ConfigError("ESM_RUNTIME=torch but torch is not installed", hint="pip install es-metric")
    if named is not None:
        return named
    if ort_ok and (preferred != "torch" or not have_torch):
        return "onnxruntime"
    if have_torch:
        return "torch"
    raise ConfigError("this node has no torch and the model has no usable ONNX export",
                      hint="`esm model export MODEL` on a node with torch, and install onnxruntime")


_CACHE: dict[tuple, Embedder] = {}
_LOCK = threading.Lock()


def load_embedder(model_path: str | Path, runtime: str = "auto", device: str = "auto",
                  query: bool = False) -> Embedder:
    """The process's embedder for a model file (made once per file version, runtime, device).
    ``query``: for the query path (one image per call), where loading torch costs seconds and
    a GB while it saves nothing: on ``auto`` a usable export is taken whatever runtime the card
    measured fastest for batches, and torch is imported only when ONNX Runtime cannot embed."""
    model_path, onnx = Path(model_path), export_path(model_path)
    have_torch = installed("torch")
    exported = onnx.is_file() or (runtime == INT8 and int8_path(model_path).is_file())
    if not model_path.is_file() and not (exported and not have_torch):
        raise ModelError(f"model file {model_path} does not exist",
                         hint="the index records this path; restore the file or reindex")
    stamp = tuple(os.path.getmtime(p) if p.is_file() else 0
                  for p in (model_path, onnx, int8_path(model_path)))
    key = (str(model_path.resolve()), stamp, runtime, device, query)
    with _LOCK:
        if key not in _CACHE:
            if len(_CACHE) >= 4:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = _make(model_path, onnx, runtime, device, have_torch, query)
        return _CACHE[key]


def file_card(model_path: Path, have_torch: bool) -> ModelCard | None:
    """The model file's card for choosing a runtime, read without torch (format 2; a format-1
    file needs torch to read it); None when it cannot be read here or there is no file (a
    light node may hold the export alone)."""
    if not model_path.is_file() or not (have_torch or is_zip_model(model_path)):
        return None
    return read_card(model_path)


def _make(model_path: Path, onnx: Path, runtime: str, device: str, have_torch: bool,
          query: bool = False) -> Embedder:
    card = file_card(model_path, have_torch)
    preferred = None if query or card is None else (card.get("runtime") or {}).get("chosen")
    has_export = onnx.is_file()
    chosen = choose_runtime(runtime, preferred, has_export, installed("onnxruntime"), have_torch,
                            int8_path(model_path).is_file())
    dev = resolve_device(device, "onnxruntime" if chosen == INT8 else chosen)
    if chosen == INT8:
        return _int8_embedder(model_path, card, dev)
    if chosen == "onnxruntime":
        ours = onnx_embedder(onnx, dev)
        if card is None or ours.card["weights_sha256"] == card["weights_sha256"]:
            log.info("embedding with ONNX Runtime (%s) on %s", onnx.name, dev)
            return ours
        if runtime == "onnxruntime" or not have_torch:
            raise ModelError(f"{onnx} was exported from other weights than {model_path}",
                             hint=f"export again with `esm model export {model_path}`")
        log.warning("%s is stale (other weights than %s): embedding with torch", onnx, model_path)
        dev = resolve_device(device, "torch")
    from .modelfile import cached_model
    log.info("embedding with torch on %s", dev)
    model = cached_model(model_path)
    model.encoder.to(dev)
    return TorchEmbedder(model, dev, batch_size_for(dev))


def _int8_embedder(model_path: Path, card: ModelCard | None, dev: str) -> OnnxEmbedder:
    """The gated int8 model; refused when it was quantised from other weights."""
    ours = onnx_embedder(int8_path(model_path), dev, INT8)
    if card is not None and ours.card["weights_sha256"] != card["weights_sha256"]:
        raise ModelError(f"{int8_path(model_path)} was quantised from other weights than {model_path}",
                         hint=f"quantise again with `esm model quantize {model_path}`")
    log.info("embedding with the int8 model (%s) on %s", int8_path(model_path).name, dev)
    return ours


def runtime_label(card: ModelCard) -> Runtime:
    """What an index records about how its vectors were made: the runtime the card chose (or
    torch) and the export's parity with torch."""
    return (card.get("runtime") or {}).get("chosen") or "torch"


def card_for_runtime(card: ModelCard, requested: str) -> ModelCard:
    """The card as an index made on this node records it: under ``ESM_RUNTIME=onnxruntime-int8``
    the index is made for int8 vectors (the card must record a passed int8 gate)."""
    if requested != INT8:
        return card
    gate = (card.get("runtime") or {}).get("int8")
    if not gate:
        raise ConfigError(f"ESM_RUNTIME={INT8} but the model card records no passed int8 gate",
                          hint="`esm model quantize MODEL --calib DIR --val DIR` first")
    return {**card, "runtime": {"chosen": INT8, "parity_min_cosine": gate.get("min_cosine_to_float"),
                                "variant": gate.get("id")}}


def check_runtime(embedder: Embedder, index_runtime: Runtime | None, parity: float | None,
                  variant: str | None = None) -> None:
    """An index never mixes runtimes whose vectors differ beyond the parity tolerance: a
    different runtime is accepted (with a warning) only when the export's measured parity with
    torch meets PARITY_COSINE. int8 vectors never share an index with float ones (an index made
    before runtimes were recorded holds torch vectors), nor int8 vectors of two quantisations
    (``variant``: the one the index was made with; the model quantised again since differs)."""
    mine = embedder.variant
    if index_runtime == embedder.runtime == INT8 and variant and mine != variant:
        raise MappingMismatch(f"the index holds int8 vectors of quantisation {variant}; this node's "
                              f"int8 model is quantisation {mine} (quantised again since)",
                              hint="reindex with the new int8 model, or restore the one the index was made with")
    if index_runtime == embedder.runtime:
        return
    if INT8 in (index_runtime, embedder.runtime):
        held = index_runtime or "torch"
        raise MappingMismatch(f"the index holds {held} vectors; this node embeds with "
                              f"{embedder.runtime}: int8 and float vectors never share an index",
                              hint=f"set ESM_RUNTIME={held} on this node, or reindex")
    if index_runtime is None:
        return
    measured = parity if parity is not None else embedder.parity
    if measured is None or measured < PARITY_COSINE:
        raise MappingMismatch(f"the index holds {index_runtime} vectors; this node embeds with "
                              f"{embedder.runtime}, whose parity with torch is "
                              f"{'unmeasured' if measured is None else f'{measured:.6f}'}",
                              hint=f"set ESM_RUNTIME={index_runtime} on this node, or reindex")
    log.warning("index holds %s vectors, embedding with %s (parity %.6f >= %s)",
                index_runtime, embedder.runtime, measured, PARITY_COSINE)
