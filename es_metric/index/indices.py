"""Index management on a live cluster: create versioned indices behind an alias, add the vector
field to an existing index, and read back which model an index serves."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from elasticsearch import Elasticsearch, NotFoundError

from ..errors import ConfigError, IndexStateError, MappingMismatch, shown
from ..types import ModelCard, Runtime
from .fields import DEFAULT_OBJECT, DocFields
from .mappings import (RESCORED_TYPES, IndexOptions, check_compatible, existing_index_update,
                       load_template, new_index_body, versioned_name)

log = logging.getLogger(__name__)
_NAME_FORBIDDEN = re.compile(r'[\\/*?"<>|,#:\s\x00-\x1f\x7f]')


#: How long search may use an index's info (model, field) it read: a switch of field or model
#: waits this long before old vectors go (ingest/migrate.py).
INFO_TTL_S = 2.0

@dataclass(frozen=True)
class IndexInfo:
    """Which concrete index an alias (or name) points at and which model it serves."""

    name: str            # what the user typed (alias or index)
    concrete: str        # the index behind it
    model_id: str
    model_path: str
    vector_field: str
    dims: int
    similarity: str
    image_roots: tuple[str, ...] = ()  # folders images were ingested from (what may be read)
    rerank: dict[str, Any] | None = None          # the card's re-ranking, recorded at mapping creation
    near_duplicate_threshold: float | None = None
    runtime: Runtime | None = None      # runtime of the vectors (torch, onnxruntime); None: older
    runtime_parity: float | None = None  # that runtime's measured min cosine to torch
    migration: dict[str, Any] | None = None       # a model change in place under way (ingest/migrate.py)

    def serves(self, model_id: str | None) -> bool:
        """May a hit stamped ``model_id`` be returned? The index's model; during the moments
        after a model change in place switched fields and before the stamps are rewritten, also
        the previous one (each model writes only its own field, so vectors never mix)."""
        moving = self.migration or {}
        return model_id in (None, self.model_id) or (
            moving.get("state") == "switched" and model_id == moving.get("from_model_id"))
    photos_field: str | None = None     # a multi-photo index: the nested field of the photos
    candidates_factor: float = 1.0      # quantised + rescored field: its oversample (kNN candidates x it)
    runtime_variant: str | None = None  # int8: the quantisation that made the vectors
    dba: bool | None = None             # DBA may write into the documents; None: not recorded (older)
    dba_raw: bool = False               # the DBA raw copy of the vector is mapped
    recorded_fields: DocFields | None = None  # where es-metric's fields are (None: top level)
    cutoff: dict[str, Any] | None = None          # the card's calibrated search cut-off (--min-similarity auto)
    duplicate_threshold: dict[str, Any] | None = None  # the card's copy-calibrated threshold (esm duplicates)

    @property
    def fields(self) -> DocFields:
        """Where es-metric's fields are in this index's documents (fields.py): ask this, never
        a hard-coded name."""
        return self.recorded_fields or DocFields(self.vector_field, self.photos_field)


def resolve_concrete(client: Elasticsearch, name: str) -> list[str]:
    """Concrete indices behind an alias or index name ([] when nothing has that name)."""
    if client.indices.exists_alias(name=name):
        return sorted(client.indices.get_alias(name=name).keys())
    if client.indices.exists(index=name):
        return [name]
    return []


def check_index_name(name: str) -> None:
    """Elasticsearch's naming rules, plus no wildcards, lists or remote clusters: a name a user
    typed addresses exactly one index or alias."""
    if (not name or name in (".", "..") or name[0] in "-_+" or name != name.lower()
            or _NAME_FORBIDDEN.search(name) or len(name.encode()) > 255):
        raise ConfigError(f"{shown(name)} is not a valid index or alias name",
                          hint='names are lowercase, at most 255 bytes, without spaces or '
                               '\\ / * ? " < > | , # :, and do not start with - _ +')


def index_info(client: Elasticsearch, name: str) -> IndexInfo:
    check_index_name(name)
    concrete = resolve_concrete(client, name)
    if not concrete:
        raise IndexStateError(f"no index or alias named {shown(name)}",
                              hint=f"create it with `esm mapping create {name} --model MODEL`")
    if len(concrete) > 1:
        raise IndexStateError(f"alias {name!r} points at several indices {concrete}; "
                              "es-metric refuses to mix models", hint="point it at one index")
    mapping = client.indices.get_mapping(index=concrete[0])[concrete[0]]["mappings"]
    meta = (mapping.get("_meta") or {}).get("es_metric")
    if not meta:
        raise IndexStateError(f"index {concrete[0]!r} has no es-metric vector field",
                              hint=f"add one with `esm mapping create {name} --model MODEL --existing`")
    props, fields = mapping.get("properties") or {}, DocFields.of_record(meta)
    return IndexInfo(name, concrete[0], meta["model_id"], meta["model_path"],
                     meta["vector_field"], int(meta["dims"]), meta["similarity"],
                     tuple(meta.get("image_roots") or ()), meta.get("rerank"),
                     meta.get("near_duplicate_threshold"), meta.get("runtime"),
                     meta.get("runtime_parity"), meta.get("migration"), meta.get("photos_field"),
                     rescore_factor(DocFields.mapping_of(props, meta["vector_field"])),
                     meta.get("runtime_variant"), meta.get("dba"),
                     DocFields.mapping_of(props, fields.raw_vector).get("type") == "dense_vector", fields,
                     meta.get("cutoff"), meta.get("duplicate_threshold"))


def rescore_factor(field_mapping: dict[str, Any]) -> float:
    """A quantised vector field that rescores (``index_options.rescore_vector.oversample``)
    gets that many times the kNN candidates by default: its graph is searched in quantised
    space, so it needs a wider beam to hold the true neighbours (bench/knn.py at 1M x 128-d:
    bbq_hnsw recall@10 0.69 at 100 candidates, 0.96 at 300)."""
    opts = field_mapping.get("index_options") or {}
    if opts.get("type") not in RESCORED_TYPES:
        return 1.0
    return max(1.0, float((opts.get("rescore_vector") or {}).get("oversample") or 1.0))


def record_image_roots(client: Elasticsearch, index: str, roots: tuple[str, ...]) -> None:
    """Add ``roots`` to the folders recorded in ``index``'s ``_meta`` (what the workers and the
    image endpoint may read for this index); nothing else in ``_meta`` changes."""
    meta = client.indices.get_mapping(index=index)[index]["mappings"].get("_meta") or {}
    mine = meta.setdefault("es_metric", {})
    known = list(mine.get("image_roots") or [])
    new = [r for r in roots if r not in known]
    if new:
        mine["image_roots"] = known + new
        client.indices.put_mapping(index=index, meta=meta)


def create_versioned_index(client: Elasticsearch, alias: str, card: ModelCard, model_path: str, *,
                           options: IndexOptions = IndexOptions(), vector_field: str = "image_vector",
                           text_fields: tuple[str, ...] = (), keyword_fields: tuple[str, ...] = (),
                           point_alias: bool = True, replicas: int = 0, lean: bool = True) -> str:
    """Create ``<alias>-<model id>`` (idempotent) and, if asked, point ``alias`` at it."""
    if client.indices.exists(index=alias) and not client.indices.exists_alias(name=alias):
        raise IndexStateError(f"{alias!r} is an existing index, not an es-metric alias",
                              hint=f"add vectors to it with `esm mapping create {alias} --model "
                                   f"MODEL --existing`, or choose another name")
    name = versioned_name(alias, card["model_id"])
    body = new_index_body(card, model_path, vector_field=vector_field, options=options,
                          text_fields=text_fields, keyword_fields=keyword_fields, replicas=replicas,
                          lean=lean)
    if client.indices.exists(index=name):
        current = client.indices.get_mapping(index=name)[name]["mappings"]["properties"]
        check_compatible(card, DocFields.mapping_of(current, vector_field), vector_field)
        log.info("index %s exists already", name)
    else:
        client.indices.create(index=name, settings=body["settings"], mappings=body["mappings"])
    if point_alias and not client.indices.exists_alias(name=alias):
        client.indices.put_alias(index=name, name=alias)
    return name


def add_vectors_to_existing(client: Elasticsearch, index: str, card: ModelCard, model_path: str, *,
                            options: IndexOptions = IndexOptions(), vector_field: str = "image_vector",
                            fields_object: str = DEFAULT_OBJECT, dba: bool = False) -> str:
    """Put-mapping es-metric's fields onto an existing index, under ``fields_object`` (which
    must be free: mappings.existing_index_update); nothing of the shop's changes (``dba``: the
    DBA passes may write into its documents too, under the same object)."""
    concrete = resolve_concrete(client, index)
    if len(concrete) != 1:
        raise IndexStateError(f"{index!r} must name exactly one existing index (found {concrete})",
                              hint="create the index first, or drop --existing")
    current = client.indices.get_mapping(index=concrete[0])[concrete[0]]["mappings"]
    meta = (current.get("_meta") or {}).get("es_metric")
    if meta and meta.get("model_id") != card["model_id"]:
        recorded = DocFields.mapping_of(current.get("properties") or {}, str(meta.get("vector_field")))
        if recorded:  # a model of other dims or similarity: say so first
            check_compatible(card, recorded, str(meta.get("vector_field")))
        raise MappingMismatch(f"index {concrete[0]!r} serves model {meta.get('model_id')}, not "
                              f"{card['model_id']}; es-metric never mixes models",
                              hint=f"change the model in place with `esm reindex {index} --model ...`")
    body = existing_index_update(card, model_path, current, vector_field=vector_field, options=options,
                                 fields_object=fields_object, dba=dba)
    client.indices.put_mapping(index=concrete[0], properties=body["properties"], meta=body["_meta"])
    return concrete[0]


def ensure_failures_index(client: Elasticsearch, name: str) -> None:
    if not client.indices.exists(index=name):
        body = load_template("failures_index")
        try:
            client.indices.create(index=name, settings=body["settings"], mappings=body["mappings"])
        except Exception as exc:  # created concurrently by another worker
            if "resource_already_exists" not in str(exc):
                raise


def refuse_other_model(info: IndexInfo, card: ModelCard) -> None:
    """Search and ingest refuse a model other than the one the index serves."""
    if card["model_id"] != info.model_id:
        raise MappingMismatch(f"index {info.concrete!r} serves model {info.model_id}, not "
                              f"{card['model_id']}; es-metric never mixes models",
                              hint=f"use `esm reindex {info.name} --model ...` to switch models")


def count(client: Elasticsearch, index: str) -> int:
    try:
        client.indices.refresh(index=index)
        return int(client.count(index=index)["count"])
    except NotFoundError:
        return 0
