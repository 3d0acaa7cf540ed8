"""Security: API key, user/password and TLS with a CA file against a node with security on;
secrets never in errors or logs; Celery accepts JSON only."""
from __future__ import annotations

import logging
import time
import uuid

import pytest

from es_metric.errors import ClusterUnavailable, ConfigError
from es_metric.es import cluster_errors, make_client
from es_metric.index import count, create_versioned_index, index_info
from es_metric.modelfile import read_card
from es_metric.pipeline import process_batch
from es_metric.search import SearchRequest, run_search
from es_metric.sources import folder_items, folder_source
from tests.integration.nodes import PASSWORD, start_secure_node

pytestmark = [pytest.mark.integration, pytest.mark.security]


@pytest.fixture(scope="module")
def secure(stack):
    import shutil
    root = stack.stack_dir / "secure-test"  # pytest's tmp dirs are private to root; ES runs as `esm`
    shutil.rmtree(root, ignore_errors=True)
    node = start_secure_node(stack, root)
    yield node
    node.stop()
    shutil.rmtree(root, ignore_errors=True)


def _index_and_search(settings, tiny_model, tiny_data):
    """Create an index, write a batch through the worker's code path, search it."""
    client = make_client(settings)
    alias = f"sec-{uuid.uuid4().hex[:8]}"
    create_versioned_index(client, alias, read_card(tiny_model), str(tiny_model))
    info = index_info(client, alias)
    job = {"job_id": uuid.uuid4().hex, "alias": alias, "index": info.concrete, "model_id": info.model_id,
           "model_path": info.model_path, "vector_field": info.vector_field, "mode": "index",
           "roots": [str(tiny_data)]}
    items = list(folder_items(tiny_data / "class_2"))
    result = process_batch(settings, client, job, items)
    assert (result["indexed"], result["failed"]) == (16, 0)
    assert count(client, alias) == 16
    hits = run_search(client, alias, SearchRequest(image=open(items[0]["ref"], "rb").read(), k=3))["hits"]
    assert len(hits) == 3
    client.indices.delete(index=info.concrete)


def test_user_password_over_tls_with_ca(secure, tiny_model, tiny_data):
    _index_and_search(secure.settings(es_user=secure.user, es_password=secure.password), tiny_model, tiny_data)


def test_api_key_is_sent_and_kept_out_of_errors(stack):
    """The integ-test distribution cannot issue API keys (its .security index needs the
    analysis-common module, absent there), so a loopback server that answers like ES records
    what the client sends."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            body = json.dumps({"error": {"type": "security_exception", "reason": "bad key"}, "status": 401})
            self.send_response(401)
            self.send_header("X-Elastic-Product", "Elasticsearch")
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    key = "c2VjcmV0LWtleS1pZDpzZWNyZXQta2V5"
    s = stack.with_(es_url=f"http://127.0.0.1:{server.server_port}", es_api_key=key)
    try:
        with pytest.raises(ConfigError) as info:
            with cluster_errors(s):
                make_client(s, max_retries=0).cluster.health()
    finally:
        server.shutdown()
    assert seen == [f"ApiKey {key}"]
    assert key not in str(info.value) and key not in repr(s)


def test_wrong_password_is_clear_and_secret_free(secure, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + PASSWORD
    s = secure.settings(es_user=secure.user, es_password=wrong)
    with pytest.raises(ConfigError) as info:
        with cluster_errors(s):
            make_client(s).cluster.health()
    assert "refused the credentials (HTTP 401)" in str(info.value)
    assert wrong not in str(info.value) and wrong not in caplog.text and wrong not in repr(s)


def test_tls_without_the_ca_is_refused_clearly(secure):
    s = secure.settings(es_user=secure.user, es_password=secure.password, es_ca_file=None)
    with pytest.raises(ClusterUnavailable) as info:
        with cluster_errors(s):
            make_client(s, max_retries=0).cluster.health()
    assert secure.url in str(info.value) and PASSWORD not in str(info.value)


def test_celery_refuses_pickle_messages(stack, es, index_name, tiny_model, tiny_data):
    from workers.celery_app import make_app

    create_versioned_index(es, index_name, read_card(tiny_model), str(tiny_model))
    info = index_info(es, index_name)
    job = {"job_id": "pickle", "alias": index_name, "index": info.concrete, "model_id": info.model_id,
           "model_path": info.model_path, "vector_field": info.vector_field, "mode": "index"}
    app = make_app(stack)
    app.conf.accept_content = ["json", "pickle"]  # the sender may try; the worker must refuse
    app.send_task("es_metric.embed_batch", args=[job, list(folder_items(tiny_data / "class_0"))],
                  queue=stack.worker_queue, serializer="pickle")
    time.sleep(5)
    assert count(es, index_name) == 0
    # the worker refused it and goes on working: the same batch as JSON is processed
    from es_metric.ingest import enqueue, wait
    job = enqueue(stack, es, index_name, folder_source(tiny_data / "class_0"))
    assert wait(stack, job, timeout=120) == (16, 0)
    assert count(es, index_name) == 16
