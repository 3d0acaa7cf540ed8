"""Worker histograms kept as Redis bucket counters: the bucket a value lands in, and the
cumulative counts Prometheus expects, worked out by hand."""
from __future__ import annotations

from es_metric.ingest.metrics import FETCH_BUCKETS, PREFIX, observe, read_histogram


class FakeHashes:
    """The three Redis hash commands the histograms use, on dicts (pipeline and client)."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, float]] = {}

    def hincrby(self, key, field, n):
        self.data.setdefault(key, {})[field] = self.data.get(key, {}).get(field, 0) + n

    hincrbyfloat = hincrby

    def hgetall(self, key):
        return {k.encode(): str(v).encode() for k, v in self.data.get(key, {}).items()}


def test_values_land_in_the_first_bucket_at_or_above_them_and_read_back_cumulated():
    r = FakeHashes()
    observe(r, "fetch_seconds", [0.001, 0.003, 0.003, 0.2, 99.0])
    raw = r.data[PREFIX + "fetch_seconds"]
    assert raw["0.001"] == 1 and raw["0.005"] == 2 and raw["0.25"] == 1 and raw["+Inf"] == 1
    assert raw["count"] == 5 and abs(raw["sum"] - 99.207) < 1e-9
    buckets, total = read_histogram(r, "fetch_seconds")
    cumulative = dict(buckets)
    assert [le for le, _ in buckets] == [repr(b) for b in FETCH_BUCKETS] + ["+Inf"]
    assert cumulative["0.001"] == 1 and cumulative["0.0025"] == 1 and cumulative["0.005"] == 3
    assert cumulative["0.1"] == 3 and cumulative["0.25"] == 4 and cumulative["10.0"] == 4
    assert cumulative["+Inf"] == 5 and abs(total - 99.207) < 1e-9
