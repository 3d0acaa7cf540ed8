"""es-metric: learned visual similarity for an existing Elasticsearch stack.

``import es_metric`` is light: it imports neither torch nor the Elasticsearch client nor
FastAPI. The names that need torch load on first use (PEP 562): ``es_metric.load_model``
imports torch when it is touched.
"""
from __future__ import annotations

import importlib

from .config import Settings
from .errors import EsmError
from .model.card import read_card
from .similarity import Metric
from .types import ReRank
from .version import ES_VERSION, __version__

#: public name -> the heavy module that defines it (imported on first access)
_LAZY = {
    "load_model": "es_metric.model.modelfile",
    "create_encoder": "es_metric.model.encoder",
}

__all__ = ["ES_VERSION", "EsmError", "Metric", "ReRank", "Settings", "__version__", "read_card", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
