"""Replays of issue 24's attacks on the API and on model files, with the figures the issue asks
for: the size of a /metrics scrape after N requests with made-up methods (a real uvicorn
server), and the refusal of a model file whose weights.pt deflates ~1.5 MB to 1.5 GB: seconds
to refuse and the process's peak RSS (VmHWM), beside a process that only imports the same
modules (the ceiling: nothing can load a model without importing torch).

Usage: python bench/hostile.py [--methods 300] [--bomb-mb 1536]
Needs the stack for the server (Redis and Elasticsearch). Writes bench/results/hostile.json.
"""
from __future__ import annotations

import argparse
import os
import random
import string
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from common import write_result
from es_metric.config import Settings
from es_metric.web.app import create_app
from tests.badmodels import bomb_model
from tests.integration.server import running

PEAK = ("import re, time\nfrom es_metric.model.modelfile import load_model\n"
        "t = time.perf_counter()\n{body}\n"
        "print(time.perf_counter() - t, re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])")


def metrics_size(n: int) -> dict:
    rng = random.Random(24)
    key = {"X-API-Key": "k"}
    with running(create_app(Settings.from_env().with_(api_key="k"))) as base, \
            httpx.Client(base_url=base) as http:
        before = len(http.get("/metrics", headers=key).content)
        for i in range(n):
            method = "".join(rng.choices(string.ascii_uppercase, k=12))
            http.request(method, ["/api/health", "/no/such/page", "/metrics"][i % 3])
        return {"methods": n, "bytes_before": before, "bytes_after": len(http.get("/metrics", headers=key).content)}


def peak(body: str) -> tuple[float, int]:
    out = subprocess.run([sys.executable, "-c", PEAK.format(body=body)], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    secs, kb = out.stdout.split()[-2:]
    return float(secs), int(kb) // 1024


def bomb_refusal(megabytes: int) -> dict:
    from es_metric.model.encoder import create_encoder
    from es_metric.model.modelfile import build_card, save_model

    with tempfile.TemporaryDirectory() as tmp:
        enc = create_encoder("small-cnn", dim=32, pretrained=False)
        good = save_model(Path(tmp) / "good.pt", enc, build_card(enc, backbone="small-cnn", loss="triplet",
                                                                 training={}, data_fingerprint=None))
        bomb = bomb_model(good, Path(tmp) / "bomb.pt", megabytes)
        secs, mb = peak(f"try:\n    load_model({str(bomb)!r})\nexcept Exception as e:\n    print(e)")
        _s, import_mb = peak("pass")
        return {"file_bytes": bomb.stat().st_size, "inflates_to_mb": megabytes, "refused_s": round(secs, 4),
                "peak_rss_mb": mb, "import_only_peak_rss_mb": import_mb}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", type=int, default=300)
    ap.add_argument("--bomb-mb", type=int, default=1536)
    args = ap.parse_args()
    result = {"metrics": metrics_size(args.methods), "bomb": bomb_refusal(args.bomb_mb),
              "load_avg_1m": round(os.getloadavg()[0], 2)}
    print(result)
    write_result("hostile", result)


if __name__ == "__main__":
    main()
