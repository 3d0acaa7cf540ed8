"""/metrics on the real stack: the workers' counters grow with an ingest, the API counts its
requests and errors, the queue and a follower's lag are there."""
from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from es_metric.web.app import create_app
from tests.integration.helpers import esm, esm_json

pytestmark = pytest.mark.integration


def scrape(api) -> dict[tuple[str, tuple], float]:
    resp = api.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def test_metrics_count_an_ingest_and_api_requests(stack, index_name, tiny_model, tiny_data, tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(tiny_data / "class_2", folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    api = TestClient(create_app(stack))
    before = scrape(api)
    esm("mapping", "create", index_name, "--model", tiny_model)
    summary = esm_json("ingest", index_name, folder)
    assert summary["indexed"] == 16 and summary["failed"] == 1
    api.get("/api/health")
    api.get(f"/api/indices/{index_name}/search", params={"like": "nope"})
    after = scrape(api)

    def grew(name, labels=()):
        return after.get((name, labels), 0) - before.get((name, labels), 0)

    assert grew("esm_images_embedded_total") >= 16
    assert sum(v for (n, _), v in after.items() if n == "esm_images_failed_total") \
        - sum(v for (n, _), v in before.items() if n == "esm_images_failed_total") >= 1
    assert grew("esm_batch_duration_seconds_count") >= 1
    assert grew("esm_image_fetch_seconds_count") >= 16
    health = (("method", "GET"), ("route", "/api/health"), ("status", "200"))
    assert after[("esm_http_requests_total", health)] >= 1
    search = (("route", "/api/indices/{index}/search"), ("status", "400"))
    assert after[("esm_http_errors_total", search)] >= 1
    assert ("esm_queue_depth", (("queue", stack.worker_queue),)) in after
    assert after[("esm_redis_up", ())] == 1


def test_made_up_methods_and_paths_leave_metrics_bounded(stack):
    """Issue 24, finding 1: uvicorn's h11 passes any method name to the app; 300 requests with
    made-up methods (on public, guarded and unknown paths, without the key) leave /metrics under
    50 KB, every label from a closed set (unknown methods and paths fold into ``other``)."""
    import random
    import string

    import httpx

    from tests.integration.server import running

    key = "metrics-test-key"
    app = create_app(stack.with_(api_key=key))
    known_routes = {getattr(r, "path", None) for r in app.routes} | {"other"}
    rng = random.Random(24)
    paths = ["/api/health", "/api/indices/x/search", "/metrics", "/no/such/page"]
    with running(app) as base, httpx.Client(base_url=base, timeout=30) as http:
        for i in range(300):
            method = "".join(rng.choices(string.ascii_uppercase, k=12))
            assert http.request(method, f"{paths[i % 4]}?n={i}").status_code in (401, 404, 405)
        http.get("/api/health")
        resp = http.get("/metrics", headers={"X-API-Key": key})
    assert resp.status_code == 200
    size = len(resp.content)
    assert size < 50_000, f"/metrics is {size} bytes after 300 made-up methods"
    samples = [s for family in text_string_to_metric_families(resp.text) for s in family.samples
               if s.name.startswith("esm_http_")]
    methods = {s.labels["method"] for s in samples if "method" in s.labels}
    routes = {s.labels["route"] for s in samples}
    assert "other" in methods and methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE",
                                              "OPTIONS", "other"}
    assert "/api/health" in routes and routes <= known_routes, routes
