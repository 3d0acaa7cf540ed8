"""es-metric's partial updates against a shop's own writers: how many of them Elasticsearch
refuses with 409 (version_conflict_engine_exception) without and with ``retry_on_conflict``.

A throwaway index of --docs documents; --writers threads update a field of each (the shop's
stock counts) as fast as they can, while the bench sends --rounds bulk requests of partial
updates of every document, built as the worker builds them (``docfields.document_action``,
which sets ``retry_on_conflict``) and the same without it (the worker before). Each mode runs
under the same writers, one after the other.

Usage: python bench/update_conflicts.py [--docs 2] [--writers 3] [--rounds 300]
Needs Elasticsearch (``esm stack up``; this shell's ESM_* settings). Writes
bench/results/update_conflicts.json.
"""
from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from pathlib import Path

from elasticsearch import ConflictError
from elasticsearch.helpers import streaming_bulk

from es_metric.config import Settings
from es_metric.index.client import make_client
from es_metric.index.docfields import RETRY_ON_CONFLICT, document_action


def run(settings: Settings, docs: int, writers: int, rounds: int, retry: bool) -> dict:
    es = make_client(settings)
    index = f"bench-conflicts-{uuid.uuid4().hex[:8]}"
    es.indices.create(index=index, settings={"number_of_replicas": 0})
    ids = [f"d{i}" for i in range(docs)]
    for i in ids:
        es.index(index=index, id=i, document={"title": i})
    es.indices.refresh(index=index)
    stop, shop = threading.Event(), {"written": 0, "conflicts": 0}
    lock = threading.Lock()

    def writer(w: int) -> None:
        client, n = make_client(settings), 0
        while not stop.is_set():
            n += 1
            for i in ids:
                try:
                    client.update(index=index, id=i, doc={f"stock_{w}": n})
                    key = "written"
                except ConflictError:
                    key = "conflicts"
                with lock:
                    shop[key] += 1
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    ok = refused = 0
    start = time.perf_counter()
    try:
        for r in range(rounds):
            actions = [document_action(index, i, {"vector_of_round": r}, None) for i in ids]
            if not retry:
                for a in actions:
                    a.pop("retry_on_conflict")
            for good, _ in streaming_bulk(es, actions, raise_on_error=False):
                ok, refused = ok + good, refused + (not good)
    finally:
        stop.set()
        for t in threads:
            t.join()
        es.indices.delete(index=index)
    return {"retry_on_conflict": RETRY_ON_CONFLICT if retry else 0, "updates": ok + refused,
            "refused_409": refused, "seconds": round(time.perf_counter() - start, 1),
            "shop_writes": shop["written"], "shop_conflicts": shop["conflicts"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=2)
    ap.add_argument("--writers", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=300)
    args = ap.parse_args()
    settings = Settings.from_env()
    rows = [run(settings, args.docs, args.writers, args.rounds, retry) for retry in (False, True)]
    for row in rows:
        print(f"retry_on_conflict {row['retry_on_conflict']}: {row['refused_409']} of {row['updates']} "
              f"es-metric updates refused with 409 ({row['seconds']} s; the shop's writers: "
              f"{row['shop_writes']} writes, {row['shop_conflicts']} of their own 409s)")
    out = Path(__file__).parent / "results" / "update_conflicts.json"
    out.write_text(json.dumps({"docs": args.docs, "writers": args.writers, "rounds": args.rounds,
                               "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
