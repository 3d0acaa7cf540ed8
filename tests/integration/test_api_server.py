"""The HTTP API on a real uvicorn server: the key and the body limit are enforced before and
while the body streams in (not after spooling it), and searches run off the event loop."""
from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from es_metric.web.guard import FORM_ALLOWANCE
from tests.integration.helpers import esm
from tests.integration.server import Tap, multipart_head, running, stream_upload
from tests.urlserver import serving_handler

pytestmark = [pytest.mark.integration, pytest.mark.security]
BIG = 200 * 1024 * 1024
LIMIT = 1024 * 1024
BUFFERS = 32 * 1024 * 1024  # far above what socket buffers hold, far below BIG
HEAD, FORM = multipart_head("esmboundary")


@pytest.fixture
def spools(monkeypatch):
    """Every temporary file the multipart parser opens, with the bytes written to it."""
    import starlette.formparsers as fp

    made = []

    class Counting(fp.SpooledTemporaryFile):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.written = 0
            made.append(self)

        def write(self, data):
            self.written += len(data)
            return super().write(data)

    monkeypatch.setattr(fp, "SpooledTemporaryFile", Counting)
    return made


@pytest.fixture
def guarded(stack):
    from es_metric.web.app import create_app

    tap = Tap(create_app(stack.with_(api_key="s3cret", max_upload_bytes=LIMIT)))
    with running(tap) as base:
        yield base, tap


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_upload_without_key_is_refused_before_any_body_is_read(guarded, spools, chunked):
    base, tap = guarded
    answer = stream_upload(base, "/api/indices/shop/search", HEAD, BIG, headers=FORM, chunked=chunked)
    assert answer.status == 401 and b"X-API-Key" in answer.body
    assert tap.read == 0 and spools == []
    assert answer.sent < BUFFERS  # the client was stopped, not drained


def test_declared_length_over_the_limit_is_refused_up_front(guarded, spools):
    base, tap = guarded
    answer = stream_upload(base, "/api/indices/shop/search", HEAD, BIG, chunked=False,
                           headers={**FORM, "X-API-Key": "s3cret"})
    assert answer.status == 413 and b"limit" in answer.body
    assert tap.read == 0 and spools == [] and answer.sent < BUFFERS


@pytest.mark.parametrize("declare", [None, 1000], ids=["chunked", "lying-content-length"])
def test_streamed_body_is_cut_off_when_it_crosses_the_limit(guarded, spools, declare):
    """Chunked bodies are counted as they arrive; a Content-Length that understates the body
    cannot smuggle more (the server stops at the declared length)."""
    base, tap = guarded
    answer = stream_upload(base, "/api/indices/shop/search", HEAD, BIG, chunked=declare is None,
                           declare=declare, headers={**FORM, "X-API-Key": "s3cret"})
    if declare is None:
        assert answer.status == 413 and b"over the" in answer.body
        assert LIMIT < tap.read <= LIMIT + FORM_ALLOWANCE + 256 * 1024
        assert sum(s.written for s in spools) <= LIMIT + FORM_ALLOWANCE
    else:
        assert 400 <= answer.status < 500 and tap.read <= 1000
    assert answer.sent < LIMIT + BUFFERS
    r = httpx.get(base + "/api/health")  # the server is fine afterwards
    assert r.status_code == 200


def test_key_is_checked_on_every_api_route_but_not_public_pages(guarded):
    base, _ = guarded
    for path in ("/api/indices/shop/search?text=x", "/api/indices/shop/image/a", "/api/nothing",
                 "//api/indices/shop/search"):
        r = httpx.get(base + path, headers={"X-API-Key": "wrong"})
        assert r.status_code == 401 and r.json()["error"] == "missing or wrong X-API-Key", path
    for path in ("/", "/api/health", "/openapi.json", "/static/app.js"):
        assert httpx.get(base + path).status_code == 200, path


def _big_png(side: int = 3000) -> bytes:
    y, x = np.mgrid[0:side, 0:side]
    arr = np.stack([x * 255 // side, y * 255 // side, (x ^ y) & 255], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def test_searches_run_off_the_event_loop_concurrently(stack, index_name, tiny_model, monkeypatch):
    """Four upload searches of a 3000x3000 PNG: they overlap on the server, and /api/health,
    asked while they run, answers before the first of them finishes."""
    import es_metric.web.app as web

    esm("mapping", "create", index_name, "--model", tiny_model)
    spans, lock, busy = [], threading.Lock(), threading.Event()

    def timed(*args):
        start = time.monotonic()
        busy.set()
        try:
            return web.run_search.__wrapped__(*args)
        finally:
            with lock:
                spans.append((start, time.monotonic()))

    timed.__wrapped__ = web.run_search
    monkeypatch.setattr(web, "run_search", timed)
    png = _big_png()
    app = web.create_app(stack.with_(max_upload_bytes=len(png) + 1, search_concurrency=4))
    url_path = f"/api/indices/{index_name}/search"
    with running(app) as base, httpx.Client(base_url=base, timeout=120) as http:
        def upload(_):
            r = http.post(url_path, files={"image": ("big.png", png, "image/png")}, data={"k": "3"})
            return r.status_code, time.monotonic()

        assert upload(0)[0] == 200  # warm: the model is loaded once per process
        spans.clear()
        busy.clear()
        with ThreadPoolExecutor(4) as pool:
            uploads = [pool.submit(upload, i) for i in range(4)]
            assert busy.wait(60)
            health = http.get("/api/health")
            health_done = time.monotonic()
            results = [u.result() for u in uploads]
    assert health.status_code == 200 and all(status == 200 for status, _ in results)
    assert health_done < min(done for _, done in results)
    overlap = max(sum(s <= start < e for s, e in spans) for start, _ in spans)
    assert overlap >= 2, f"searches ran one after another: {spans}"


def test_searches_past_the_queue_get_503_with_retry_after(stack, index_name, tiny_model, monkeypatch):
    import es_metric.web.app as web

    esm("mapping", "create", index_name, "--model", tiny_model)
    entered, release = threading.Event(), threading.Event()

    def held(*args):
        entered.set()
        release.wait(30)
        return {"hits": []}

    monkeypatch.setattr(web, "run_search", held)
    app = web.create_app(stack.with_(search_concurrency=1, search_queue=0))
    with running(app) as base, ThreadPoolExecutor(1) as pool:
        first = pool.submit(httpx.get, f"{base}/api/indices/{index_name}/search",
                            params={"text": "x"}, timeout=60)
        assert entered.wait(30)
        second = httpx.get(f"{base}/api/indices/{index_name}/search", params={"text": "x"})
        release.set()
        assert first.result().status_code == 200
    assert second.status_code == 503 and second.headers["Retry-After"] == "1"
    assert "try again" in second.json()["error"]


def test_image_url_searches_take_search_slots_and_past_the_queue_get_503(stack, index_name, tiny_model):
    """Issue 24, finding 3: searches by image_url fetched the URL in the thread pool, outside
    the search slots: 60 of them by a hanging URL got no 503 and held every thread, so even
    /api/health waited. Now the fetch runs in the search's slot: with one slot and a queue of
    one, 58 of 60 get 503 while the host hangs, /api/health answers meanwhile, and the two
    admitted searches finish once the host answers."""
    from es_metric.web.app import create_app

    esm("mapping", "create", index_name, "--model", tiny_model)
    with serving_handler() as (hp, host):
        app = create_app(stack.with_(url_allow=(hp,), url_timeout=120, search_concurrency=1,
                                     search_queue=1))
        params = {"image_url": f"http://{hp}/hold.png", "k": "3"}
        with running(app) as base, httpx.Client(base_url=base, timeout=180) as http, \
                ThreadPoolExecutor(60) as pool:
            searches = [pool.submit(http.get, f"/api/indices/{index_name}/search", params=params)
                        for _ in range(60)]
            try:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and (
                        host.holding[0] < 1 or sum(f.done() for f in searches) < 58):
                    time.sleep(0.05)
                refused = [f.result() for f in searches if f.done()]
                health = http.get("/api/health", timeout=60)   # while the host still hangs
                held = host.holding[0]
            finally:
                host.gate.set()
            answers = [f.result() for f in searches]
    assert held == 1 and health.status_code == 200
    assert len(refused) == 58 and all(r.status_code == 503 for r in refused)
    assert all(r.headers["Retry-After"] == "1" for r in refused)
    assert sorted(r.status_code for r in answers) == [200, 200] + [503] * 58
