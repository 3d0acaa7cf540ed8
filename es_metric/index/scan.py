"""Every document of an index, page by page: point-in-time + search_after (a consistent
snapshot; works on any cluster, unlike scroll-free shortcuts), for passes over a whole index."""
from __future__ import annotations

from typing import Any, Iterator

from elasticsearch import Elasticsearch

__all__ = ["pit_hits", "scroll_documents"]

KEEP_ALIVE = "5m"


def pit_hits(client: Elasticsearch, index: str, *, page: int = 500,
             **search: Any) -> Iterator[dict[str, Any]]:
    """Every hit of ``index`` in ``_shard_doc`` order, ``page`` at a time; ``search``: more
    arguments of each search (source, docvalue_fields, query, ...). The point in time is
    closed when the iteration ends or is abandoned."""
    pit = client.open_point_in_time(index=index, keep_alive=KEEP_ALIVE)["id"]
    try:
        after: list[Any] | None = None
        while True:
            kw: dict[str, Any] = {"search_after": after} if after else {}
            resp = client.search(pit={"id": pit, "keep_alive": KEEP_ALIVE}, size=page,
                                 sort=[{"_shard_doc": "asc"}], **search, **kw)
            hits = resp["hits"]["hits"]
            if not hits:
                return
            pit = resp.get("pit_id", pit)
            yield from hits
            after = hits[-1]["sort"]
    finally:
        client.close_point_in_time(id=pit)


def scroll_documents(client: Elasticsearch, index: str, excludes: list[str], *, source: bool = True,
                     page: int = 500) -> Iterator[dict[str, Any]]:
    """Every document of ``index`` (its ``_source`` without ``excludes``, or none)."""
    kw: dict[str, Any] = {"source_excludes": excludes} if source else {"source": False}
    return pit_hits(client, index, page=page, query={"match_all": {}}, **kw)
