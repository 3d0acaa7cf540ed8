"""The HTTP API under concurrency: searches/s, p50 and p95 latency for 1, 4 and 16 clients that
send searches back to back, by uploaded image and by indexed document id, beside the ceiling of
the same searches made in-process through the Python API (``EsMetric.search``) by as many
threads, so the cost of HTTP and the event loop is visible.

The server is the product's: ``esm serve`` in its own process, with this shell's ``ESM_*``
settings (``ESM_SEARCH_CONCURRENCY``, ``ESM_SEARCH_QUEUE``). The index is made the way the
product makes one (``create_versioned_index``, lean) and filled through the worker's bulk path
(``build_actions`` + ``write_bulk``) with --docs clustered unit vectors of the model's dims. The
model is the default backbone and head (EfficientNet-Lite0, 256-d, untrained: the cost is the
same) with its ONNX export beside it, so the query path runs the runtime it picks by default.
Query images: real JPEGs of the Grocery Store set when present, else generated ones.

While the HTTP clients run, a probe asks for an unknown path every 100 ms: the 404 is answered
on the event loop alone, so its latency shows whether anything blocks the loop.

Usage: python bench/api_concurrency.py [--clients 1,4,16] [--seconds 20] [--docs 3000] [--data DIR]
Needs the stack. Writes bench/results/api_concurrency.json.
"""
from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import httpx
import numpy as np
from PIL import Image

from common import DATA, ROOT, bench_model, write_result
from es_metric.api import EsMetric
from es_metric.config import Settings
from es_metric.index.client import make_client
from es_metric.index.indices import create_versioned_index, index_info
from es_metric.ingest.pipeline import build_actions, write_bulk
from es_metric.model.export import export_model
from es_metric.model.modelfile import read_card
from es_metric.model.runtime import load_embedder
from es_metric.training.config import DEFAULT_RERANK
from knn import clustered, pct

sys.path.insert(0, str(ROOT.parent))
from tests.integration.server import served  # noqa: E402  (the tests' server code, not a copy)

BACKBONE, DIMS, ALIAS = "efficientnet-lite0", 256, "bench-api-concurrency"
Call = Callable[[int], str]  # request number -> "ok", "shed" (429/503 + Retry-After) or "failed:<why>"


def query_jpegs(data: Path, n: int = 50) -> tuple[list[bytes], str]:
    """Real grocery photos when the data set is here, else photo-like generated JPEGs."""
    files = sorted(data.rglob("*.jpg"))[::37][:n] if data.is_dir() else []
    if files:
        return [f.read_bytes() for f in files], f"{len(files)} Grocery Store JPEGs"
    rng, side, out = np.random.default_rng(3), 348, []
    y, x = np.mgrid[0:side, 0:side] / side
    for i in range(n):
        base = np.stack([np.sin(6 * x + i), np.cos(5 * y - i), x * y], -1) * 90 + 128
        arr = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out, f"{n} generated {side}x{side} JPEGs"


def fill(es, card: dict, model: Path, n: int) -> list[str]:
    """An es-metric index of ``n`` documents written by the worker's bulk path; their ids. The
    index records the re-ranking ``esm train`` writes in a card (query expansion on), so both
    workloads run the default search path."""
    es.options(ignore_status=404).indices.delete(index=f"{ALIAS}*", expand_wildcards="all")
    create_versioned_index(es, ALIAS, {**card, "rerank": DEFAULT_RERANK.as_dict()}, str(model))
    info = index_info(es, ALIAS)
    job = {"index": info.concrete, "vector_field": info.vector_field, "model_id": card["model_id"],
           "mode": "index"}
    ids = [f"doc-{i}" for i in range(n)]
    good = [({"ref": f"/bench/{i}.jpg", "id": i, "fields": {"title": f"product {i}"}}, f"{k:064x}")
            for k, i in enumerate(ids)]
    owners = {item["id"]: [item] for item, _ in good}
    result = write_bulk(es, build_actions(job, good, clustered(n, int(card["dims"]), seed=7)), owners)
    assert not result.failures, result.failures[:3]
    es.indices.refresh(index=info.concrete)
    return ids


def outcome(status: int, headers) -> str:
    if status == 200:
        return "ok"
    if status in (429, 503) and "retry-after" in headers:
        return "shed"
    return f"failed:{status}"


def http_caller(base: str, kind: str, jpegs: list[bytes], ids: list[str]) -> Callable[[], tuple[Call, Callable]]:
    """A factory of one client each (its own connection), searching by upload or by id."""
    path = f"/api/indices/{ALIAS}/search"

    def make() -> tuple[Call, Callable]:
        http = httpx.Client(base_url=base, timeout=120)

        def call(n: int) -> str:
            if kind == "upload":
                r = http.post(path, files={"image": ("q.jpg", jpegs[n % len(jpegs)], "image/jpeg")},
                              data={"k": "10"})
            else:
                r = http.get(path, params={"like": ids[n % len(ids)], "k": 10})
            return outcome(r.status_code, r.headers)
        return call, http.close
    return make


def api_caller(esm: EsMetric, kind: str, jpegs: list[bytes], ids: list[str]) -> Callable[[], tuple[Call, Callable]]:
    """The same searches through the Python API, one EsMetric shared by the threads."""
    def make() -> tuple[Call, Callable]:
        def call(n: int) -> str:
            if kind == "upload":
                esm.search(ALIAS, image=jpegs[n % len(jpegs)], k=10)
            else:
                esm.search(ALIAS, like=ids[n % len(ids)], k=10)
            return "ok"
        return call, lambda: None
    return make


def drive(make: Callable[[], tuple[Call, Callable]], clients: int, seconds: float, warmup: float) -> dict:
    """``clients`` threads send requests back to back; what starts in the window after
    ``warmup`` is counted."""
    t0 = time.perf_counter()
    start, end = t0 + warmup, t0 + warmup + seconds
    rng = np.random.default_rng(clients)

    def client(c: int) -> list[tuple[float, float, str]]:
        call, close = make()
        seen, n = [], int(rng.integers(0, 1 << 20)) + c * 7919
        try:
            while (began := time.perf_counter()) < end:
                try:
                    what = call(n)
                except Exception as exc:  # a lost request is a result, not a crash of the bench
                    what = f"failed:{type(exc).__name__}"
                seen.append((began, time.perf_counter(), what))
                n += 1
        finally:
            close()
        return seen

    with ThreadPoolExecutor(clients) as pool:
        done = [r for rs in pool.map(client, range(clients)) for r in rs if r[0] >= start]
    ok = [(b, f) for b, f, w in done if w == "ok"]
    span = max((f for _, f, _ in done), default=end) - start
    kinds = Counter(w for _, _, w in done if w != "ok")
    return {"clients": clients, "searches_per_s": round(len(ok) / span, 2), "ok": len(ok),
            "latency_ms": pct([(f - b) * 1000 for b, f in ok]) if ok else None,
            "shed_with_retry_after": kinds.pop("shed", 0), "failed": dict(kinds)}


@contextmanager
def loop_probe(base: str) -> Iterator[list[float]]:
    """Latencies of a 404 (answered on the event loop alone), asked every 100 ms."""
    lat, stop = [], threading.Event()

    def probe():
        with httpx.Client(base_url=base, timeout=60) as http:
            while not stop.is_set():
                t = time.perf_counter()
                http.get("/no-such-route")
                lat.append((time.perf_counter() - t) * 1000)
                stop.wait(0.1)
    thread = threading.Thread(target=probe)
    thread.start()
    try:
        yield lat
    finally:
        stop.set()
        thread.join()


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def measure(base: str, esm: EsMetric, clients: list[int], args, jpegs: list[bytes], ids: list[str]) -> list[dict]:
    """Each workload at each number of clients: through HTTP (with the loop probe), then the
    in-process ceiling."""
    rows = []
    for kind in ("upload", "by_id"):
        for call in (http_caller(base, kind, jpegs, ids), api_caller(esm, kind, jpegs, ids)):
            call()[0](0)  # load the model / warm the caches (not timed)
        for n in clients:
            with loop_probe(base) as probe:
                http = drive(http_caller(base, kind, jpegs, ids), n, args.seconds, args.warmup)
            api = drive(api_caller(esm, kind, jpegs, ids), n, args.seconds, args.warmup)
            rows.append({"workload": kind, "clients": n, "http": http, "python_api": api,
                         "http_share_of_ceiling": round(http["searches_per_s"] / api["searches_per_s"], 2),
                         "loop_probe_ms": pct(probe) if probe else None, "load_avg": os.getloadavg()})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--data", type=Path, default=DATA, help="query JPEGs (default: the Grocery Store set)")
    args = ap.parse_args()
    settings = Settings.from_env()
    model = bench_model(BACKBONE, DIMS, ROOT / "results" / f"bench-{BACKBONE}-{DIMS}.pt")
    export_model(model)  # the default query path runs the export (ESM_RUNTIME=auto)
    es = make_client(settings)
    ids = fill(es, read_card(model), model, args.docs)
    jpegs, images = query_jpegs(args.data)
    runtime = load_embedder(model, settings.runtime, settings.device).runtime
    log, load_before = Path(tempfile.gettempdir()) / "esm-api-concurrency-server.log", uptime()
    try:
        with served(log) as (base, _pid), EsMetric(settings) as esm:
            rows = measure(base, esm, [int(c) for c in args.clients.split(",")], args, jpegs, ids)
    finally:
        es.options(ignore_status=404).indices.delete(index=f"{ALIAS}*", expand_wildcards="all")
    errors = [line for line in log.read_text().splitlines() if "Traceback" in line or '" 500' in line]
    result = {"backbone": BACKBONE, "dims": DIMS, "runtime": runtime, "documents": args.docs,
              "index": "create_versioned_index defaults (lean), worker bulk path", "queries": images,
              "seconds": args.seconds, "warmup_s": args.warmup, "cores": os.cpu_count(),
              "server": {"command": "esm serve (one uvicorn process)",
                         "ESM_SEARCH_CONCURRENCY": settings.search_concurrency,
                         "ESM_SEARCH_QUEUE": settings.search_queue, "ESM_RUNTIME": settings.runtime,
                         "ESM_DEVICE": settings.device, "log_errors": errors[:20]},
              "uptime_before": load_before, "uptime_after": uptime(), "rows": rows}
    default = Settings.from_env({}).search_concurrency == settings.search_concurrency
    name = "api_concurrency" if default else f"api_concurrency-sc{settings.search_concurrency}"
    print("wrote", write_result(name, result), "server log:", log)


if __name__ == "__main__":
    main()
