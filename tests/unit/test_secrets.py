"""Secrets never printed: URL passwords, Elasticsearch passwords and API keys stay out of every
CLI output, log record, exception message and ``repr(Settings)``, while messages still say
where (host and port)."""
from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from hypothesis import given, strategies as st

from es_metric.cli import main
from es_metric.config import Settings
from es_metric.redact import RedactingFilter, redact_text, redact_url, url_password

PW, ES_PW, ES_KEY, API_KEY = "hunter2-redis", "s3cret-es-pw", "ZXNrZXk6c2VjcmV0LWtleQ", "api-key-9f8e7d"


@pytest.mark.parametrize("url, shown", [
    ("redis://:hunter2@host:6379/0", "redis://:***@host:6379/0"),
    ("redis://:hunter2@host/0", "redis://:***@host/0"),
    ("https://user:pw@host", "https://user:***@host"),
    ("https://user:p%40w@es.example:9243/prefix?x=1", "https://user:***@es.example:9243/prefix?x=1"),
    ("redis://:p@ss@host:1/0", "redis://:***@host:1/0"),           # '@' inside the password
    ("http://u:p@[::1]:9200", "http://u:***@[::1]:9200"),
    ("redis://host:6379/0?password=hunter2&db=1", "redis://host:6379/0?password=***&db=1"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),       # nothing to hide
    ("redis://alice@host/0", "redis://alice@host/0"),               # a user name is not a secret
    ("", ""),
])
def test_redact_url_by_hand(url, shown):
    assert redact_url(url) == shown


def test_url_password_finds_userinfo_and_query_secrets():
    assert url_password("redis://:hunter2@h/0") == "hunter2"
    assert url_password("https://u:p%40w@h") == "p%40w"
    assert url_password("redis://h/0?db=1&password=zz") == "zz"
    assert url_password("redis://h/0") is None and url_password(None) is None


@given(password=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40),
       user=st.sampled_from(["", "bob"]), port=st.integers(1, 65535))
def test_redacted_urls_never_hold_the_password(password, user, port):
    """Any password, percent-encoded as URLs require, is gone; host and port remain."""
    secret = "PW" + password
    url = f"redis://{user}:{quote(secret, safe='')}@cache.internal:{port}/0"
    shown = redact_url(url)
    assert quote(secret, safe="") not in shown and secret not in shown
    assert shown == f"redis://{user}:***@cache.internal:{port}/0"
    text = redact_text(f"cannot reach {url}: refused", [url_password(url)])
    assert quote(secret, safe="") not in text and f"cache.internal:{port}" in text


def test_redact_text_masks_urls_and_known_secrets():
    text = "connect to https://bob:s3cret@es:9243 failed; header ApiKey abc123key; token=zz9 ok"
    out = redact_text(text, ["abc123key"])
    assert out == "connect to https://bob:***@es:9243 failed; header ApiKey ***; token=zz9 ok"


def test_settings_repr_and_secrets():
    s = Settings.from_env({"ESM_ES_URL": f"https://bob:{ES_PW}@es.example:9243",
                           "ESM_REDIS_URL": f"redis://:{PW}@cache:6380/0", "ESM_ES_API_KEY": ES_KEY,
                           "ESM_API_KEY": API_KEY})
    text = repr(s)
    for secret in (PW, ES_PW, ES_KEY, API_KEY):
        assert secret not in text and secret in s.secrets()
    assert "https://bob:***@es.example:9243" in text and "redis://:***@cache:6380/0" in text
    # the worker still gets the real values
    assert s.as_env()["ESM_REDIS_URL"] == f"redis://:{PW}@cache:6380/0"


def test_log_filter_scrubs_messages_and_tracebacks():
    record_out = []

    class Keep(logging.Handler):
        def emit(self, record):
            record_out.append(self.format(record))

    logger = logging.getLogger("test-redact")
    handler = Keep()
    handler.addFilter(RedactingFilter([ES_KEY]))
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"failed with key {ES_KEY} at redis://:{PW}@h:1/0")
        except RuntimeError:
            logger.exception("while talking to %s", f"https://u:{ES_PW}@h:9200")
    finally:
        logger.removeHandler(handler)
    [out] = record_out
    assert ES_KEY not in out and PW not in out and ES_PW not in out
    assert "https://u:***@h:9200" in out and "redis://:***@h:1/0" in out and "RuntimeError" in out


# --------------------------------------------------------------------------- the CLI


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def echoing_es():
    """A 'wrong' Elasticsearch: answers every request with an error that echoes the request's
    credentials (what a misconfigured proxy may do). Their text must not reach the output."""
    import base64

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            auth = self.headers.get("Authorization") or ""
            if auth.startswith("Basic "):
                auth = base64.b64decode(auth[6:]).decode()
            body = json.dumps({"error": {"type": "proxy_error", "reason": f"bad upstream for {auth}"},
                               "status": 502}).encode()
            self.send_response(502)
            self.send_header("X-Elastic-Product", "Elasticsearch")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_HEAD(self):  # "it exists": the command goes on to a request with a body
            self.send_response(200)
            self.send_header("X-Elastic-Product", "Elasticsearch")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


COMMANDS = {
    "ingest": ["ingest", "idx", "{data}", "--timeout", "5"],
    "stack status": ["stack", "status"],
    "search": ["search", "idx", "--text", "shoe"],
    "mapping create": ["mapping", "create", "idx", "--model", "{model}"],
    "failures": ["failures", "idx"],
    "reindex": ["reindex", "idx", "--model", "{model}"],
}


def _env(tmp_path, es_url: str, redis_url: str, **extra) -> dict:
    return {"ESM_ES_URL": es_url, "ESM_REDIS_URL": redis_url, "ESM_STACK_DIR": str(tmp_path / "stack"),
            "ESM_API_KEY": API_KEY, "ESM_ES_TIMEOUT": "3", **extra}


def _run(name: str, env: dict, tiny_model, tiny_data, caplog):
    caplog.set_level(logging.DEBUG)
    args = [a.format(model=tiny_model, data=tiny_data) for a in COMMANDS[name]]
    result = CliRunner().invoke(main, ["-vv", *args], env=env)
    seen = result.stdout + result.stderr + caplog.text + repr(result.exception or "")
    return result, seen


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_cli_with_secret_urls_and_services_down(name, tmp_path, tiny_model, tiny_data, caplog):
    es_port, redis_port = _dead_port(), _dead_port()
    env = _env(tmp_path, f"http://bob:{ES_PW}@127.0.0.1:{es_port}",
               f"redis://:{PW}@127.0.0.1:{redis_port}/0")
    result, seen = _run(name, env, tiny_model, tiny_data, caplog)
    assert result.exit_code != 0
    for secret in (PW, ES_PW, API_KEY, quote(ES_PW)):
        assert secret not in seen, f"{secret!r} leaked by esm {name}"
    assert f"127.0.0.1:{es_port}" in result.stdout + result.stderr  # still says where
    if name == "stack status":
        assert f"redis://:***@127.0.0.1:{redis_port}/0" in result.stdout
    else:
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["search", "failures", "mapping create", "stack status"])
def test_cli_with_an_api_key_against_a_wrong_server(name, tmp_path, tiny_model, tiny_data, caplog,
                                                    echoing_es):
    env = _env(tmp_path, f"http://127.0.0.1:{echoing_es}", f"redis://:{PW}@127.0.0.1:{_dead_port()}/0",
               ESM_ES_API_KEY=ES_KEY)
    result, seen = _run(name, env, tiny_model, tiny_data, caplog)
    assert result.exit_code != 0
    for secret in (PW, ES_KEY, API_KEY):
        assert secret not in seen, f"{secret!r} leaked by esm {name}"
    assert f"127.0.0.1:{echoing_es}" in result.stdout + result.stderr


def test_cli_with_user_password_against_a_wrong_server(tmp_path, tiny_data, caplog, echoing_es):
    env = _env(tmp_path, f"http://127.0.0.1:{echoing_es}", f"redis://127.0.0.1:{_dead_port()}/0",
               ESM_ES_USER="bob", ESM_ES_PASSWORD=ES_PW)
    result, seen = _run("failures", env, None, tiny_data, caplog)
    assert result.exit_code == 3 and ES_PW not in seen
    assert "bad upstream for bob:***" in result.stderr  # the server's words, the secret masked
