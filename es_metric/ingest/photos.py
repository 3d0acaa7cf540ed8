"""Several photos per document (pure): a task item's photos, and the bulk actions of an index
whose photos live in a ``nested`` field, one vector each.

An item is ``{"ref": first photo, "refs": [photos...], "id", "fields"}`` (``refs`` optional: one
photo). On a multi-photo index every photo of a document becomes one nested object
``{"ref", "sha256", "vector"}``; the document is indexed when at least one photo could be
embedded (the others are dead letters with the document's id), and fails only when none could.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..index.docfields import FieldRefused, document_action
from ..index.failures import failure_for, now
from ..index.fields import DocFields
from ..index.gallery import MAX_PHOTOS
from ..index.imageref import ref_token
from ..types import Failure, ImageItem, JobSpec

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

LEAF = "_leaf_vectors"  # a pending leaf update's vectors by photo ref (never sent as such)


class PhotoItem(ImageItem, total=False):
    """One photo of a task item, to decode and embed: ``doc`` is its item's position."""

    doc: int


def item_refs(item: ImageItem) -> list[str]:
    """The photos of a task item (``refs``, else ``[ref]``); FieldRefused when unusable."""
    refs = item.get("refs")
    if refs is None:
        return [item["ref"]]
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r for r in refs):
        raise FieldRefused("bad_item", "task item 'refs' must be a non-empty list of image paths/URLs")
    if len(refs) > MAX_PHOTOS:
        raise FieldRefused("too_many_photos", f"{len(refs)} photos in one document; at most {MAX_PHOTOS}")
    return list(dict.fromkeys(refs))


def expand(items: list[ImageItem], multi: bool) -> tuple[list[ImageItem], list[PhotoItem], list[Failure]]:
    """(the items kept, one photo item per photo tagged with its item's position in the kept
    list, failure records of the items refused). A list of photos needs a multi-photo index."""
    kept: list[ImageItem] = []
    photos: list[PhotoItem] = []
    failures: list[Failure] = []
    for item in items:
        try:
            refs = item_refs(item)
            if len(refs) > 1 and not multi:
                raise FieldRefused("several_photos", f"{len(refs)} photos for one document, but the "
                                   "index holds one vector per document (create it with --multi-photo)")
        except FieldRefused as exc:
            failures.append(failure_for(item, exc.reason, exc.message))
            continue
        for r in refs:
            photo: PhotoItem = {"ref": r, "id": item.get("id"), "fields": item.get("fields") or {}, "doc": len(kept)}
            if "source_ref" in item:
                photo["source_ref"] = item["source_ref"]
            photos.append(photo)
        kept.append(item)
    return kept, photos, failures


def stored_ref(item: ImageItem) -> str | list[str] | None:
    """What --from-index read from the image field (a path/URL or a list of them), as
    ``image_ref`` stores it beside the vectors so a follower can tell a changed image (a value
    over 8 KiB by its digest: index/imageref.py); None for an item of another source."""
    return ref_token(item["source_ref"]) if "source_ref" in item else None


def gallery_actions(job: JobSpec, items: list[ImageItem], good: list[tuple[PhotoItem, str]], vectors: np.ndarray,
                    photo_failures: list[Failure]) -> tuple[list[dict], dict[str, list[ImageItem]], list[Failure]]:
    """(bulk actions, the items behind each document id, failure records of items none of
    whose photos could be embedded). Photos are kept in the item's order."""
    fields = DocFields.of_record(job)
    leaf = fields.layout.leaf
    by_doc: dict[int, list[tuple[PhotoItem, str, np.ndarray]]] = {}
    for (photo, sha), vec in zip(good, vectors):
        by_doc.setdefault(photo["doc"], []).append((photo, sha, vec))
    failed_refs = {f["ref"]: f for f in photo_failures}
    actions: dict[str, dict] = {}
    owners: dict[str, list[ImageItem]] = {}
    item_failures: list[Failure] = []
    stamp = now()
    for n, item in enumerate(items):
        done = by_doc.get(n)
        if not done:
            first = next((failed_refs[r] for r in _refs(item) if r in failed_refs), None)
            item_failures.append(failure_for(item, first["reason"] if first else "no_photo",
                                             first["message"] if first else "no photo was embedded"))
            continue
        doc_id = item.get("id") or done[0][1]
        if job.get("vector_only"):  # a second model's leaf in the photos, the first's untouched
            actions[doc_id] = leaf_update(job, fields, doc_id, done)
            owners.setdefault(doc_id, []).append(item)
            continue
        doc: dict[str, Any] = {
            str(fields.photos): [{"ref": p["ref"], "sha256": sha, leaf: v.astype(float).round(7).tolist()}
                                 for p, sha, v in done],
            fields.image_path: done[0][0]["ref"], fields.image_sha256: done[0][1],
            fields.model_id: job["model_id"], fields.indexed_at: stamp}
        ref = stored_ref(item)
        if ref is not None:
            doc[fields.image_ref] = ref
        actions[doc_id] = document_action(job["index"], doc_id, fields.doc(doc),
                                          None if job.get("mode") == "update" else item.get("fields") or {})
        owners.setdefault(doc_id, []).append(item)
    return list(actions.values()), owners, item_failures


def leaf_update(job: JobSpec, fields: DocFields, doc_id: str,
                done: list[tuple[PhotoItem, str, np.ndarray]]) -> dict:
    """The update of a model change in place, pending the document's photos: the job's model's
    vector for each photo embedded (by its ref), to merge as one more leaf (``read_leaves``)."""
    return {"_op_type": "update", "_index": job["index"], "_id": doc_id,
            LEAF: {p["ref"]: v.astype(float).round(7).tolist() for p, _, v in done}}


def leaf_action(index: str, fields: DocFields, hit: dict, vectors: dict[str, list[float]] | None,
                stamp: dict | None = None) -> dict | None:
    """An update writing the photos of ``hit`` (read with its ``_seq_no``/``_primary_term``)
    back with ``fields``' vector merged in (``vectors`` None: removed, layout.py), plus
    ``stamp`` ({dotted path: value}); only if the document did not change since it was read.
    None when nothing changes."""
    photos = fields.layout.merged_photos(hit.get("_source"), vectors)
    if photos is None and not stamp:
        return None
    doc = {**({fields.photos: photos} if photos is not None else {}), **(stamp or {})}
    return {"_op_type": "update", "_index": index, "_id": hit["_id"], "if_seq_no": hit["_seq_no"],
            "if_primary_term": hit["_primary_term"], "doc": fields.doc(doc)}


def read_leaves(client: Elasticsearch, job: JobSpec, actions: list[dict]) -> list[dict]:
    """Pending leaf updates (``leaf_update``) made real: each document's photos read now and
    written back with the vectors merged in, guarded by its sequence number (a writer that
    changed it meanwhile wins; this image is then a failure, embedded again on the next pass)."""
    pending = {a["_id"]: a for a in actions if LEAF in a}
    if not pending:
        return actions
    fields = DocFields.of_record(job)
    docs = client.mget(index=job["index"], ids=list(pending), source=[str(fields.photos)])["docs"]
    found = {d["_id"]: d for d in docs if d.get("found")}
    out = [a for a in actions if LEAF not in a]
    for doc_id, action in pending.items():
        hit = found.get(doc_id)
        real = leaf_action(job["index"], fields, hit, action[LEAF]) if hit else None
        out.append(real or {"_op_type": "update", "_index": job["index"], "_id": doc_id,
                            "doc": {}})  # gone: a document_missing failure; unchanged: a no-op
    return out


def _refs(item: ImageItem) -> Sequence[str | None]:
    try:
        return item_refs(item)
    except FieldRefused:
        return [item.get("ref")]
