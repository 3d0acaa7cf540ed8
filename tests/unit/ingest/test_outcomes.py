"""Failure classes of the worker path: transient errors are retried, everything else fails
the batch with a reason (pure: classification only)."""
import pytest
import redis
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import ApiError, BadRequestError, ConnectionError as EsConnectionError
from elasticsearch import ConnectionTimeout

from es_metric.errors import ClusterUnavailable, ImageError, MappingMismatch, ModelError, WorkerLost
from es_metric.ingest.outcomes import failure_reason, is_transient


def _api_error(status: int, cls=ApiError) -> ApiError:
    meta = ApiResponseMeta(status=status, http_version="1.1", headers=HttpHeaders(), duration=0.0,
                           node=NodeConfig("http", "localhost", 9200))
    return cls(message=f"status {status}", meta=meta, body={"error": {"type": "x", "reason": "y"}})


@pytest.mark.parametrize("exc", [ClusterUnavailable("away"), EsConnectionError("refused"),
                                 ConnectionTimeout("slow"), redis.ConnectionError("down"),
                                 redis.TimeoutError("slow"), redis.BusyLoadingError("loading"),
                                 _api_error(429), _api_error(500), _api_error(502), _api_error(503),
                                 _api_error(504)])
def test_transient(exc):
    assert is_transient(exc)
    assert failure_reason(exc)[0] == "retries_exhausted"


@pytest.mark.parametrize("exc,reason", [
    (ModelError("model file /m.pt does not exist"), "model_error"),
    (MappingMismatch("dims differ"), "mapping_mismatch"),
    (WorkerLost("died 3 times"), "worker_lost"),
    (_api_error(400, BadRequestError), "rejected_by_elasticsearch"),
    (_api_error(413), "rejected_by_elasticsearch"),
    (ImageError("bad", reason="corrupt_image"), "corrupt_image"),
    (KeyError("model_path"), "worker_error"),
    (ValueError("surprise"), "worker_error")])
def test_permanent(exc, reason):
    assert not is_transient(exc)
    got, message = failure_reason(exc)
    assert got == reason and message
