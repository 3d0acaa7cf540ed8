"""Shared fixtures. Integration tests need the real stack and FAIL (never skip) without it.

The tiers (pyproject.toml registers the markers, ``--strict-markers`` refuses any other):
``make test-unit`` runs ``tests/unit`` without the ``slow`` tests and needs no service;
``make test`` (CI, ``.ci/run``) runs everything. A test that asks for the stack (the ``stack``
fixture, or any fixture built on it: ``es``, ``index_name``, ...) must be marked
``integration``, and one that asks for a browser ``e2e``: ``pytest_runtest_setup`` fails it
otherwise, before the fixture runs. Hypothesis runs the ``ci`` profile (derandomised) when the
environment has ``CI`` (``.ci/run`` sets ``CI=1``), or with ``--hypothesis-profile ci``."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings as hypothesis_settings

from tests.imagegen import make_dataset

os.environ.setdefault("ESM_PROGRESS", "0")
pytest_plugins = ["pytester"]  # tests/unit/test_tiers.py runs pytest on a generated test module

# CI: the same examples on every run (a failure is reproduced by running again, and the blob
# it prints replays it anywhere), no example database, no deadline on a loaded machine. Loaded
# when CI is in the environment (any value), as recent Hypothesis versions do on their own;
# registered here so that the values do not depend on the installed version.
hypothesis_settings.register_profile(
    "ci", derandomize=True, database=None, print_blob=True, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
if "CI" in os.environ:
    hypothesis_settings.load_profile("ci")

# fixture -> the marker a test that uses it (directly or through another fixture) must carry
TIER_FIXTURES = {"stack": "integration", "browser": "e2e"}


def unmarked_tiers(item) -> list[str]:
    """The markers of the tiers whose fixtures ``item`` uses without carrying the marker."""
    used = getattr(item, "fixturenames", ())
    return [marker for fixture, marker in TIER_FIXTURES.items()
            if fixture in used and item.get_closest_marker(marker) is None]


def pytest_runtest_setup(item):
    """A test that uses a tier's fixture without the tier's marker fails before the fixture runs."""
    for marker in unmarked_tiers(item):
        fixture = next(f for f, m in TIER_FIXTURES.items() if m == marker)
        pytest.fail(f"{item.nodeid} uses the {fixture!r} fixture but is not marked {marker!r}: add "
                    f"`pytestmark = pytest.mark.{marker}` to its module", pytrace=False)


def pytest_report_header(config):
    from es_metric.version import ES_VERSION
    from es_metric.config import Settings
    from es_metric.stack.es_node import es_health, es_node_info

    s = Settings.from_env()
    health = es_health(s)
    if not health:
        return [f"elasticsearch: NOT reachable at {s.es_url} (pinned {ES_VERSION})"]
    info = es_node_info(s)
    return [f"elasticsearch: {info.get('version')} (JVM {info.get('jvm')}) at {s.es_url}, health {health}"]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny") / "images", n_classes=6, per_class=16)


@pytest.fixture(scope="session")
def tiny_model(tiny_data, tmp_path_factory) -> Path:
    """A small-cnn encoder trained for a few epochs on the generated images (32-d, cosine)."""
    from es_metric.training.train import TrainConfig, train

    out = tmp_path_factory.mktemp("models") / "small.pt"
    train(tiny_data, out, TrainConfig(loss="triplet", backbone="small-cnn", dim=32, epochs=4,
                                      batch_size=48, seed=1, qe_k=0, dba_k=0))  # plain kNN ranking
    return out


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    """A copy of the session's small-cnn model, exported to ONNX (the shared file stays
    torch-only, as the other tests expect)."""
    from es_metric.model.export import export_model

    path = tmp_path_factory.mktemp("exported") / "small.pt"
    shutil.copy(tiny_model, path)
    export_model(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_l2(tiny_data, tmp_path_factory) -> Path:
    """A different model (other dims, l2_norm) for mismatch and reindex tests."""
    from es_metric.training.train import TrainConfig, train

    out = tmp_path_factory.mktemp("models") / "small-l2.pt"
    train(tiny_data, out, TrainConfig(loss="mahalanobis", backbone="small-cnn", pretrained=False,
                                      dim=24, epochs=3, batch_size=48, seed=2, qe_k=0, dba_k=0))
    return out


@pytest.fixture(scope="session")
def settings():
    from es_metric.config import Settings
    return Settings.from_env()


@pytest.fixture(scope="session")
def stack(settings):
    """The real stack. Fails with a clear message when any part is missing."""
    from es_metric.stack.redis_server import redis_ping
    from es_metric.ingest.celery_app import worker_ping
    from es_metric.stack.es_node import es_health

    problems = []
    if not es_health(settings):
        problems.append(f"Elasticsearch does not answer at {settings.es_url}")
    if redis_ping(settings) is None:
        problems.append(f"Redis does not answer at {settings.redis_url}")
    elif not worker_ping(settings):
        problems.append(f"no Celery worker answers on queue {settings.worker_queue!r}")
    if problems:
        pytest.fail("integration tests need the real stack: " + "; ".join(problems)
                    + ". Start it with `esm stack up` (or `make stack`).", pytrace=False)
    return settings


@pytest.fixture
def es(stack):
    from es_metric.index.client import make_client
    client = make_client(stack)
    yield client
    client.close()


@pytest.fixture
def index_name(es):
    """A unique alias name; every index starting with it is deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    es.options(ignore_status=404).indices.delete(index=f"{name}*", expand_wildcards="all")


@pytest.fixture
def report(request):
    """Write a line to the terminal even while pytest captures output (fault-test counts)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def write(text: str) -> None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("\n" + text)
    return write


@pytest.fixture
def redis_cleanup(stack):
    """``redis_cleanup(index)``: the follower state of that index is deleted afterwards."""
    from es_metric.ingest.jobs import redis_client

    names: list[str] = []
    yield names.append
    r = redis_client(stack)
    for name in names:
        for key in r.scan_iter(match=f"esm:follow:{name}*"):
            r.delete(key)
