"""The Elasticsearch client, built from Settings, and errors turned into clear messages.

Only this module, index.py, search.py and the index-lifecycle modules touch a client.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator

from elasticsearch import ApiError, ConnectionError as EsConnectionError, Elasticsearch
from elasticsearch import AuthenticationException, AuthorizationException, TransportError
from elasticsearch import BadRequestError, ConnectionTimeout, NotFoundError

from ..config import Settings
from ..errors import ClusterError, ClusterUnavailable, ConfigError, IndexStateError, SearchError
from ..redact import redact_text, redact_url

log = logging.getLogger(__name__)


def make_client(settings: Settings, **overrides: Any) -> Elasticsearch:
    """A client for ``settings.es_url`` with the configured credentials and CA file."""
    kw: dict[str, Any] = dict(request_timeout=settings.es_request_timeout, retry_on_timeout=True,
                    max_retries=3)
    if settings.es_api_key:
        kw["api_key"] = settings.es_api_key
    elif settings.es_user:
        kw["basic_auth"] = (settings.es_user, settings.es_password or "")
    if settings.es_ca_file:
        kw["ca_certs"] = settings.es_ca_file
    kw.update(overrides)
    return Elasticsearch(settings.es_url, **kw)


@contextmanager
def cluster_errors(settings: Settings) -> Iterator[None]:
    """Turn transport failures into ClusterUnavailable/ConfigError with a hint, no secrets."""
    where = redact_url(settings.es_url)
    try:
        yield
    except (AuthenticationException, AuthorizationException) as exc:
        raise ConfigError(f"Elasticsearch at {where} refused the credentials "
                          f"(HTTP {exc.meta.status})",
                          hint="check ESM_ES_API_KEY or ESM_ES_USER/ESM_ES_PASSWORD") from None
    except EsConnectionError as exc:
        raise ClusterUnavailable(f"cannot reach Elasticsearch at {where}: "
                                 f"{type(exc).__name__}",
                                 hint="start it with `esm stack up`, or set ESM_ES_URL") from None
    except TransportError as exc:
        raise ClusterUnavailable(f"Elasticsearch at {where} failed: "
                                 f"{redact_text(str(exc.message), settings.secrets())}",
                                 hint="check the cluster's health") from None
    except ApiError as exc:
        if exc.meta.status < 500:
            raise
        raise ClusterError(f"Elasticsearch at {where} answered HTTP {exc.meta.status}: "
                           f"{redact_text(es_reason(exc), settings.secrets())}",
                           hint="check the cluster's health, or ESM_ES_URL") from None


@contextmanager
def api_errors(action: str, where: str = "") -> Iterator[None]:
    """Elasticsearch's answers to ``action`` as the hierarchy: a 400 is the request's fault
    (SearchError), a 404 a missing index, 429 and unreachable ClusterUnavailable, other answers
    ClusterError. Messages carry ES's reason, never a URL or a credential."""
    try:
        yield
    except BadRequestError as exc:
        raise SearchError(f"Elasticsearch refused {action}: {es_reason(exc)}",
                          hint="change the request") from None
    except NotFoundError as exc:
        raise IndexStateError(f"{action}: {es_reason(exc)}", hint="check the index name") from None
    except (AuthenticationException, AuthorizationException) as exc:
        raise ClusterError(f"Elasticsearch refused this program's credentials (HTTP {exc.meta.status})",
                           hint="check ESM_ES_API_KEY or ESM_ES_USER/ESM_ES_PASSWORD") from None
    except ApiError as exc:
        if exc.meta.status == 429:
            raise ClusterUnavailable("Elasticsearch is overloaded (HTTP 429)",
                                     hint="retry in a moment") from None
        cls = SearchError if exc.meta.status < 500 else ClusterError
        at = f" at {where}" if where and cls is ClusterError else ""
        raise cls(f"Elasticsearch{at} failed {action} (HTTP {exc.meta.status}): {es_reason(exc)}",
                  hint="check the cluster's health" if cls is ClusterError else "") from None
    except (EsConnectionError, ConnectionTimeout) as exc:
        at = f" at {where}" if where else ""
        raise ClusterUnavailable(f"cannot reach Elasticsearch{at} ({type(exc).__name__})",
                                 hint="start it with `esm stack up`, or check ESM_ES_URL") from None
    except TransportError as exc:
        raise ClusterError(f"Elasticsearch transport failed: {type(exc).__name__}",
                           hint="check the cluster's health") from None


def es_reason(exc: ApiError, width: int = 300) -> str:
    """The most specific reason in an Elasticsearch error body (its root cause and what caused it)."""
    error = exc.body.get("error") if isinstance(exc.body, dict) else None
    if not isinstance(error, dict):
        return str(error or exc.message)[:width]
    node = (error.get("root_cause") or [error])[0]
    shards = error.get("failed_shards") or []
    cause = (shards[0].get("reason") or {}).get("caused_by") if shards else error.get("caused_by")
    reason = str(node.get("reason") or node.get("type") or exc.message)
    if isinstance(cause, dict) and cause.get("reason") and cause["reason"] not in reason:
        reason += f": {cause['reason']}"
    return reason[:width]


def cluster_health(settings: Settings) -> str | None:
    try:
        status: str = make_client(settings, max_retries=0).cluster.health()["status"]
        return status
    except (TransportError, ApiError):
        return None


def node_info(settings: Settings) -> dict[str, Any]:
    try:
        nodes = make_client(settings, max_retries=0).nodes.info(
            node_id="_local", filter_path="nodes.*.version,nodes.*.jvm.version")["nodes"]
    except (TransportError, ApiError):
        return {}
    for node in nodes.values():
        return {"version": node.get("version"), "jvm": node.get("jvm", {}).get("version")}
    return {}

