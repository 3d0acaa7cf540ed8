"""Chaos soak: thousands of generated images ingested in waves while the local stack's worker,
Redis and Elasticsearch are killed and restarted at random moments for several minutes. At the
end every image must be indexed exactly once (documents == distinct images - failed, no
duplicate documents) or recorded as failed with a reason; the counts are printed as JSON.

Usage: python bench/soak.py [--images 4000] [--chaos-seconds 360] [--waves 12] [--seed 0] [--calm]
Needs the local stack (`esm stack up`): it kills only the processes the stack recorded
(<stack dir>/run/stack.json), by pid, and restarts them with the stack's own functions.
Writes bench/results/soak.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from pathlib import Path

from common import ROOT, bench_model, write_result
from es_metric.config import Settings
from es_metric.index.client import make_client
from tests.integration.chaos import run_soak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--chaos-seconds", type=float, default=360)
    ap.add_argument("--waves", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calm", action="store_true",
                    help="The same ingest in one wave without any kill: the time it takes undisturbed.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    settings = Settings.from_env()
    es = make_client(settings, request_timeout=60, max_retries=10, retry_on_timeout=True)
    model = bench_model("small-cnn", 32, ROOT / "results" / "bench-small-cnn.pt")
    work = Path(tempfile.mkdtemp(prefix="esm-soak-"))
    try:
        result = run_soak(settings, es, model, work / "images", images=args.images,
                          chaos_seconds=0 if args.calm else args.chaos_seconds,
                          waves=1 if args.calm else args.waves, seed=args.seed,
                          batch=args.batch, alias="bench-soak")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["args"] = vars(args)
    print(json.dumps(result, indent=2))
    write_result("soak-calm" if args.calm else "soak", result)
    if not result["exactly_once"]:
        raise SystemExit("soak FAILED: not every image was indexed exactly once or failed with a reason")


if __name__ == "__main__":
    main()
