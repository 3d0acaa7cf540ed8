"""Per-request work the routes put on the event loop (the web layer alone: searching is stubbed)."""
from __future__ import annotations

import inspect

import pytest
from fastapi.testclient import TestClient

from es_metric.config import Settings


@pytest.fixture
def app(monkeypatch):
    import es_metric.web.app as web

    monkeypatch.setattr(web, "run_search", lambda *args: {"hits": []})
    return web.create_app(Settings.from_env({}))


def test_resolving_a_search_request_introspects_no_callables(app, monkeypatch):
    """A list parameter declared with ``default_factory=list`` makes pydantic call
    ``inspect.signature(list)`` for every request that omits it (~0.13 ms each, parsing the
    builtin's text signature) on the event loop: four per GET search, six per upload."""
    calls = []
    real = inspect.Signature.from_callable.__func__

    def counted(cls, obj, **kw):
        calls.append(obj)
        return real(cls, obj, **kw)

    with TestClient(app) as client:
        client.get("/api/indices/shop/search", params={"text": "mug"})  # FastAPI's first-call setup
        monkeypatch.setattr(inspect.Signature, "from_callable", classmethod(counted))
        got = client.get("/api/indices/shop/search", params={"text": "mug"})
        posted = client.post("/api/indices/shop/search", data={"text": "mug"})
        repeated = client.get("/api/indices/shop/search", params=[("like", "a"), ("like", "b")])
    assert got.status_code == posted.status_code == repeated.status_code == 200
    assert calls == []
