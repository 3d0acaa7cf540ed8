"""Play a shop that already runs Elasticsearch, and add visual search beside it.

The shop loads examples/grocery-mini/products.jsonl into its own plain index (its mapping, no
es-metric field) and serves the photos over HTTP. Then, as an operator would:

    esm mapping create INDEX --model MODEL --existing
    esm ingest INDEX --from-index --image-field photo --base-dir FOLDER --follow

and while the follower runs the shop adds new products and changes a photo; the script waits
until they are searchable (printing how long it took) and searches by photo + text + filter.

    python scripts/shop_demo.py --model runs/demo/model.pt            # after `make demo`
    python scripts/shop_demo.py --model M --photos url                # photo = http URL (needs
                                                                      # URL ingest + ESM_URL_ALLOW)
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from es_metric.config import Settings
from es_metric.index.client import make_client
from es_metric.index.indices import index_info

CATALOGUE = Path(__file__).resolve().parents[1] / "examples" / "grocery-mini"
SHOP_MAPPING = {"properties": {"sku": {"type": "keyword"}, "title": {"type": "text"},
                               "description": {"type": "text"}, "category": {"type": "keyword"},
                               "kind": {"type": "keyword"}, "price": {"type": "float"},
                               "photo": {"type": "keyword"}}}


def esm(*args: str, check: bool = True) -> str:
    """Run the CLI as an operator would, showing the command."""
    print("$ esm " + " ".join(args), flush=True)
    out = subprocess.run([sys.executable, "-m", "es_metric.cli", *args], capture_output=True,
                         text=True, check=False)
    if check and out.returncode:
        raise SystemExit(f"esm {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def serve_photos(folder: Path) -> tuple[ThreadingHTTPServer, str]:
    """The shop's photo server (loopback, a free port)."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def product_doc(row: dict, photo_ref: str) -> dict:
    return {k: row[k] for k in ("sku", "title", "description", "category", "kind", "price")} | {
        "photo": photo_ref}


def wait_for(pred, timeout: float = 120.0, step: float = 0.2) -> float:
    """Seconds until ``pred()`` holds (SystemExit after ``timeout``)."""
    began = time.monotonic()
    while not pred():
        if time.monotonic() - began > timeout:
            raise SystemExit("timed out: is the worker running? (`esm stack status`)")
        time.sleep(step)
    return time.monotonic() - began


def searchable(es, index: str, doc_id: str, photo_ref: str) -> bool:
    """Is the document embedded from ``photo_ref`` (es-metric's fields: where the index says)?"""
    fields = index_info(es, index).fields
    es.indices.refresh(index=index)
    doc = es.options(ignore_status=404).get(index=index, id=doc_id, source_includes=[fields.image_ref])
    return doc.get("found", False) and fields.read(doc["_source"], fields.image_ref) == photo_ref


def run(model: str, index: str, n_start: int, n_new: int, photos: str = "path",
        keep: bool = False) -> dict:
    """The demo; returns what happened (the test checks it)."""
    rows = [json.loads(line) for line in (CATALOGUE / "products.jsonl").read_text().splitlines()]
    rows = rows[:n_start + n_new]
    es = make_client(Settings.from_env())
    server, base_url = serve_photos(CATALOGUE)
    ref = (lambda p: f"{base_url}/{p}") if photos == "url" else (lambda p: p)
    es.options(ignore_status=404).indices.delete(index=index)
    es.indices.create(index=index, mappings=SHOP_MAPPING)
    for row in rows[:n_start]:
        es.index(index=index, id=row["sku"], document=product_doc(row, ref(row["photos"][0])))
    es.indices.refresh(index=index)
    print(f"the shop: {n_start} products in its own index {index!r}; photos at {base_url}")

    esm("mapping", "create", index, "--model", model, "--existing")
    follower = subprocess.Popen([sys.executable, "-m", "es_metric.cli", "ingest", index,
                                 "--from-index", "--image-field", "photo", "--base-dir",
                                 str(CATALOGUE), "--follow", "--poll", "1"])
    print(f"$ esm ingest {index} --from-index --image-field photo --base-dir {CATALOGUE} --follow")
    summary: dict = {"index": index}
    try:
        first = rows[:n_start]
        summary["initial_s"] = round(wait_for(lambda: all(
            searchable(es, index, r["sku"], ref(r["photos"][0])) for r in first)), 1)
        lags = []
        for row in rows[n_start:]:  # new products, while the follower runs
            es.index(index=index, id=row["sku"], document=product_doc(row, ref(row["photos"][0])))
            lags.append(wait_for(lambda r=row: searchable(es, index, r["sku"], ref(r["photos"][0]))))
        changed = rows[0]  # the shop takes a new photo of its first product
        es.update(index=index, id=changed["sku"], doc={"photo": ref(changed["photos"][1])})
        lags.append(wait_for(lambda: searchable(es, index, changed["sku"], ref(changed["photos"][1]))))
        summary["lags_s"] = [round(x, 2) for x in lags]
        print(f"new and changed products searchable after {summary['lags_s']} s")
        summary["status"] = json.loads(esm("status", index, "--json"))
        summary["searches"] = searches(index, rows)
    finally:
        follower.send_signal(signal.SIGTERM)
        follower.wait(30)
        server.shutdown()
        if not keep:
            es.options(ignore_status=404).indices.delete(index=index)
    return summary


def searches(index: str, rows: list[dict]) -> list[dict]:
    """By an unseen photo of a product; by photo + text; by photo + text + category filter."""
    query_row = rows[-1]
    photo = str(CATALOGUE / query_row["photos"][2])
    asks = [["--image", photo], ["--image", photo, "--text", query_row["kind"]],
            ["--image", photo, "--text", query_row["kind"], "--filter", f"category={query_row['category']}"]]
    out = []
    for extra in asks:
        res = json.loads(esm("search", index, *extra, "-k", "3", "--json"))
        top = [(h["id"], h["source"]["category"], h["source"]["price"]) for h in res["hits"]]
        print(f"  {' '.join(extra[2:]) or 'photo only':<40} -> {top}")
        out.append({"args": extra, "hits": res["hits"]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model file (e.g. runs/demo/model.pt)")
    ap.add_argument("--index", default="shop-demo")
    ap.add_argument("--start", type=int, default=11, help="products in the shop at the start")
    ap.add_argument("--new", type=int, default=3, help="products added while the follower runs")
    ap.add_argument("--photos", choices=["path", "url"], default="path",
                    help="what the shop's photo field holds: a path under the catalogue, or an "
                         "http URL served by the shop (needs URL ingest and ESM_URL_ALLOW)")
    ap.add_argument("--keep", action="store_true", help="keep the index afterwards")
    args = ap.parse_args()
    if shutil.which("esm") is None and "PYTHONPATH" not in os.environ:
        print("note: run from the repository with the venv active", file=sys.stderr)
    run(args.model, args.index, args.start, args.new, args.photos, args.keep)


if __name__ == "__main__":
    main()
