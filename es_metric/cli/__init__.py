"""The ``esm`` admin CLI: thin shells that build settings and a client, call one library
function and format the result. Errors become one clear line and a non-zero exit.

Command modules mirror the library (training, index, ingest, search, web, stack) and import
it inside their commands, so that ``esm --help`` loads neither torch nor the Elasticsearch
client. May import: anything in es_metric.
"""
from . import duplicates, follow, index, ingest, search, stack, training, web  # noqa: F401  (registers the commands)
from .root import main

__all__ = ["main"]
