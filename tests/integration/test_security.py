"""Security: API key, user/password and TLS with a CA file against a node with security on;
secrets never in errors or logs; Celery accepts JSON only."""
from __future__ import annotations

import logging
import re
import time
import uuid
from pathlib import Path

import pytest

from es_metric.errors import ClusterUnavailable, ConfigError
from es_metric.index.client import cluster_errors, make_client
from es_metric.index.indices import count, create_versioned_index, index_info
from es_metric.ingest.pipeline import process_batch
from es_metric.ingest.sources import folder_items, folder_source
from es_metric.model.modelfile import read_card
from es_metric.search.service import SearchRequest, run_search
from tests.integration.helpers import worker_log
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
    hits = run_search(client, alias, SearchRequest(image=Path(items[0]["ref"]).read_bytes(), k=3))["hits"]
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
        with pytest.raises(ConfigError) as info, cluster_errors(s):
            make_client(s, max_retries=0).cluster.health()
    finally:
        server.shutdown()
    assert seen == [f"ApiKey {key}"]
    assert key not in str(info.value) and key not in repr(s)


def test_wrong_password_is_clear_and_secret_free(secure, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + PASSWORD
    s = secure.settings(es_user=secure.user, es_password=wrong)
    with pytest.raises(ConfigError) as info, cluster_errors(s):
        make_client(s).cluster.health()
    assert "refused the credentials (HTTP 401)" in str(info.value)
    assert wrong not in str(info.value) and wrong not in caplog.text and wrong not in repr(s)


def test_tls_without_the_ca_is_refused_clearly(secure):
    s = secure.settings(es_user=secure.user, es_password=secure.password, es_ca_file=None)
    with pytest.raises(ClusterUnavailable) as info, cluster_errors(s):
        make_client(s, max_retries=0).cluster.health()
    assert secure.url in str(info.value) and PASSWORD not in str(info.value)


def test_celery_refuses_pickle_messages(stack, es, index_name, tiny_model, tiny_data):
    """A pickled task is refused by the worker, which goes on working. Observable, not timed:
    the pickle message is queued first and a JSON job after it on the same queue; when the JSON
    job is done, the worker has taken the pickle message off the queue before it (FIFO), its
    log says it refused to deserialize it, and its images (another class) were never written."""
    from es_metric.ingest.enqueue import enqueue, wait
    from es_metric.ingest.celery_app import make_app

    create_versioned_index(es, index_name, read_card(tiny_model), str(tiny_model))
    info = index_info(es, index_name)
    job = {"job_id": "pickle", "alias": index_name, "index": info.concrete, "model_id": info.model_id,
           "model_path": info.model_path, "vector_field": info.vector_field, "mode": "index"}
    app = make_app(stack)
    app.conf.accept_content = ["json", "pickle"]  # the sender may try; the worker must refuse
    log_before = len(worker_log(stack))
    app.send_task("es_metric.embed_batch", args=[job, list(folder_items(tiny_data / "class_0"))],
                  queue=stack.worker_queue, serializer="pickle")
    app.close()
    json_job = enqueue(stack, es, index_name, folder_source(tiny_data / "class_1"))
    assert wait(stack, json_job, timeout=120) == (16, 0)
    es.indices.refresh(index=index_name)
    refs = {h["_source"]["image_path"] for h in es.search(index=index_name, size=100)["hits"]["hits"]}
    assert len(refs) == 16 and all("/class_1/" in ref for ref in refs)   # nothing from the pickle task
    log = worker_log(stack)[log_before:]
    refused = log.split("Received invalid task message: ")[1:]
    assert len(refused) == 1, f"the worker log does not show one message refused:\n{log}"
    assert refused[0].startswith("Refusing to deserialize untrusted content of type pickle")
    assert index_name in refused[0].split("Task es_metric")[0]  # the refused body it dumps: our task


REDIS_PW, ES_PW = "hunter2-broker-pw", "s3cret-es-in-url"


@pytest.fixture
def redis_with_password(stack):
    """A second Redis that demands a password (a child process, stopped by its own handle)."""
    import shutil
    import socket
    import subprocess

    import redis

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                             "--requirepass", REDIS_PW, "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port, password=REDIS_PW)
    for _ in range(50):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def test_secret_urls_stay_out_of_worker_log_and_cli(stack, es, index_name, tiny_model, tiny_data,
                                                    redis_with_password, tmp_path, caplog):
    """A worker started like `esm stack up` starts it, with a password in the broker URL and
    in the Elasticsearch URL: the CLI works through them, says where it connects, and neither
    password appears in the CLI's output, the logs, or the worker's log file."""
    from click.testing import CliRunner

    from es_metric.stack import worker as esm_stack
    from es_metric.stack.worker import supervisor_log
    from es_metric.cli import main

    caplog.set_level(logging.DEBUG)
    port = redis_with_password
    broker = f"redis://:{REDIS_PW}@127.0.0.1:{port}/0"
    s = stack.with_(redis_url=broker, redis_external=True, stack_dir=tmp_path / "stack",
                    es_url=f"http://bob:{ES_PW}@127.0.0.1:{stack.es_port}", es_external=True,
                    worker_queue="esm-secret")
    env = {k: v for k, v in s.as_env().items() if v}
    create_versioned_index(es, index_name, read_card(tiny_model), str(tiny_model))
    esm_stack.start_worker(s)
    try:
        runner = CliRunner()
        ingested = runner.invoke(main, ["ingest", index_name, str(tiny_data / "class_0"), "--timeout", "120"],
                                 env=env)
        status = runner.invoke(main, ["stack", "status"], env=env)
        wrong = runner.invoke(main, ["ingest", index_name, str(tiny_data / "class_0")],
                              env={**env, "ESM_REDIS_URL": broker.replace(REDIS_PW, "not-" + REDIS_PW)})
    finally:
        esm_stack.stop_worker(s)
    assert ingested.exit_code == 0 and "16 indexed, 0 failed" in ingested.stdout, ingested.output
    assert f"redis://:***@127.0.0.1:{port}/0" in status.stdout and "esm-secret-" in status.stdout
    assert f"http://bob:***@127.0.0.1:{stack.es_port}" in status.stdout
    assert wrong.exit_code != 0 and f"127.0.0.1:{port}" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
    logged = worker_log(s)
    # Celery masks the broker password in its own lines (**), es-metric's log filter in all (***)
    assert re.search(rf"Connected to redis://:\*+@127\.0\.0\.1:{port}/0", logged), logged
    assert "embed_batch" in logged and "succeeded" in logged
    supervised = supervisor_log(s).read_text(errors="replace")  # the worker's stdout and stderr too
    assert "worker esm-secret-" in supervised
    seen = "\n".join([ingested.output, status.output, wrong.output, caplog.text, logged, supervised])
    for secret in (REDIS_PW, ES_PW):
        assert secret not in seen
