"""What checking a training folder costs (es_metric.training.imagecheck), against its ceilings.

Rows: the check as train/evaluate/split run it (draft decode, thread pool) with a cold and a warm
cache; the same check on one thread; and a full-size decode of every file on the thread pool,
which is what a check without the JPEG draft would cost (the DataLoader's own first epoch).

Usage: python bench/imagecheck.py DATA_DIR      (e.g. the Grocery Store folder, 5,502 images)
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from es_metric.images import load_image
from es_metric.images import IMAGE_SUFFIXES
from es_metric.training.imagecheck import check_images


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", type=Path)
    args = ap.parse_args()
    paths = sorted(str(p) for p in args.data.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    workers = min(8, 2 * (os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "images.json"
        rows = [("check, cold cache", timed(lambda: check_images(paths, cache))),
                ("check, warm cache", timed(lambda: check_images(paths, cache))),
                ("check, cold, 1 thread", timed(lambda: check_images(paths, None, workers=1)))]
    with ThreadPoolExecutor(workers) as pool:
        rows.append(("full-size decode of every file", timed(lambda: list(pool.map(load_image, paths)))))
    print(f"{len(paths)} images, {os.cpu_count()} cores, {workers} threads")
    for name, secs in rows:
        print(f"{name:<32} {secs:7.2f} s  {len(paths) / secs:8.0f} images/s")


if __name__ == "__main__":
    main()
