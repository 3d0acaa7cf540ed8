"""The photos of an index es-metric ingested, as a catalogue to train on (``--from-index``).

A multi-photo index holds a product per document (its photos' references in the nested photos
field); a one-vector index holds a photo per document, and ``product_field`` groups documents
into products (default: each document is a product, trained from augmented views). What a
document names is data: paths are confined to the roots recorded for the index (plus
``ESM_IMAGE_ROOTS``), URLs are fetched under the workers' guard later, the group is read as a
plain value, and a document that names nothing usable is refused with its id.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..config import Settings
from ..errors import ImageError, PathRefused
from ..index.client import cluster_errors, make_client
from ..index.indices import IndexInfo, index_info
from ..index.scan import scroll_documents
from ..paths import as_roots, confine
from ..urlguard import is_url, parse_url
from .products import AUTO_GROUP_FIELDS, Product, dotted, group_value, pick_group_field

__all__ = ["index_products", "photo_refs"]

def photo_refs(source: dict, info: IndexInfo) -> list[str]:
    """The photos a document names (strings only): its nested photos' ``ref``, or the image
    path recorded beside its vector (the index record says where: index/fields.py)."""
    f = info.fields
    if f.photos:
        photos = f.read(source, f.photos)
        values = [p.get("ref") for p in photos if isinstance(p, dict)] if isinstance(photos, list) else []
    else:
        value = f.read(source, f.image_path)
        values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, str) and v]


def _checked(refs: list[str], roots: tuple[Path, ...]) -> list[str]:
    out = []
    for ref in refs:
        out.append(parse_url(ref).url if is_url(ref) else str(confine(ref, Path("/"), roots)))
    return out


def index_products(name: str, settings: Settings, group_field: str | None,
                   product_field: str | None) -> tuple[list[Product], list[dict], str | None]:
    """(products, refused documents, the group field used) of index ``name``."""
    with cluster_errors(settings):
        client = make_client(settings)
        info = index_info(client, name)
        roots = as_roots([*settings.image_roots, *info.image_roots])
        return _read(client, info, roots, group_field, product_field)


def _read(client, info: IndexInfo, roots: tuple[Path, ...], group_field: str | None,
          product_field: str | None) -> tuple[list[Product], list[dict], str | None]:
    found: list[tuple[str, list[str], dict]] = []
    refused: list[dict] = []
    for doc_id, source in _documents(client, info):
        try:
            refs = _checked(photo_refs(source, info), roots)
        except (PathRefused, ImageError) as exc:
            refused.append({"path": f"{info.name}/{doc_id}", "reason": getattr(exc, "reason", "path_refused"),
                            "message": str(exc)})
            continue
        if not refs:
            refused.append({"path": f"{info.name}/{doc_id}", "reason": "no_image_path",
                            "message": f"document {doc_id!r} names no photo"})
            continue
        key = group_value(dotted(source, product_field)) if product_field else None
        found.append((key or str(doc_id), refs, _candidates(source, group_field)))
    chosen = pick_group_field([c for _, _, c in found], group_field)
    products: dict[str, Product] = {}
    for pid, refs, cand in found:
        old = products.get(pid)
        group = group_value(dotted(cand, chosen)) if chosen else None
        products[pid] = Product(pid, (old.photos if old else ()) + tuple(refs), (old.group if old else None) or group)
    return list(products.values()), refused, chosen


def _candidates(source: dict, group_field: str | None) -> dict:
    """The values a group may come from (the asked field, or the auto candidates)."""
    names = AUTO_GROUP_FIELDS if group_field == "auto" else (group_field,) if group_field else ()
    return {n: dotted(source, n) for n in names if n and n != "none"}


def _documents(client, info: IndexInfo) -> Iterator[tuple[str, dict]]:
    f = info.fields
    for hit in scroll_documents(client, info.concrete, [f.vector, f.raw_vector]):
        yield hit["_id"], hit.get("_source") or {}
