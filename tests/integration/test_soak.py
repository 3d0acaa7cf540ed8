"""The short chaos soak (bench/soak.py runs the long one): a few hundred images ingested while
the worker, Redis and Elasticsearch are killed and restarted at random moments."""
from __future__ import annotations

import uuid

import pytest

from tests.integration.chaos import run_soak

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]


def test_chaos_soak_every_image_once_or_failed_with_a_reason(report, stack, es, tiny_model, tmp_path):
    alias = f"t-soak-{uuid.uuid4().hex[:8]}"  # failure records are kept per alias: never an earlier run's
    result = run_soak(stack, es, tiny_model, tmp_path / "images", images=300, chaos_seconds=150,
                      waves=5, seed=7, batch=8, alias=alias, gap=(2.0, 8.0))
    report(f"SOAK {result}")
    try:
        assert result["neither_indexed_nor_failed"] == 0 and result["duplicate_documents"] == 0
        assert result["documents"] == result["distinct_images"] - result["failed"]
        assert result["exactly_once"] and result["chaos_events"] >= 3
        assert {e.split()[0] for e in result["events"]} == {"worker", "redis", "elasticsearch"}
    finally:
        es.options(ignore_status=404).indices.delete(index=f"{alias}*")
