"""Reading the dead-letter records of images that could not be indexed."""
from __future__ import annotations

from elasticsearch import Elasticsearch


def list_failures(client: Elasticsearch, failures_index: str, index: str, size: int = 1000) -> list[dict]:
    if not client.indices.exists(index=failures_index):
        return []
    client.indices.refresh(index=failures_index)
    resp = client.search(index=failures_index, size=size, query={"term": {"index": index}},
                         sort=[{"at": "desc"}])
    return [h["_source"] for h in resp["hits"]["hits"]]
