"""The contracts between the parts: plain, JSON-safe values that cross Celery, the model file,
the index's ``_meta`` and the HTTP API. No behaviour beyond (de)serialising.

May import: the standard library only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, TypedDict

__all__ = ["BatchOutcome", "CardRuntime", "Cutoff", "CutoffCheck", "DuplicateCluster", "Duplicates", "Failure",
           "Fusion", "ImageItem", "JobSpec", "MigrationState", "Mode", "ModelCard", "NO_RERANK", "OtherModel", "ReRank",
           "ReindexState", "Runtime", "RuntimeSetting", "SearchHit", "SearchResult", "failure"]

#: How vectors are made: torch eager, ONNX Runtime on the export, or the gated int8 model.
Runtime = Literal["torch", "onnxruntime", "onnxruntime-int8"]
#: ``ESM_RUNTIME``: a runtime, or ``auto`` (the card's measured choice, else ONNX Runtime).
RuntimeSetting = Literal["auto", "torch", "onnxruntime", "onnxruntime-int8"]
#: How an image and a text leg are combined (search/fusion.py).
Fusion = Literal["adaptive", "minmax", "zscore", "rrf", "weighted"]
#: An ingest job writes whole documents (``index``) or adds vectors to existing ones by id.
Mode = Literal["index", "update"]
#: A model change in place (``_meta.es_metric.migration.state``).
MigrationState = Literal["filling", "switched"]
#: A blue/green reindex (``_meta.es_metric.reindex_state.state``).
ReindexState = Literal["building", "live"]


class _ImageRef(TypedDict):
    ref: str  # an image file path (confined to the image roots by the worker) or http(s) URL


class ImageItem(_ImageRef, total=False):
    """One image of an ingest batch (Celery task argument)."""

    id: str | None               # the document id; None: the image's SHA-256
    fields: dict[str, Any]       # user fields written beside the vector (data, never metadata)
    source_ref: Any              # --from-index: the image field's value (image_ref: index/imageref.py)
    refs: list[str]              # several photos of one document (a multi-photo index); ref: the first


class _JobOptions(TypedDict, total=False):
    photos_field: str            # a multi-photo index: the nested field of the photos
    dba_raw: bool                # the index has a DBA raw copy: an update clears it (not augmented now)
    vector_only: bool            # a model change in place: write the other model's vector field only


class JobSpec(_JobOptions):
    """What every task of an ingest job carries (Celery task argument): where to write, with
    which model, and which folders the worker may read for this index."""

    job_id: str
    alias: str
    index: str                   # the concrete index written to
    model_id: str
    model_path: str
    vector_field: str
    mode: Mode
    roots: list[str]
    runtime: Runtime | None          # the runtime the index's vectors were made with (None: torch)
    runtime_parity: float | None  # that export's measured minimum cosine to torch
    runtime_variant: str | None  # int8: the quantisation that made the vectors
    fields: dict[str, str | None]  # where es-metric's fields are (index/fields.py; a sender
    #                                without it: the top-level layout)


class _FailureCore(TypedDict):
    ref: str                     # the image (path or URL), or where a refused line/document was
    reason: str                  # a short machine-readable cause: decode_error, path_refused, ...
    message: str                 # one line for a person


class Failure(_FailureCore, total=False):
    """Why one image or document of a job was not indexed (a task's result, a dead letter in
    the failures index, ``esm failures``)."""

    doc_id: str                  # the user's document id, when there is one


def failure(ref: str, reason: str, message: str, doc_id: object = None) -> Failure:
    """The one way a failure record is made: ``doc_id`` only when the user named one."""
    record: Failure = {"ref": ref, "reason": reason, "message": message}
    if doc_id not in (None, ""):
        record["doc_id"] = str(doc_id)
    return record


class BatchOutcome(TypedDict):
    """What an ingest task returns (JSON-safe): counts and the failure records."""

    indexed: int
    failed: int
    failures: list[Failure]


class OtherModel(TypedDict, total=False):
    """What a job of a model change in place overrides in its JobSpec: the model filling its
    own field (``ingest.migrate.second_model``)."""

    model_id: str
    model_path: str
    vector_field: str
    vector_only: bool


class CardRuntime(TypedDict, total=False):
    """A card's ``runtime`` part, written by ``esm model export | bench | quantize`` (a card of
    a model never exported has none)."""

    chosen: Runtime              # what ESM_RUNTIME=auto uses (export: onnxruntime; bench: the fastest)
    export: str                  # the ONNX file's name, beside the model file
    opset: int
    parity_min_cosine: float | None  # the export's (or int8 model's) minimum cosine to torch
    export_s: float
    bench: dict[str, Any]        # {"images_per_s": {runtime: rate}, "batch", "threads", "load_avg_1m"}
    int8: dict[str, Any]         # the passed int8 gate (training/quantize.py): id, min_cosine_to_float, ...
    variant: str | None          # an index made for int8 vectors: the quantisation's id


class _CardCore(TypedDict):
    format: str
    model_id: str
    backbone: str
    dims: int
    similarity: str              # the dense_vector similarity: cosine | dot_product | l2_norm
    preprocess: dict[str, Any]   # {"size", "mean", "std"}


class ModelCard(_CardCore, total=False):
    """A model file's card (``card.json``); the index records its id, dims and similarity."""

    head: str
    feature_norm: bool
    pool: str
    loss: str
    feat_dim: int
    training: dict[str, Any]
    data_fingerprint: str | None
    metrics: dict[str, Any]      # validation figures, the gate, near_duplicate_threshold, cutoff (Cutoff)
    rerank: dict[str, Any]       # ReRank.as_dict(): what search and ingest apply
    weights_sha256: str
    created_at: str
    es_metric_version: str
    runtime: CardRuntime         # absent until the model is exported


#: ``metrics.cutoff`` of a card (``--min-similarity auto``), also in the index's ``_meta``:
#: the similarity (Elasticsearch's kNN units; ``keep`` says which side) at which validation
#: queries' hits were their own class with ``precision``, the share of those kept (``recall``),
#: where it was measured (``from``) and with which re-ranking (``{"qe_k", "dba_k"}``).
Cutoff = TypedDict("Cutoff", {"precision": float, "similarity": float, "keep": str, "recall": float,
                              "from": str, "n_queries": int, "rerank": dict[str, int]})


class CutoffCheck(TypedDict):
    """How a card's cut-off does on other photos (``esm evaluate``'s ``cutoff``): of the first
    ``k`` hits of each of ``n_queries`` photos it keeps ``kept``; ``precision`` of those (None when
    none is kept) against the card's ``target``, ``recall`` of the pages' right hits, and the
    pages it ``emptied``."""
    similarity: float
    keep: str
    target: float | None
    k: int
    n_queries: int
    kept: int
    precision: float | None
    recall: float | None
    emptied: int


class _HitCore(TypedDict):
    id: str
    score: float | None
    source: dict[str, Any]


class SearchHit(_HitCore, total=False):
    """One ranked document of a search (``esm search --json``, the HTTP API)."""

    matched_image: dict[str, Any]  # multi-photo indices: {"ref", "score"}


class _ResultCore(TypedDict):
    hits: list[SearchHit]
    took_ms: int
    model_id: str


class SearchResult(_ResultCore, total=False):
    """A search's answer (``esm search --json``, ``/api/indices/{index}/search``)."""

    index: str
    client_ms: float
    page: int
    note: str                    # why fewer than k hits came back
    query_expansion: dict[str, Any]  # {"k", "alpha"}: the QE round that ran
    facets: dict[str, list[dict[str, Any]]]
    fusion: dict[str, Any]       # {"method", "image_weight", "text_weight", "where"}; adaptive also
    #                              {"agreement", "text_weight_used"}
    min_similarity: float        # the similarity floor applied (a number, or the card's cut-off)
    cut: int                     # how many of the first page x k image matches fell below it


class DuplicateCluster(TypedDict):
    """Near-duplicate documents (``esm duplicates --json``) and their weakest link."""

    ids: list[str]
    similarity: float


class Duplicates(TypedDict):
    clusters: list[DuplicateCluster]


@dataclass(frozen=True)
class ReRank:
    """Re-ranking settings: ``qe_k`` neighbours expand the query, ``dba_k`` neighbours augment
    every indexed vector (0 turns either off). A model card records them under ``rerank``."""

    qe_k: int = 0
    qe_alpha: float = 3.0
    dba_k: int = 0
    dba_alpha: float = 3.0

    @property
    def active(self) -> bool:
        return self.qe_k > 0 or self.dba_k > 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "ReRank":
        d = d or {}
        return cls(int(d.get("qe_k", 0)), float(d.get("qe_alpha", 3.0)), int(d.get("dba_k", 0)),
                   float(d.get("dba_alpha", 3.0)))


NO_RERANK = ReRank()
