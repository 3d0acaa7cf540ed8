"""Image URLs on the real stack: a worker started with ESM_URL_ALLOW naming a local HTTP server
fetches good images, and records 404, slow, huge, redirect-to-private and private-address
URLs as dead letters with their reasons; search by URL embeds the fetched image."""
from __future__ import annotations

import json
import uuid

import pytest
from click.testing import CliRunner

from es_metric.cli import main
from tests.integration.helpers import stored_docs
from tests.urlserver import png_bytes, serving

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def url_stack(stack):
    """A local HTTP server, and a worker of its own queue whose settings allow-list it."""
    from es_metric.stack import worker as esm_worker

    with serving({"/red.png": png_bytes((220, 20, 20)), "/blue.png": png_bytes((20, 20, 220), (40, 60))}) as hp:
        s = stack.with_(worker_queue=f"esm-url-{uuid.uuid4().hex[:6]}", url_allow=(hp,), url_timeout=1,
                        max_image_bytes=2 << 20)
        esm_worker.start_worker(s)
        try:
            yield s, hp
        finally:
            esm_worker.stop_worker(s)


def run(settings, *args: str) -> dict:
    env = {k: v for k, v in settings.as_env().items() if v}
    result = CliRunner().invoke(main, [str(a) for a in args] + ["--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_url_manifest_ingest_indexes_good_urls_and_dead_letters_the_rest(es, index_name, tiny_model,
                                                                         url_stack, tmp_path):
    s, hp = url_stack
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
