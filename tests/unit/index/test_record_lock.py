"""The record lock on a cluster too busy to write (HTTP 429): the lock document is a write like any
other, so a bulk load that fills Elasticsearch's write queue rejects it too. Seen in CI: `esm
ingest` under the 429 flood of tests/integration/test_cluster_faults.py died on the lock's
`index` call. The client here is a stand-in that answers as Elasticsearch does (its real error
classes), since a full write queue cannot be made to happen on cue on a real node."""
from __future__ import annotations

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import ApiError, AuthorizationException, ConflictError

from es_metric.errors import IndexStateError
from es_metric.index import record

NODE = NodeConfig("http", "127.0.0.1", 9200)


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch):
    monkeypatch.setattr(record, "BUSY_MAX_PAUSE_S", 0.05)


def _error(cls: type[ApiError], status: int) -> ApiError:
    meta = ApiResponseMeta(status=status, http_version="1.1", headers=HttpHeaders(), duration=0.0, node=NODE)
    return cls(f"HTTP {status}", meta, {"error": {"type": "es_rejected_execution_exception"}})


class BusyCluster:
    """Rejects the first ``rejections`` writes of each kind with 429, then takes them."""

    def __init__(self, rejections: int, error: ApiError | None = None) -> None:
        self.left = {"index": rejections, "delete": rejections}
        self.error = error or _error(ApiError, 429)
        self.calls: list[str] = []
        self.indices = self
        self.locked = False

    def exists(self, index: str) -> bool:
        return True

    def options(self, **_kw) -> BusyCluster:
        return self

    def _write(self, kind: str) -> None:
        self.calls.append(kind)
        if self.left[kind] > 0:
            self.left[kind] -= 1
            raise self.error

    def index(self, *, index, id, document, op_type=None, **_kw):
        self._write("index")
        if self.locked:
            raise _error(ConflictError, 409)
        self.locked = True
        return {"_seq_no": 7, "_primary_term": 1}

    def get(self, *, index, id):
        return {"found": self.locked, "_seq_no": 7, "_primary_term": 1, "_source": {"expires_at": 1e18}}

    def delete(self, *, index, id, if_seq_no, if_primary_term):
        self._write("delete")
        self.locked = False
        return {"result": "deleted"}


def test_a_lock_write_rejected_as_too_busy_is_sent_again_until_taken():
    cluster = BusyCluster(rejections=4)
    with record.record_lock(cluster, "shop-v1", wait_s=30):
        assert cluster.locked
    assert cluster.calls == ["index"] * 5 + ["delete"] * 5
    assert not cluster.locked


def test_a_cluster_busy_past_the_wait_is_one_clear_error_naming_429():
    cluster = BusyCluster(rejections=10**6)
    with pytest.raises(IndexStateError) as err, record.record_lock(cluster, "shop-v1", wait_s=0.3):
        pytest.fail("the lock was never taken")
    assert "429" in str(err.value) and "too busy" in str(err.value)
    assert "held" not in str(err.value)   # not the message of a lock another writer holds
    assert err.value.hint and "again" in err.value.hint


def test_a_release_the_cluster_keeps_rejecting_is_left_to_the_lease(caplog):
    cluster = BusyCluster(rejections=0)
    with record.record_lock(cluster, "shop-v1"):
        cluster.left["delete"] = 10**6
    assert cluster.calls.count("delete") == record.RELEASE_TRIES and cluster.locked
    assert "lease runs out" in caplog.text


def test_other_refusals_are_not_retried():
    """403 (a key without the right to write the lock index) is no busy queue: raised at once."""
    cluster = BusyCluster(rejections=1, error=_error(AuthorizationException, 403))
    with pytest.raises(AuthorizationException), record.record_lock(cluster, "shop-v1", wait_s=30):
        pytest.fail("the lock was taken")
    assert cluster.calls == ["index"]
