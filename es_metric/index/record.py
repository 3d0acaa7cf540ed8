"""The index record, ``_meta.es_metric`` of an index's mapping: its one owner.

What an index records about itself (its model, where its fields and vectors are, the roots its
images may be read from, a model change under way...) is read here into a typed ``IndexMeta``
(with its ``Migration``), and changed only through ``update_record``.

Elasticsearch replaces a mapping's ``_meta`` whole on every put-mapping and offers no
compare-and-swap on it, so two read-modify-writes at once (an ingest recording its image roots
while a model change records its state, a DBA pass recording its setting) lose one update.
``update_record`` therefore holds a lock while it reads, changes and writes: a lock document
per index in a small hidden index (``LOCK_INDEX``), taken with ``op_type=create`` (exactly one
writer creates it) and released with ``if_seq_no``/``if_primary_term`` (only by its holder). A
holder that died leaves a lock that expires after ``LEASE_S``; it is taken over with the same
compare-and-swap, so two waiters cannot both take it.

API::

    meta = IndexMeta.from_record(mapping["_meta"]["es_metric"])   # typed; IndexStateError if unusable
    meta.model_id  meta.layout  meta.migration  meta.serves(stamp)  ...
    update_record(client, concrete, change)   # change(record, mappings) edits the record in place
                                              # (or returns ChangeResult with properties to add)
"""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..errors import IndexStateError
from ..types import MigrationState, Runtime
from .fields import DocFields
from .layout import VectorLayout

if TYPE_CHECKING:  # the typed record stays importable without the client
    from elasticsearch import ApiError, Elasticsearch

log = logging.getLogger(__name__)

LOCK_INDEX = "esm-record-locks"
LEASE_S = 60.0          # a lock not released after this long is a dead holder's: taken over
WAIT_S = 120.0          # how long a writer waits for the lock before giving up (IndexStateError)
POLL_S = 0.05
BUSY_MAX_PAUSE_S = 2.0  # the longest pause between writes a busy cluster rejected (429)
RELEASE_TRIES = 8       # deletes of the lock tried on a busy cluster before the lease is left to free it

@dataclass(frozen=True)
class Migration:
    """A model change in place under way (ingest/migrate.py): the new model fills its field
    (``filling``), then search uses it (``switched``) until the old vectors are cleared."""

    state: MigrationState
    model_id: str
    model_path: str
    vector_field: str
    from_model_id: str | None = None
    from_vector_field: str | None = None
    started_at: float | None = None
    switched_at: float | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Migration:
        state = record.get("state")
        if state not in ("filling", "switched"):
            raise IndexStateError(f"the index records a model change in an unknown state {state!r}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})

    def record(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def switched(self, at: float) -> Migration:
        return Migration(**{**self.record(), "state": "switched", "switched_at": at})


@dataclass(frozen=True, kw_only=True)
class IndexMeta:
    """What an index records about its model and fields (``_meta.es_metric``), typed."""

    model_id: str
    model_path: str
    vector_field: str
    dims: int
    similarity: str
    photos_field: str | None = None          # a multi-photo index: the nested field of the photos
    image_roots: tuple[str, ...] = ()        # folders images were ingested from (what may be read)
    rerank: dict[str, Any] | None = None     # the card's re-ranking, recorded at mapping creation
    near_duplicate_threshold: float | None = None
    runtime: Runtime | None = None               # runtime of the vectors (torch, onnxruntime); None: older
    runtime_parity: float | None = None      # that runtime's measured min cosine to torch
    runtime_variant: str | None = None       # int8: the quantisation that made the vectors
    migration: Migration | None = None       # a model change in place under way
    dba: bool | None = None                  # DBA may write into the documents; None: not recorded
    recorded_fields: DocFields | None = None  # where es-metric's fields are (None: top level)
    cutoff: dict[str, Any] | None = None     # the card's calibrated search cut-off
    duplicate_threshold: dict[str, Any] | None = None  # the card's copy-calibrated threshold

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> IndexMeta:
        """The typed record; IndexStateError when a key it cannot do without is missing."""
        try:
            moving = record.get("migration")
            return cls(model_id=str(record["model_id"]), model_path=str(record["model_path"]),
                       vector_field=str(record["vector_field"]), dims=int(record["dims"]),
                       similarity=str(record["similarity"]),
                       photos_field=record.get("photos_field") or None,
                       image_roots=tuple(record.get("image_roots") or ()), rerank=record.get("rerank"),
                       near_duplicate_threshold=record.get("near_duplicate_threshold"),
                       runtime=record.get("runtime"), runtime_parity=record.get("runtime_parity"),
                       runtime_variant=record.get("runtime_variant"),
                       migration=Migration.from_record(moving) if moving else None,
                       dba=record.get("dba"), recorded_fields=DocFields.of_record(record),
                       cutoff=record.get("cutoff"), duplicate_threshold=record.get("duplicate_threshold"))
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexStateError(f"the index's es-metric record is unusable ({exc!r} missing or wrong)",
                                  hint="create the mapping again with `esm mapping create`") from None

    def meta_fields(self) -> dict[str, Any]:
        """This record's fields by name (to build a subclass from it)."""
        return {f.name: getattr(self, f.name) for f in fields(IndexMeta)}

    @property
    def fields(self) -> DocFields:
        """Where es-metric's fields are in this index's documents (fields.py): ask this, never
        a hard-coded name."""
        return self.recorded_fields or DocFields(self.vector_field, self.photos_field)

    @property
    def layout(self) -> VectorLayout:
        """One vector per document, or nested photos (layout.py)."""
        return self.fields.layout

    def serves(self, model_id: str | None) -> bool:
        """May a hit stamped ``model_id`` be returned? The index's model; during the moments
        after a model change in place switched fields and before the stamps are rewritten, also
        the previous one (each model writes only its own field, so vectors never mix)."""
        moving = self.migration
        return model_id in (None, self.model_id) or (
            moving is not None and moving.state == "switched" and model_id == moving.from_model_id)


@dataclass
class ChangeResult:
    """What a change adds to the mapping besides the record (new fields' properties)."""

    properties: dict[str, Any] = field(default_factory=dict)


#: A change: edits the record (``_meta.es_metric``, ``{}`` when there is none) in place, given
#: the index's current mappings; may return properties to put with it.
Change = Callable[[dict[str, Any], dict[str, Any]], ChangeResult | None]


def read_mappings(client: Elasticsearch, concrete: str) -> dict[str, Any]:
    mappings: dict[str, Any] = client.indices.get_mapping(index=concrete)[concrete]["mappings"]
    return mappings


def read_record(client: Elasticsearch, concrete: str) -> dict[str, Any]:
    """The index's ``_meta.es_metric`` as stored ({} when it has none)."""
    mine: dict[str, Any] = (read_mappings(client, concrete).get("_meta") or {}).get("es_metric") or {}
    return mine


def update_record(client: Elasticsearch, concrete: str, change: Change) -> dict[str, Any]:
    """Read-modify-write the record of ``concrete`` under its lock (the module doc): no other
    writer's update is lost; the rest of ``_meta`` (the shop's keys) stays. Returns the record
    written."""
    with record_lock(client, concrete):
        mappings = read_mappings(client, concrete)
        meta = dict(mappings.get("_meta") or {})
        mine = dict(meta.get("es_metric") or {})
        result = change(mine, mappings) or ChangeResult()
        meta["es_metric"] = mine
        if result.properties:
            client.indices.put_mapping(index=concrete, properties=result.properties, meta=meta)
        else:
            client.indices.put_mapping(index=concrete, meta=meta)
    return mine


def set_keys(client: Elasticsearch, concrete: str, **changes: Any) -> dict[str, Any]:
    """Set (or, with None, remove) keys of the record; the rest stays."""
    def change(mine: dict[str, Any], _mappings: dict[str, Any]) -> None:
        for key, value in changes.items():
            if value is None:
                mine.pop(key, None)
            else:
                mine[key] = value
    return update_record(client, concrete, change)


@contextmanager
def record_lock(client: Elasticsearch, concrete: str, lease_s: float = LEASE_S,
                wait_s: float = WAIT_S) -> Iterator[None]:
    """Hold the lock of ``concrete``'s record (IndexStateError after ``wait_s`` without it)."""
    held = _acquire(client, concrete, lease_s, wait_s)
    try:
        yield
    finally:
        _release(client, concrete, held)


def _rejected(exc: ApiError) -> bool:
    """Elasticsearch's write queue was full (HTTP 429): the request may be sent again later."""
    return exc.meta.status == 429


def _acquire(client: Elasticsearch, concrete: str, lease_s: float, wait_s: float) -> tuple[int, int]:
    """(seq_no, primary_term) of the lock document this writer created or took over. A write
    the cluster rejects as too busy (429, after the client's own quick retries) is sent again
    with a growing pause until ``wait_s``: under a bulk load the lock is a write like any other."""
    from elasticsearch import ApiError, ConflictError, NotFoundError

    token, deadline = uuid.uuid4().hex, time.monotonic() + wait_s
    if not client.indices.exists(index=LOCK_INDEX):  # made with its settings, not auto-created
        _ensure_lock_index(client)
    pause, busy = POLL_S, False
    while True:
        doc = {"owner": token, "expires_at": time.time() + lease_s}
        try:
            resp = client.index(index=LOCK_INDEX, id=concrete, document=doc, op_type="create")
            return int(resp["_seq_no"]), int(resp["_primary_term"])
        except NotFoundError:  # no lock index yet (a cluster that does not auto-create indices)
            _ensure_lock_index(client)
            continue
        except ConflictError:
            taken, busy, pause = _take_over_expired(client, concrete, doc), False, POLL_S
            if taken is not None:
                return taken
        except ApiError as exc:
            if not _rejected(exc):
                raise
            busy, pause = True, min(2 * pause, BUSY_MAX_PAUSE_S)
        if time.monotonic() > deadline:
            if busy:
                raise IndexStateError(f"Elasticsearch rejected the write of the es-metric record lock of "
                                      f"{concrete!r} as too busy (HTTP 429) for over {wait_s:.0f} s",
                                      hint="run the command again when the cluster's write load is lower")
            raise IndexStateError(f"another writer has held the es-metric record of {concrete!r} "
                                  f"for over {wait_s:.0f} s", hint="run the command again")
        time.sleep(pause)


def _take_over_expired(client: Elasticsearch, concrete: str, doc: dict[str, Any]) -> tuple[int, int] | None:
    """The lock, when its holder's lease ran out and no one else took it over first."""
    from elasticsearch import ApiError, ConflictError

    held = client.options(ignore_status=404).get(index=LOCK_INDEX, id=concrete)
    if not held.get("found") or float(held["_source"].get("expires_at") or 0) > time.time():
        return None
    try:
        resp = client.index(index=LOCK_INDEX, id=concrete, document=doc,
                            if_seq_no=held["_seq_no"], if_primary_term=held["_primary_term"])
    except ConflictError:  # released, or taken over by another waiter meanwhile
        return None
    except ApiError as exc:  # too busy to take it now: the caller tries again
        if _rejected(exc):
            return None
        raise
    log.warning("took over the record lock of %s from a writer whose lease ran out", concrete)
    return int(resp["_seq_no"]), int(resp["_primary_term"])


def _release(client: Elasticsearch, concrete: str, held: tuple[int, int]) -> None:
    """Delete the lock document this writer holds; a cluster too busy to take the delete is
    asked again a few times, then the lease frees the lock when it runs out."""
    from elasticsearch import ApiError, ConflictError

    pause = POLL_S
    for attempt in range(RELEASE_TRIES):
        try:
            client.options(ignore_status=404).delete(index=LOCK_INDEX, id=concrete,
                                                     if_seq_no=held[0], if_primary_term=held[1])
            return
        except ConflictError:  # our lease ran out and another writer holds it now: not ours to free
            log.warning("the record lock of %s was taken over before this writer released it", concrete)
            return
        except ApiError as exc:
            if not _rejected(exc):
                raise
            if attempt + 1 < RELEASE_TRIES:
                time.sleep(pause)
                pause = min(2 * pause, BUSY_MAX_PAUSE_S)
    log.warning("Elasticsearch was too busy (HTTP 429) to release the record lock of %s: it frees "
                "itself when its %.0f s lease runs out", concrete, LEASE_S)


def _ensure_lock_index(client: Elasticsearch) -> None:
    client.options(ignore_status=400).indices.create(
        index=LOCK_INDEX, settings={"number_of_shards": 1, "auto_expand_replicas": "0-1", "hidden": True},
        mappings={"dynamic": False, "properties": {"expires_at": {"type": "double"}}})
