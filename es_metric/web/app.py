"""The HTTP API: search by upload, by document id, by text, with filters; serves the web page.

``ESM_API_KEY`` turns on an ``X-API-Key`` check, made before any body is read; bodies are
limited while they stream in (guard.py). Uploads are sniffed (the bytes decide the format,
never the name or the Content-Type). Both search routes take the parameters SEARCH_PARAMS
declares once. Searches run in worker threads, a bounded number at a time, so the event loop
keeps answering. Every error is JSON with an ``error`` field (errors.py).
List parameters default to ``[]``, not ``default_factory=list``: pydantic would introspect
``list`` (~0.13 ms) on the event loop for each one a request leaves out (FastAPI copies it).
"""
from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Annotated, Any, Callable, NamedTuple

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..config import Settings
from ..errors import ImageError, PathRefused
from ..images import DecodeLimits, regular_file
from ..index.client import make_client
from ..index.indices import IndexInfo, index_info
from ..ingest.fetch import fetch_query_url
from ..paths import as_roots, confine
from ..model.runtime import Inference
from ..search.facets import MAX_FACET_SIZE, TERMS_SIZE
from ..search.fusion import DEFAULT_FUSION, DEFAULT_IMAGE_WEIGHT, DEFAULT_TEXT_WEIGHT, FUSIONS
from ..search.gallery import document_image
from ..search.queries import MAX_NUM_CANDIDATES, MAX_QE_K
from ..search.service import SearchRequest, run_search
from ..urlguard import is_url
from . import errors
from .guard import FORM_ALLOWANCE, RequestGuard, SearchSlots, key_matches
from .metrics import metrics_registry
from .photos import HEADERS as PHOTO_HEADERS, PhotoCache, fetch_photo

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
FUSION_HELP = f"one of: {', '.join(FUSIONS)}"  # a str: SearchRequest refuses the others (check_request)
MIN_SIM_HELP = "similarity floor (cosine; L2 distance for l2_norm models), or auto: the model card's cut-off"
TEXT_QUERY_HELP = 'the shop\'s own query as JSON, e.g. {"match": {"name": "{{text}}"}}; filters still apply'
TEXT_FIELDS_HELP = "match text on these text fields of the index, unweighted (default: all, names x3)"
DIVERSIFY_HELP = "MMR lambda: 1 ranks by relevance alone, lower values add variety"
QE_HELP = "query expansion: blend the first round's top N vectors into the query (0: off; default: the model's)"


class Param(NamedTuple):
    """A search parameter of both routes: GET reads it from the query string, POST from its form."""
    name: str                  # the SearchRequest field
    type: Any
    default: Any
    rules: dict[str, Any] = {}  # bounds (ge, le) and description
    get: str | None = None     # GET's name when it differs: one filter or facet per query parameter


# Each a SearchRequest field, bounded as SearchRequest bounds it (check_request checks again);
# tests/unit/test_search_surfaces.py holds these, the CLI and the Python API to SearchRequest.
SEARCH_PARAMS = (
    Param("like", list[str], [], {"description": "document ids: more like these (repeatable)"}),
    Param("unlike", list[str], [], {"description": "document ids: less like these (repeatable)"}),
    Param("examples", str, "mean", {"description": "mean or max"}),
    Param("text", str | None, None),
    Param("text_fields", list[str], [], {"description": TEXT_FIELDS_HELP}),
    Param("text_query", str | None, None, {"description": TEXT_QUERY_HELP}),
    Param("filters", list[str], [], get="filter"),
    Param("facets", list[str], [], get="facet"),
    Param("facet_size", int, TERMS_SIZE, {"ge": 1, "le": MAX_FACET_SIZE}),
    Param("k", int, 10, {"ge": 1, "le": 200}),
    Param("page", int, 1, {"ge": 1, "le": 100}),
    Param("num_candidates", int | None, None, {"ge": 1, "le": MAX_NUM_CANDIDATES,
                                               "description": "kNN candidates per shard"}),
    Param("fusion", str, DEFAULT_FUSION, {"description": FUSION_HELP}),
    Param("image_weight", float, DEFAULT_IMAGE_WEIGHT, {"ge": 0}),
    Param("text_weight", float, DEFAULT_TEXT_WEIGHT, {"ge": 0}),
    Param("min_similarity", str | None, None, {"description": MIN_SIM_HELP}),
    Param("near_duplicates", bool, False, {"description": "only near-duplicates (the calibrated threshold)"}),
    Param("qe_k", int | None, None, {"ge": 0, "le": MAX_QE_K, "description": QE_HELP}),
    Param("collapse", str | None, None, {"description": "one hit per value of this field"}),
    Param("diversify", float | None, None, {"ge": 0, "le": 1, "description": DIVERSIFY_HELP}),
    Param("explain", bool, False),
)


def search_params(source: Callable[..., Any]) -> Callable[..., dict[str, Any]]:
    """A dependency that takes SEARCH_PARAMS with ``source`` (``Query`` or ``Form``) and answers
    them as SearchRequest keyword arguments, empty values as not given (a form's blank field)."""
    def collect(**given: Any) -> dict[str, Any]:
        return {p.name: cleaned(p, given[p.name]) for p in SEARCH_PARAMS}

    collect.__signature__ = inspect.Signature([  # type: ignore[attr-defined]  # what FastAPI reads
        inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, annotation=p.type,
                          default=source(p.default, alias=p.get if source is Query else None, **p.rules))
        for p in SEARCH_PARAMS])
    return collect


def cleaned(p: Param, value: Any) -> Any:
    """Empty values as not given: blank list items dropped, a blank optional string None."""
    if isinstance(p.default, list):
        return [v for v in value if v]
    return None if value == "" and p.default is None else value


async def read_limited(upload: UploadFile, limit: int) -> bytes:
    """Read at most ``limit`` bytes; a larger upload is refused with 413."""
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"upload is over the {limit}-byte limit")
    if not data:
        raise HTTPException(422, "empty upload")
    return data


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    app = FastAPI(title="es-metric", version="0.1.0",
                  description="Visual similarity search on Elasticsearch: by image, by document, "
                              "by text, with filters.")
    app.add_middleware(RequestGuard, api_key=settings.api_key,
                       max_body=settings.max_upload_bytes + FORM_ALLOWANCE)
    registry = metrics_registry(app, settings)
    errors.install(app)
    client = make_client(settings)
    limits = DecodeLimits(settings.max_image_pixels, settings.max_image_bytes)
    slots = SearchSlots(settings.search_concurrency, settings.search_queue)
    inference = Inference.of(settings)

    def check_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        """Also declared per route (OpenAPI shows the header); RequestGuard checks it first."""
        if not key_matches(settings.api_key, x_api_key):
            raise HTTPException(401, "missing or wrong X-API-Key")

    photos = PhotoCache()

    def fetched_then_searched(index: str, req: SearchRequest, image_url: str | None) -> dict:
        if image_url:  # in the search's slot: a hanging image host holds a slot, not the server
            req.image = fetch_query_url(image_url, settings, limits)
        return run_search(client, index, req, limits, "", inference)

    async def run(index: str, req: SearchRequest, image_url: str | None = None) -> dict:
        return await slots.run(fetched_then_searched, index, req, image_url)

    @app.post("/api/indices/{index}/search", dependencies=[Depends(check_key)])
    async def search_upload(index: str, params: Annotated[dict, Depends(search_params(Form))],
                            image: UploadFile | None = File(None),
                            like_image: list[UploadFile] = File([]),
                            unlike_image: list[UploadFile] = File([]),
                            image_url: str | None = Form(None)) -> dict:
        """Search by uploaded images (multipart: ``image``, more ``like_image``/``unlike_image``)
        or an image URL (``image_url``), and/or indexed documents (``like``, ``unlike``,
        repeatable), text, filters, facets: the form fields are GET's parameters."""
        data = await read_limited(image, settings.max_upload_bytes) if image is not None else None
        likes = [await read_limited(f, settings.max_upload_bytes) for f in like_image]
        unlikes = [await read_limited(f, settings.max_upload_bytes) for f in unlike_image]
        return await run(index, SearchRequest(image=data, like_images=likes, unlike_images=unlikes, **params),
                         image_url if data is None else None)

    @app.get("/api/indices/{index}/search", dependencies=[Depends(check_key)])
    async def search_get(index: str, params: Annotated[dict, Depends(search_params(Query))],
                         image_url: str | None = None) -> dict:
        """Search by indexed documents (more / less like these), an image URL and/or text,
        with filters (``filter``, repeatable), facets (``facet``)."""
        return await run(index, SearchRequest(**params), image_url or None)

    @app.get("/api/indices/{index}/image/{doc_id:path}", dependencies=[Depends(check_key)])
    async def image(index: str, doc_id: str, photo: int | None = Query(None, ge=0, le=63)) -> Response:
        """The image file of an indexed document (for the result grid), or its ``photo``-th
        photo on a multi-photo index: only a regular file under ESM_IMAGE_ROOTS or the folders
        recorded for the index at ingest, or an image URL fetched by the server under the URL
        policy (in a search slot; never a redirect, which would carry the key to its host)."""
        info, path = await run_in_threadpool(lambda: image_ref(index, doc_id, photo))
        if not path:
            return JSONResponse({"error": "no image for this document", "reason": "no_image"}, 404)
        if is_url(path):
            return await remote_image(path)
        return local_image(index, doc_id, info, path)

    def image_ref(index: str, doc_id: str, photo: int | None) -> tuple[IndexInfo, str | None]:
        info = index_info(client, index)
        return info, document_image(client, info, doc_id, photo)

    async def remote_image(url: str) -> Response:
        try:
            got = photos.get(url)
            if got is None:
                got = await slots.run(fetch_photo, url, settings, limits, photos)
        except ImageError as exc:
            status = 403 if exc.reason == "url_refused" else 502
            return JSONResponse({"error": f"the photo could not be fetched: {exc.message}",
                                 "reason": exc.reason}, status)
        return Response(got.data, media_type=got.media_type, headers=PHOTO_HEADERS)

    def local_image(index: str, doc_id: str, info: IndexInfo, path: str) -> Response:
        try:
            real = confine(path, Path("/"), settings.image_roots + as_roots(info.image_roots))
        except PathRefused as exc:
            log.warning("image of %s/%s refused: %s", index, doc_id, exc.message)
            return JSONResponse({"error": "the image of this document is outside the image roots",
                                 "hint": exc.hint, "reason": exc.reason}, 403)
        if not regular_file(real):
            return JSONResponse({"error": "no image for this document", "reason": "no_image"}, 404)
        return FileResponse(real)

    @app.get("/metrics", include_in_schema=False, dependencies=[Depends(check_key)])
    def metrics() -> Response:
        """Prometheus text format (docs/metrics.md)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/health")
    def health() -> dict:
        from ..index.client import cluster_health
        return {"elasticsearch": cluster_health(settings) or "unreachable"}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
