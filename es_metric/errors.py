"""One exception hierarchy. Every error carries structured fields, a hint, and pickles.

Celery ships exceptions between processes, so each class keeps its constructor arguments in
``self.args``-compatible form (``__reduce__``). The CLI prints ``str(err)`` as one line.
"""
from __future__ import annotations

from typing import Any

__all__ = ["ClusterError", "ClusterUnavailable", "ConfigError", "EsmError", "ImageError",
           "IndexStateError", "JobStalled", "MappingMismatch", "ModelError", "PathRefused",
           "SearchError", "shown", "StackError", "WorkerLost"]


def shown(value: object, width: int = 60) -> str:
    """User data as it appears in a message: repr'd and cut to ``width`` characters."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 4] + "...'"


class EsmError(Exception):
    """Base class: ``message`` says what happened, ``hint`` what to do about it."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "", **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.fields = fields

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def __reduce__(self):
        return (_rebuild, (type(self), self.message, self.hint, self.fields))


def _rebuild(cls: type, message: str, hint: str, fields: dict) -> EsmError:
    return cls(message, hint=hint, **fields)


class ConfigError(EsmError):
    """A setting or option is missing or invalid."""

    exit_code = 2


class PathRefused(ConfigError):
    """A file path outside the image roots (or not a usable path): never read, never served."""

    reason = "path_refused"


class StackError(EsmError):
    """The local stack (Elasticsearch, Redis, worker) could not be started or stopped."""


class ClusterUnavailable(EsmError):
    """Elasticsearch or Redis could not be reached."""

    exit_code = 3


class ClusterOverloaded(ClusterUnavailable):
    """Elasticsearch kept refusing writes as too many (429) or unavailable (503) through the
    bulk helper's retries: the batch is worth another try later, not a failure."""


class ClusterError(EsmError):
    """Elasticsearch answered with a server error, or refused this program's credentials."""

    exit_code = 3


class ModelError(EsmError):
    """A model file or weights file is missing, unreadable or incompatible."""


class ImageError(EsmError):
    """An image could not be used; ``reason`` is a short machine-readable code."""

    def __init__(self, message: str, *, reason: str = "invalid_image", **fields: Any) -> None:
        super().__init__(message, reason=reason, **fields)
        self.reason = reason


class MappingMismatch(EsmError):
    """A model's dims or similarity differ from what an index mapping holds."""


class IndexStateError(EsmError):
    """An index or alias is not in the state an operation needs."""


class LockLost(IndexStateError):
    """A follower's lock on its index was taken by another follower (it stalled past the TTL)."""


class WorkerLost(EsmError):
    """The worker process running a batch died again and again (the batch is not retried)."""


class JobStalled(EsmError):
    """An ingest job stopped making progress and nothing of it is queued or running."""


class BrokerUnsupported(EsmError):
    """The installed kombu is not a version whose private Redis layout es_metric knows."""


class SearchError(EsmError):
    """A search request could not be built or answered."""
