"""The Python API for applications: queue documents' images for embedding, and search.

The application keeps writing its own documents; es-metric adds their vectors. ``enqueue``
sends the same Celery tasks as ``esm ingest`` and by default *updates* the named documents (the
vector fields only: every other field is left as the application wrote it). Settings come from
the same ``ESM_*`` environment as the CLI, or are passed in. Importing this module and
enqueueing loads neither torch nor the web stack; ``search`` loads the model (torch) on first use.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

from elasticsearch import Elasticsearch

from .config import Settings
from .errors import ConfigError
from .index.client import cluster_errors, make_client
from .index.docfields import FieldRefused, check_fields, check_id
from .index.fields import DocFields
from .index.indices import index_info
from .ingest.celery_app import TASK_NAME
from .ingest.enqueue import Job, enqueue, make_searchable, wait
from .ingest.sources import Source, checked_item
from .paths import as_roots

log = logging.getLogger(__name__)

MODES = ("update", "index")
__all__ = ["EsMetric", "Job", "TASK_NAME", "documents_source"]


def documents_source(documents: Iterable[Mapping[str, Any]], roots: tuple[Path, ...], mode: str,
                     layout: DocFields) -> Source:
    """Task items of ``{"id", "image": path | URL | [...], "fields": {...}}`` documents; a
    document that cannot be used is refused with its reason (a dead letter of the job), and
    on a multi-photo index a refused photo costs its document only that photo. ``layout``:
    the index's own fields (index/fields.py), which no user field may overwrite."""
    source = Source(roots=roots)
    for n, doc in enumerate(documents):
        where = f"document {n}"
        try:
            if not isinstance(doc, Mapping):
                raise FieldRefused("bad_document", f"{where} is not a mapping")
            doc_id = check_id(doc.get("id"))
            if mode == "update" and doc_id is None:
                raise FieldRefused("bad_id", f"{where}: mode 'update' needs the document's id")
            fields = check_fields(dict(doc.get("fields") or {}), layout)
            source.add(*checked_item(doc.get("image"), doc_id, fields, Path("/"), roots,
                                     multi=bool(layout.photos), where=where, label=where))
        except FieldRefused as exc:
            source.refused.append({"ref": where, "reason": exc.reason, "message": exc.message})
    return source


class EsMetric:
    """A connection to the cluster and the broker, with the CLI's settings.

    >>> with EsMetric() as esm:
    ...     job = esm.enqueue("products", {"id": "sku-1", "image": "https://cdn.example/sku-1.jpg"})
    """

    def __init__(self, settings: Settings | None = None, client: Elasticsearch | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.client = client or make_client(self.settings)

    def __enter__(self) -> "EsMetric":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def enqueue(self, index: str, documents: Mapping[str, Any] | Iterable[Mapping[str, Any]], *,
                mode: str = "update") -> Job:
        """Queue the images of one document or many for the workers; returns the job at once.

        A document is ``{"id": ..., "image": path | URL | [paths/URLs], "fields": {...}}``.
        ``mode="update"`` (default) adds the vectors to existing documents by id, leaving their
        other fields alone; ``mode="index"`` writes whole documents (``fields`` + vectors).
        Paths must lie under ``ESM_IMAGE_ROOTS`` or the folders recorded for the index."""
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, not {mode!r}")
        docs = [documents] if isinstance(documents, Mapping) else list(documents)
        with cluster_errors(self.settings):
            info = index_info(self.client, index)
            roots = as_roots([*self.settings.image_roots, *info.image_roots])
            source = documents_source(docs, roots, mode, info.fields)
            return enqueue(self.settings, self.client, index, source, mode=mode)

    def wait(self, job: Job, timeout: float | None = None, dba: bool = True) -> tuple[int, int]:
        """Block until the job ends; (indexed, failed). The documents are searchable then, and
        augmented (with the neighbourhoods they enter) when the index runs DBA after ingests
        (``dba=False``: later, with `esm dba INDEX`)."""
        from .search.dbaingest import IngestDba

        with cluster_errors(self.settings):  # DBA starts while the workers embed (search/dbaingest.py)
            along = IngestDba(self.client, job.target, job.started_at) if dba else None
        done, failed = wait(self.settings, job, timeout=timeout, on_progress=along.progress if along else None)
        with cluster_errors(self.settings):
            make_searchable(self.client, job)
            if along:
                along.finish()
        return done, failed

    def search(self, index: str, *, image: bytes | str | None = None,
               like: str | Iterable[str] | None = None,
               text: str | None = None, filters: Iterable[str] = (), k: int = 10, **options: Any) -> dict[str, Any]:
        """Search like ``esm search --json``: ``image`` is bytes, a file path or an http(s) URL;
        ``like`` a document id (or several); ``filters`` strings like ``"price<=20"``. ``options``: the other
        fields of ``SearchRequest`` (page, fusion, min_similarity, ``text_query=`` the shop's own query
        as a dict or JSON, ``collapse=``, ``diversify=``, ``explain=True``, ``facets=``, ``facet_size=``, ...)."""
        from .images import DecodeLimits
        from .ingest.fetch import read_ref
        from .model.runtime import Inference
        from .search.service import SearchRequest, run_search

        limits = DecodeLimits(self.settings.max_image_pixels, self.settings.max_image_bytes)
        data = read_ref(image, self.settings, limits) if isinstance(image, str) else image
        likes = [like] if isinstance(like, str) else list(like or [])
        req = SearchRequest(image=data, like=likes, text=text, filters=list(filters), k=k, **options)
        return run_search(self.client, index, req, limits, inference=Inference.of(self.settings))
