"""Index management on a live cluster: create versioned indices behind an alias, add the vector
field to an existing index, and read back which model an index serves."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from elasticsearch import Elasticsearch, NotFoundError

from ..errors import ConfigError, IndexStateError, MappingMismatch, shown
from ..types import ModelCard
from .fields import DEFAULT_OBJECT, DocFields
from .record import ChangeResult, IndexMeta, read_mappings, read_record, update_record
from .mappings import (RESCORED_TYPES, IndexOptions, check_compatible, existing_index_update,
                       load_template, new_index_body, versioned_name)

log = logging.getLogger(__name__)
_NAME_FORBIDDEN = re.compile(r'[\\/*?"<>|,#:\s\x00-\x1f\x7f]')


#: How long search may use an index's info (model, field) it read: a switch of field or model
#: waits this long before old vectors go (ingest/migrate.py).
INFO_TTL_S = 2.0

@dataclass(frozen=True, kw_only=True)
class IndexInfo(IndexMeta):
    """The record of the concrete index an alias (or name) points at (record.py), and where."""

    name: str                           # what the user typed (alias or index)
    concrete: str                       # the index behind it
    candidates_factor: float = 1.0      # quantised + rescored field: its oversample (kNN candidates x it)
    dba_raw: bool = False               # the DBA raw copy of the vector is mapped

    @classmethod
    def of(cls, name: str, concrete: str, mappings: dict[str, Any]) -> IndexInfo:
        """From an index's mappings; IndexStateError when it has no es-metric record."""
        mine = (mappings.get("_meta") or {}).get("es_metric")
        if not mine:
            raise IndexStateError(f"index {concrete!r} has no es-metric vector field",
                                  hint=f"add one with `esm mapping create {name} --model MODEL --existing`")
        meta, props = IndexMeta.from_record(mine), mappings.get("properties") or {}
        return cls(name=name, concrete=concrete, **meta.meta_fields(),
                   candidates_factor=rescore_factor(DocFields.mapping_of(props, meta.vector_field)),
                   dba_raw=DocFields.mapping_of(props, meta.fields.raw_vector).get("type") == "dense_vector")


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
    return IndexInfo.of(name, concrete[0], read_mappings(client, concrete[0]))


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
    known = list(read_record(client, index).get("image_roots") or [])
    if all(r in known for r in roots):
        return  # the common case, without taking the record's lock

    def add(mine: dict[str, Any], _mappings: dict[str, Any]) -> None:
        had = list(mine.get("image_roots") or [])
        mine["image_roots"] = had + [r for r in roots if r not in had]
    update_record(client, index, add)


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

    def add(mine: dict[str, Any], current: dict[str, Any]) -> ChangeResult:
        if mine and mine.get("model_id") != card["model_id"]:
            recorded = DocFields.mapping_of(current.get("properties") or {}, str(mine.get("vector_field")))
            if recorded:  # a model of other dims or similarity: say so first
                check_compatible(card, recorded, str(mine.get("vector_field")))
            raise MappingMismatch(f"index {concrete[0]!r} serves model {mine.get('model_id')}, not "
                                  f"{card['model_id']}; es-metric never mixes models",
                                  hint=f"change the model in place with `esm reindex {index} --model ...`")
        body = existing_index_update(card, model_path, current, vector_field=vector_field,
                                     options=options, fields_object=fields_object, dba=dba)
        mine.clear()
        mine.update(body["_meta"]["es_metric"])
        return ChangeResult(body["properties"])
    update_record(client, concrete[0], add)
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
