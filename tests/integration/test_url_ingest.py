"""Image URLs on the real stack: a worker started with ESM_URL_ALLOW naming a local HTTP server
fetches good images, and records 404, slow, huge, redirect-to-private and private-address
URLs as dead letters with their reasons; search by URL embeds the fetched image."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from es_metric.cli import main
from tests.integration.helpers import stored_docs, url_worker
from tests.urlserver import png_bytes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def url_stack(stack):
    """A local HTTP server, and a worker of its own queue whose settings allow-list it."""
    images = {"/red.png": png_bytes((220, 20, 20)), "/blue.png": png_bytes((20, 20, 220), (40, 60)),
              "/swap.png": png_bytes((20, 220, 20))}
    with url_worker(stack, images, url_timeout=1, max_image_bytes=2 << 20) as (s, hp, handler):
        yield s, hp, handler


def run(settings, *args: str) -> dict:
    env = {k: v for k, v in settings.as_env().items() if v}
    result = CliRunner().invoke(main, [str(a) for a in args] + ["--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_url_manifest_ingest_indexes_good_urls_and_dead_letters_the_rest(es, index_name, tiny_model,
                                                                         url_stack, tmp_path):
    s, hp, _handler = url_stack
    lines = {"red": f"http://{hp}/red.png", "blue": f"http://{hp}/blue.png",
             "missing": f"http://{hp}/missing.png", "slow": f"http://{hp}/slow.png",
             "huge": f"http://{hp}/huge.png",
             "to-private": f"http://{hp}/redirect-to/169.254.169.254/latest/meta-data/",
             "to-loopback": f"http://{hp}/redirect-to/127.0.0.1:{s.es_port}/_cat/indices",
             "private": f"http://127.0.0.1:{s.redis_port}/x.png",
             "userinfo": f"http://{hp}@10.0.0.1/x.png"}
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": k, "image": v}) + "\n" for k, v in lines.items()))
    CliRunner().invoke(main, ["mapping", "create", index_name, "--model", str(tiny_model)],
                       env={k: v for k, v in s.as_env().items() if v}, catch_exceptions=False)
    summary = run(s, "ingest", index_name, manifest, "--timeout", "180")
    assert (summary["indexed"], summary["failed"]) == (2, 7), summary
    reasons = {r["doc_id"]: r["reason"] for r in run(s, "failures", index_name)["failures"]}
    assert reasons == {"missing": "url_not_found", "slow": "url_timeout", "huge": "too_large",
                       "to-private": "url_refused", "to-loopback": "url_refused",
                       "private": "url_refused", "userinfo": "url_refused"}
    doc = stored_docs(es, index_name)["blue"]  # vectors from doc values (a lean index)
    assert doc["image_path"] == lines["blue"] and len(doc["image_vector"]) == 32

    hits = run(s, "search", index_name, "--image", lines["red"], "-k", "2")["hits"]
    assert hits[0]["id"] == "red"


def test_a_photo_at_a_url_is_served_by_the_api_and_the_key_never_reaches_its_host(
        es, index_name, tiny_model, url_stack, tmp_path):
    """Issue 24, finding 2: the image endpoint answered 307 to the photo's URL and the client
    (the page's fetch, here httpx following redirects) sent X-API-Key to that host. Now the API
    fetches the photo itself (the guarded fetcher, cached) and answers it from its own origin;
    the host, which records every request's headers, never sees the key; a host that starts
    serving HTML instead of the photo gets it refused, never served under the API's origin."""
    import httpx

    from es_metric.web.app import create_app
    from tests.integration.server import running

    s, hp, handler = url_stack
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": k, "image": f"http://{hp}/{k}.png"}) + "\n"
                                for k in ("red", "swap")))
    CliRunner().invoke(main, ["mapping", "create", index_name, "--model", str(tiny_model)],
                       env={k: v for k, v in s.as_env().items() if v}, catch_exceptions=False)
    assert run(s, "ingest", index_name, manifest, "--timeout", "180")["indexed"] == 2
    key = "k24-never-leaves-this-origin"
    handler.headers_seen.clear()
    handler.hits.clear()
    with running(create_app(s.with_(api_key=key))) as base, \
            httpx.Client(base_url=base, headers={"X-API-Key": key}, follow_redirects=True,
                         timeout=60) as http:
        first = http.get(f"/api/indices/{index_name}/image/red")
        again = http.get(f"/api/indices/{index_name}/image/red")
        handler.images["/swap.png"] = b"<html><script>alert(document.cookie)</script></html>"
        swapped = http.get(f"/api/indices/{index_name}/image/swap")
    leaked = [h for h in handler.headers_seen if key in str(h)]
    assert handler.headers_seen and not leaked, f"the image host got the key: {leaked}"
    assert first.status_code == 200 and not first.history, first.history   # answered, not redirected
    assert first.content == png_bytes((220, 20, 20)) and first.headers["content-type"] == "image/png"
    assert first.headers["x-content-type-options"] == "nosniff"
    assert again.content == first.content and handler.hits["/red.png"] == 1   # cached
    assert swapped.status_code == 502 and swapped.json()["reason"] == "not_an_image"
    assert "script" not in swapped.text
