"""Reading a whole index as a consistent snapshot: point-in-time + search_after (works on every
cluster, also one without the scroll-free ``_reindex`` module)."""
from __future__ import annotations

from typing import Iterator

from elasticsearch import Elasticsearch

__all__ = ["scroll_documents"]


def scroll_documents(client: Elasticsearch, index: str, excludes: list[str], *, source: bool = True,
                     page: int = 500) -> Iterator[dict]:
    """Every document of ``index`` via point-in-time + search_after (a consistent snapshot)."""
    pit = client.open_point_in_time(index=index, keep_alive="5m")["id"]
    try:
        after = None
        while True:
            kw = {"search_after": after} if after else {}
            if source:
                kw["source_excludes"] = excludes
            else:
                kw["source"] = False
            resp = client.search(pit={"id": pit, "keep_alive": "5m"}, size=page,
                                 sort=[{"_shard_doc": "asc"}], query={"match_all": {}}, **kw)
            hits = resp["hits"]["hits"]
            if not hits:
                return
            pit = resp.get("pit_id", pit)
            yield from hits
            after = hits[-1]["sort"]
    finally:
        client.close_point_in_time(id=pit)
