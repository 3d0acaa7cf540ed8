"""The HTTP API under load: does /api/health stay prompt while large-image searches run, do
those searches run side by side, and what does an unauthenticated 200 MB upload cost?

Starts the real app on uvicorn (in this process, so the bytes the app reads can be counted),
against an empty index of an untrained model of --backbone (the embedding cost is the same).
Compare with the ceiling in the same run: N uploads can take no less than N x (one upload
alone) / cores.

Usage: python bench/api_load.py [--backbone mobilenet_v3_large] [--uploads 8] [--side 3000]
Needs the stack. Writes bench/results/api_load.json.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from PIL import Image

from common import ROOT, bench_model, write_result
from es_metric.config import Settings
from es_metric.index.client import make_client
from es_metric.index.indices import create_versioned_index
from es_metric.model.modelfile import read_card
from es_metric.web.app import create_app

sys.path.insert(0, str(ROOT.parent))
from tests.integration.server import Tap, multipart_head, running, stream_upload  # noqa: E402  (the tests' server, not a copy)


def big_png(side: int) -> bytes:
    y, x = np.mgrid[0:side, 0:side]
    arr = np.stack([x * 255 // side, y * 255 // side, (x ^ y) & 255], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def load(http: httpx.Client, path: str, png: bytes, n: int) -> dict:
    """n uploads at once; health asked every 50 ms while they run."""
    def upload(_):
        r = http.post(path, files={"image": ("big.png", png, "image/png")}, data={"k": "5"})
        assert r.status_code == 200, r.text
    health, running_ = [], threading.Event()
    running_.set()

    def poll():
        while running_.is_set():
            health.append(timed(lambda: http.get("/api/health")))
            time.sleep(0.05)
    poller = threading.Thread(target=poll)
    poller.start()
    with ThreadPoolExecutor(n) as pool:
        wall = timed(lambda: list(pool.map(upload, range(n))))
    running_.clear()
    poller.join()
    return {"wall_s": round(wall, 3), "health_ms_median": round(statistics.median(health) * 1000, 1),
            "health_ms_max": round(max(health) * 1000, 1), "health_samples": len(health)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbone", default="mobilenet_v3_large")
    ap.add_argument("--uploads", type=int, default=8)
    ap.add_argument("--side", type=int, default=3000)
    args = ap.parse_args()
    settings = Settings.from_env()
    model = bench_model(args.backbone, 128, ROOT / "results" / f"bench-{args.backbone}.pt")
    es = make_client(settings)
    alias = "bench-api-load"
    es.options(ignore_status=404).indices.delete(index=f"{alias}*", expand_wildcards="all")
    create_versioned_index(es, alias, read_card(model), str(model))
    png = big_png(args.side)
    tap = Tap(create_app(settings.with_(max_upload_bytes=len(png) + 1, api_key="bench")))
    path, keyed = f"/api/indices/{alias}/search", {"X-API-Key": "bench"}
    try:
        with running(tap) as base, httpx.Client(base_url=base, timeout=600, headers=keyed) as http:
            http.post(path, files={"image": ("big.png", png, "image/png")})  # load the model once
            idle = [timed(lambda: http.get("/api/health")) for _ in range(20)]
            alone = [timed(lambda: http.post(path, files={"image": ("b.png", png, "image/png")}))
                     for _ in range(3)]
            under_load = load(http, path, png, args.uploads)
            tap.read = 0
            head, form = multipart_head("benchboundary")
            start = time.perf_counter()
            answer = stream_upload(base, path, head, 200 * 1024 * 1024, headers=form, chunked=False)
            refusal = {"status": answer.status, "seconds": round(time.perf_counter() - start, 3),
                       "bytes_client_sent": answer.sent, "bytes_app_read": tap.read}
    finally:
        es.options(ignore_status=404).indices.delete(index=f"{alias}*", expand_wildcards="all")
    one = statistics.median(alone)
    result = {"backbone": args.backbone, "image": f"{args.side}x{args.side} PNG, {len(png)} bytes",
              "cores": os.cpu_count(), "uploads": args.uploads,
              "health_idle_ms_median": round(statistics.median(idle) * 1000, 1),
              "one_upload_s": round(one, 3), **under_load,
              "ceiling_wall_s": round(args.uploads * one / (os.cpu_count() or 1), 3),
              "serial_wall_s": round(args.uploads * one, 3),
              "unauthenticated_200MB_upload": refusal}
    print(result)
    print("wrote", write_result("api_load", result))


if __name__ == "__main__":
    main()
