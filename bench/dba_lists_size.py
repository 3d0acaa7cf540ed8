"""What the DBA markers' neighbour lists cost on disk: ``_source`` bytes per document with and
without a list of k = 10 ids (sha256 hex, as es-metric's image ids and bench/dba.py's are).

Copies the ``_source`` of N synthetic documents of bench/dba.py's kept index (markers without
lists: written by the build before the lists were kept) into two scratch indices, one as is and
one with a list of 10 ids of the same cluster per marker, force-merges each to one segment and
reads Elasticsearch's disk usage analysis of ``_source``; deletes both.

Usage: python bench/dba_lists_size.py [--n 50000] [--index bench-dba-1000000]
Writes bench/results/dba-lists-size.json.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import sys

from elasticsearch.helpers import bulk, scan

from common import ROOT, write_result
from dba import PER_CLUSTER, SYNTHETIC, synthetic_id
from es_metric.config import Settings
from es_metric.index.client import make_client


def source_bytes(es, name: str, sources: list[dict], lists: bool) -> float:
    """``_source`` bytes per document of ``sources`` written to a scratch index ``name``."""
    es.options(ignore_status=404).indices.delete(index=name)
    es.indices.create(index=name, mappings={"dynamic": False, "properties": {"image_path": {"type": "keyword"}}})
    try:
        def actions():
            for i, src in enumerate(sources):
                doc = copy.deepcopy(src)
                if lists:
                    first = i // PER_CLUSTER * PER_CLUSTER
                    doc["image_vector_dba"]["ids"] = [synthetic_id(first + (i * 7 + j) % PER_CLUSTER)
                                                      for j in range(1, 11)]
                yield {"_index": name, "_id": hashlib.sha256(f"copy-{i}".encode()).hexdigest(), "_source": doc}
        bulk(es, actions(), chunk_size=2000)
        es.indices.forcemerge(index=name, max_num_segments=1)
        usage = es.indices.disk_usage(index=name, run_expensive_tasks=True)[name]
        return usage["fields"]["_source"]["total_in_bytes"] / len(sources)
    finally:
        es.indices.delete(index=name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--index", default="bench-dba-1000000")
    args = ap.parse_args()
    es = make_client(Settings.from_env(), request_timeout=3600)
    sources = []
    for hit in scan(es, index=args.index, query={"query": {"prefix": {"image_path": SYNTHETIC}}}, size=5000):
        sources.append(hit["_source"])
        if len(sources) >= args.n:
            break
    plain = source_bytes(es, "t-dba-lists-size-plain", sources, lists=False)
    listed = source_bytes(es, "t-dba-lists-size-lists", sources, lists=True)
    result = {"documents": len(sources), "source_bytes_per_document_without_lists": round(plain, 1),
              "source_bytes_per_document_with_lists": round(listed, 1),
              "list_bytes_per_document": round(listed - plain, 1)}
    print(result)
    write_result("dba-lists-size", result)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
