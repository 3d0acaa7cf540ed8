"""Request bodies for index creation and mapping updates, built from the model card (pure).

Only dicts come out of here; index.py sends them. The vector field's dims and similarity come
from the model card, so the mapping always agrees with how the model was trained.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MappingMismatch
from ..types import ModelCard
from .dbafields import DbaFields, dba_bodies
from .fields import DEFAULT_OBJECT, DocFields
from .gallery import layout
from .vectors import lean_source

INDEX_TYPES = ("hnsw", "int8_hnsw", "int4_hnsw", "bbq_hnsw", "flat", "int8_flat")
# Quantised HNSW types search the quantised graph for oversample x k candidates, then rescore
# them with the full float vectors (kept on disk beside the quantised ones). 0 turns it off.
RESCORED_TYPES = ("int8_hnsw", "int4_hnsw", "bbq_hnsw")
DEFAULT_OVERSAMPLE = 3.0


@dataclass(frozen=True)
class IndexOptions:
    """HNSW graph and quantisation options of the vector field."""

    type: str = "hnsw"
    m: int = 16
    ef_construction: int = 100
    oversample: float = DEFAULT_OVERSAMPLE  # quantised types: rescore oversample x k (0: off)

    def as_dict(self, dims: int) -> dict[str, Any]:
        if self.type not in INDEX_TYPES:
            raise ConfigError(f"unknown index type {self.type!r}", hint="valid: " + ", ".join(INDEX_TYPES))
        if self.type.startswith("bbq") and dims < 64:
            raise ConfigError(f"{self.type} needs at least 64 dims, the model has {dims}",
                              hint="use int8_hnsw or hnsw")
        if self.type.startswith("int4") and dims % 2:
            raise ConfigError("int4 quantisation needs an even number of dims", hint="use int8_hnsw")
        if self.oversample and not 1.0 <= self.oversample <= 10.0:
            raise ConfigError(f"rescore oversample {self.oversample} is out of range",
                              hint="use 0 (off) or a factor from 1 to 10")
        body: dict[str, Any] = {"type": self.type}
        if self.type.endswith("hnsw"):
            body.update(m=self.m, ef_construction=self.ef_construction)
        if self.type in RESCORED_TYPES and self.oversample:
            body["rescore_vector"] = {"oversample": float(self.oversample)}
        return body


def _templates_dir() -> Path:
    here = Path(__file__).resolve().parents[2] / "mappings"  # a checkout: <repo>/mappings
    if here.is_dir():
        return here
    return Path(str(resources.files("es_metric") / "mappings"))


@cache
def load_template(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((_templates_dir() / f"{name}.json").read_text())
    body.pop("_comment", None)
    return body


def vector_field_body(card: ModelCard, options: IndexOptions) -> dict[str, Any]:
    return {"type": "dense_vector", "dims": int(card["dims"]), "index": True,
            "similarity": card["similarity"], "index_options": options.as_dict(int(card["dims"]))}


def card_asks_dba(card: ModelCard) -> bool:
    """Whether the card records database-side augmentation (``rerank.dba_k`` > 0)."""
    return int((card.get("rerank") or {}).get("dba_k") or 0) > 0


def index_meta(card: ModelCard, model_path: str, fields: DocFields | str,
               dba: bool | None = None) -> dict[str, Any]:
    """What an index records about its model and its fields (in the mapping's ``_meta``);
    ``fields``: the layout (a bare vector field name: the top-level layout, see fields.py);
    ``dba``: whether the DBA passes may write into its documents (default: what the card asks)."""
    fields = layout(fields) if isinstance(fields, str) else fields
    meta = {"model_id": card["model_id"], "model_path": str(model_path),
            "dims": int(card["dims"]), "similarity": card["similarity"],
            "vector_field": fields.vector, "backbone": card["backbone"], "fields": fields.record()}
    nested = fields.layout.nested  # several photos per document (layout.py)
    if fields.photos:
        meta["photos_field"] = fields.photos
    meta["dba"] = bool(card_asks_dba(card) if dba is None else dba) and not nested
    # what search and the DBA pass apply, so that they never need the model file for it
    if card.get("rerank") is not None:
        meta["rerank"] = card["rerank"]
    # the runtime that makes its vectors, and that export's parity with torch (runtime.py)
    runtime = card.get("runtime") or {}
    meta["runtime"] = runtime.get("chosen") or "torch"
    parity = runtime.get("parity_min_cosine")
    if parity is not None:
        meta["runtime_parity"] = float(parity)
    if runtime.get("variant"):  # int8: which quantisation
        meta["runtime_variant"] = runtime["variant"]
    threshold = (card.get("metrics") or {}).get("near_duplicate_threshold")
    if threshold is not None:
        meta["near_duplicate_threshold"] = float(threshold)
    for name in ("cutoff", "duplicate_threshold"):  # --min-similarity auto, esm duplicates auto
        if isinstance((card.get("metrics") or {}).get(name), dict):
            meta[name] = card["metrics"][name]
    return {"es_metric": meta}


def new_index_body(card: ModelCard, model_path: str, *, vector_field: DocFields | str = "image_vector",
                   options: IndexOptions = IndexOptions(), text_fields: tuple[str, ...] = (),
                   keyword_fields: tuple[str, ...] = (), replicas: int = 0, lean: bool = True) -> dict[str, Any]:
    """Settings + mappings for a fresh versioned index; ``vector_field``: the vector's name
    (top-level layout) or a whole layout; ``lean``: the vectors left out of ``_source`` (read
    from doc values, see vectors.py)."""
    fields = layout(vector_field) if isinstance(vector_field, str) else vector_field
    body = copy.deepcopy(load_template("image_index"))
    props = body["mappings"]["properties"]
    props.pop("image_vector")
    for name in DocFields.top_level().record():
        props.pop(name, None)
    body["mappings"]["_meta"] = index_meta(card, model_path, fields)
    props.update(DocFields.properties_at(es_metric_bodies(fields, vector_field_body(card, options),
                                                          body["mappings"]["_meta"]["es_metric"]["dba"])))
    for name in text_fields:
        props[name] = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
    for name in keyword_fields:
        props[name] = {"type": "keyword"}
    if lean and not fields.layout.nested:  # photo vectors are read back from _source
        body["mappings"]["_source"] = lean_source(fields)
    body["settings"]["number_of_replicas"] = replicas
    return body


def existing_index_update(card: ModelCard, model_path: str, current: dict[str, Any], *,
                          vector_field: str = "image_vector", options: IndexOptions = IndexOptions(),
                          fields_object: str = DEFAULT_OBJECT, dba: bool = False) -> dict[str, Any]:
    """A put-mapping body adding es-metric's fields to an index the shop owns; its own fields
    untouched. ``current`` is the index's present mapping (``{"properties": ..., "_meta": ...}``).

    A first time, everything es-metric writes goes under one object, ``fields_object``, which
    must be free (MappingMismatch naming the clash otherwise): no value of the shop's is ever
    overwritten. An index that already records its fields keeps them (older versions: top
    level); its vector field must then agree with the model. The shop's documents get DBA's
    fields (under the same object) and its writes only when asked (``dba``)."""
    props = current.get("properties", {})
    fields = existing_layout(props, (current.get("_meta") or {}).get("es_metric"), vector_field,
                             fields_object)
    existing = DocFields.mapping_of(props, fields.vector)
    if existing:
        check_compatible(card, existing, fields.vector)
    meta = dict(current.get("_meta") or {})
    meta.update(index_meta(card, model_path, fields, dba=dba))
    bodies = es_metric_bodies(fields, existing or vector_field_body(card, options), meta["es_metric"]["dba"])
    body = DocFields.properties_at({path: mapping for path, mapping in bodies.items()
                                    if not DocFields.mapping_of(props, path)})  # a re-run: what is missing
    return {"properties": body, "_meta": meta}


def existing_layout(props: dict[str, Any], mine: dict[str, Any] | None, vector_field: str,
                    fields_object: str) -> DocFields:
    """Where es-metric's fields go in a shop's index: where its record says (a re-run), else
    under ``fields_object``, which must be free in the shop's mapping."""
    if mine:
        return DocFields.of_record(mine)
    if fields_object in props:
        raise MappingMismatch(
            f"the index has its own field {fields_object!r}; es-metric keeps its fields (vector, "
            "model_id, image_path, ...) under one object of that name and never writes into "
            "the shop's fields", hint="name a free object with --fields-object NAME")
    return DocFields.under(fields_object, vector_field, layout(vector_field).photos)


def es_metric_bodies(fields: DocFields, vector_body: dict[str, Any], dba: bool) -> dict[str, dict[str, Any]]:
    """``{dotted path: mapping}`` of every field es-metric writes: bookkeeping, the vector and,
    for an index that runs DBA, its raw copy and marker (beside the vector, fields.py)."""
    bodies = fields.bodies(vector_body)
    if dba:
        bodies.update(dba_bodies(DbaFields.of(fields), vector_body))
    return bodies


def check_compatible(card: ModelCard, field_mapping: dict[str, Any], field: str = "image_vector") -> None:
    """Refuse a model whose dims or similarity differ from an existing vector field."""
    if field_mapping.get("type") != "dense_vector":
        raise MappingMismatch(f"field {field!r} exists and is {field_mapping.get('type')!r}, "
                              "not dense_vector", hint="choose another --vector-field")
    dims, sim = field_mapping.get("dims"), field_mapping.get("similarity", "cosine")
    if dims is not None and int(dims) != int(card["dims"]):
        raise MappingMismatch(f"field {field!r} has {dims} dims but model {card['model_id']} makes "
                              f"{card['dims']}", hint="use `esm reindex` to move to a new model")
    if sim != card["similarity"]:
        raise MappingMismatch(f"field {field!r} uses similarity {sim!r} but model "
                              f"{card['model_id']} needs {card['similarity']!r}",
                              hint="use `esm reindex` to move to a new model")


def versioned_name(alias: str, model_id: str) -> str:
    return f"{alias}-{model_id}"
