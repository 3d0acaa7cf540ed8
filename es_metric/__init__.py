"""es-metric: learned visual similarity for an existing Elasticsearch stack.

The public names load on first use (PEP 562): ``import es_metric`` imports neither torch nor
the Elasticsearch client nor FastAPI; ``es_metric.load_model`` imports torch when it is touched.
"""
from __future__ import annotations

import importlib

from .version import ES_VERSION, __version__

#: public name -> the module that defines it (imported on first access)
_LAZY = {
    "Settings": "es_metric.config",
    "EsmError": "es_metric.errors",
    "Metric": "es_metric.similarity",
    "ReRank": "es_metric.types",
    "read_card": "es_metric.model.card",
    "load_model": "es_metric.model.modelfile",
    "create_encoder": "es_metric.model.encoder",
}

__all__ = ["ES_VERSION", "__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
