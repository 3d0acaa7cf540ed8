"""Worker metrics in prometheus_client's multiprocess mode: two worker processes write their own
files, one read sums them (the API's collector, and the exporter a worker on another host runs)."""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from es_metric.config import Settings
from es_metric.ingest import promfiles
from es_metric.ingest.promfiles import WorkerFiles
from tests.integration.server import free_port

BATCH = """
from es_metric.ingest.metrics import record_batch
record_batch({seconds}, {{"indexed": {indexed}, "failures": [
    {{"reason": "corrupt_image"}}, {{"reason": "x" * 5000}}, {{"reason": None}}]}}, [0.002, 0.2])
"""


def _worker_batch(folder, seconds: float, indexed: int) -> None:
    """One batch recorded by another process writing to ``folder``, as a worker child does."""
    env = {**os.environ, promfiles.ENV: str(folder)}
    subprocess.run([sys.executable, "-c", BATCH.format(seconds=seconds, indexed=indexed)], env=env,
                   check=True, timeout=120)


def _samples(families) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def _check_sums(got: dict) -> None:
    assert got[("esm_images_embedded_total", ())] == 16 + 3
    assert got[("esm_images_failed_total", (("reason", "corrupt_image"),))] == 2
    assert got[("esm_images_failed_total", (("reason", "unknown"),))] == 2
    assert got[("esm_images_failed_total", (("reason", "x" * 64),))] == 2  # a label is cut
    assert got[("esm_batch_duration_seconds_count", ())] == 2
    assert got[("esm_batch_duration_seconds_bucket", (("le", "0.25"),))] == 1
    assert got[("esm_batch_duration_seconds_bucket", (("le", "5.0"),))] == 2
    assert got[("esm_image_fetch_seconds_count", ())] == 4
    assert got[("esm_image_fetch_seconds_bucket", (("le", "0.0025"),))] == 2
    assert abs(got[("esm_image_fetch_seconds_sum", ())] - 0.404) < 1e-9


def test_two_worker_processes_are_summed_by_one_read(tmp_path):
    _worker_batch(tmp_path, 0.2, 16)
    _worker_batch(tmp_path, 4.0, 3)
    assert len(list(tmp_path.glob("*.db"))) >= 2  # one file per process
    _check_sums(_samples(WorkerFiles(tmp_path).collect()))


def test_no_folder_no_worker_metrics(tmp_path):
    assert list(WorkerFiles(tmp_path / "none").collect()) == []


def test_a_starting_worker_empties_its_folder_and_serves_it_on_its_port(tmp_path, monkeypatch):
    """What a worker on another host runs (ESM_WORKER_METRICS_PORT): its folder's sum over HTTP."""
    monkeypatch.setenv(promfiles.ENV, "")  # restored after: prepare sets it for the worker's children
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_1.db").write_bytes(b"stale")
    settings = Settings(metrics_dir=folder, worker_metrics_port=free_port())
    server = None
    try:
        assert promfiles.prepare(settings.with_(worker_metrics_port=0)) == folder
        assert os.environ[promfiles.ENV] == str(folder) and not list(folder.glob("*.db"))
        _worker_batch(folder, 0.2, 16)
        _worker_batch(folder, 4.0, 3)
        server = promfiles.serve(folder, settings.worker_metrics_port)
        url = f"http://127.0.0.1:{settings.worker_metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as resp:
            _check_sums(_samples(text_string_to_metric_families(resp.read().decode())))
    finally:
        if server is not None:
            server.shutdown()


def test_the_default_folder_is_per_stack_and_queue():
    s = Settings(worker_queue="q1")
    assert s.worker_metrics_dir == s.stack_dir / "metrics" / "q1"
    assert Settings.from_env(s.with_(worker_metrics_port=9101).as_env()).worker_metrics_port == 9101
