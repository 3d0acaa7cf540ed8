"""A page to review near-duplicate clusters (``esm duplicates --report OUT.html``): one grid of
thumbnails per cluster, embedded in the file (it opens offline and needs no server).

Every image reference comes from the index, so it is data: a path is read only under the image
roots (the configured ones and those recorded for the index); an http(s) URL is not fetched
here but left to the reviewer's browser (as the image endpoint of ``esm serve`` redirects to
it); every id, title, URL and reason is escaped.
"""
from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch

from ..config import Settings
from ..errors import EsmError
from ..images import DecodeLimits, load_image
from ..index.indices import IndexInfo
from ..paths import as_roots, confine
from ..urlguard import is_url

__all__ = ["review_page"]

log = logging.getLogger(__name__)
THUMB = 160
STYLE = ("body{font-family:sans-serif;margin:1.5em}section{border-top:1px solid #ccc;padding:.5em 0}"
         ".grid{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;width:170px;font-size:12px;"
         "word-break:break-all}img{max-width:160px;max-height:160px;display:block}"
         ".missing{width:160px;height:60px;background:#eee;color:#a00;padding:4px}")


def image_ref(info: IndexInfo, source: dict[str, Any]) -> str | None:
    """The image a document shows: its image path, or its first photo's ref."""
    f = info.fields
    if f.photos:
        photos = f.read(source, f.photos) or []
        first = photos[0] if isinstance(photos, list) and photos else None
        ref = first.get("ref") if isinstance(first, dict) else None
    else:
        ref = f.read(source, f.image_path)
    return ref if isinstance(ref, str) else None


def thumbnail(ref: str | None, roots: tuple[Path, ...], limits: DecodeLimits) -> str:
    """The ``src`` of ``ref``'s thumbnail: a data: URI of a small JPEG of a file under the roots,
    or the URL itself; ValueError with the reason when it cannot be shown."""
    if ref is None:
        raise ValueError("no image recorded")
    if is_url(ref):
        return ref
    try:
        img, _ = load_image(confine(ref, Path("/"), roots), limits, draft=THUMB)
    except EsmError as exc:
        raise ValueError(exc.message) from None
    img.thumbnail((THUMB, THUMB))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _figure(doc_id: str, source: dict[str, Any] | None, info: IndexInfo, roots: tuple[Path, ...],
            limits: DecodeLimits) -> str:
    title = next((str(source.get(f)) for f in ("title", "name", "label") if source and source.get(f)), "")
    try:
        img = f'<img src="{html.escape(thumbnail(image_ref(info, source or {}), roots, limits))}" alt="">'
    except ValueError as exc:
        img = f'<div class="missing">{html.escape(str(exc)[:200])}</div>'
    return f"<figure>{img}<figcaption>{html.escape(doc_id)}<br>{html.escape(title[:80])}</figcaption></figure>"


def review_page(client: Elasticsearch, info: IndexInfo, result: dict[str, Any], settings: Settings,
                max_clusters: int = 300, per_cluster: int = 24) -> str:
    """The HTML page of ``result`` (find_duplicates'), the first ``max_clusters`` clusters with
    at most ``per_cluster`` thumbnails each."""
    roots = as_roots([*settings.image_roots, *info.image_roots])
    limits = DecodeLimits(settings.max_image_pixels, settings.max_image_bytes)
    fields = [f"{info.fields.photos}.ref"] if info.fields.photos else [info.fields.image_path]
    clusters = result["clusters"][:max_clusters]
    unit = "distance at most" if info.similarity == "l2_norm" else "similarity at least"
    parts = [f"<!doctype html><meta charset='utf-8'><title>Near-duplicates of {html.escape(info.name)}</title>"
             f"<style>{STYLE}</style><h1>Near-duplicates of {html.escape(info.name)}</h1>"
             f"<p>{len(result['clusters'])} clusters among {result['documents']} documents, links of "
             f"{unit} {result['threshold']:.4f} (model {html.escape(info.model_id)})"
             f"{'; the first ' + str(max_clusters) + ' shown' if len(result['clusters']) > max_clusters else ''}.</p>"]
    for n, cluster in enumerate(clusters, 1):
        ids = cluster["ids"][:per_cluster]
        docs = client.mget(index=info.concrete, ids=ids, source_includes=[*fields, "title", "name", "label"])
        sources = {d["_id"]: d.get("_source") for d in docs["docs"] if d.get("found")}
        figures = "".join(_figure(i, sources.get(i), info, roots, limits) for i in ids)
        more = f" (first {per_cluster} shown)" if len(cluster["ids"]) > per_cluster else ""
        parts.append(f"<section><h2>{n}. {len(cluster['ids'])} documents{more}, weakest link "
                     f"{cluster['similarity']:.4f}</h2><div class='grid'>{figures}</div></section>")
    return "\n".join(parts)
