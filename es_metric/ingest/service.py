"""The service layer the shells share: what ``esm ingest --wait`` / ``esm reindex`` do is done
here once, and the CLI and the Python API (``EsMetric``) both call it.

* ``finish_ingest`` / ``ingest_and_wait``: wait for a job, make what it wrote searchable, and
  run the re-ranking pass the index records for ingests (incremental DBA: search/dba.py) over
  what the job wrote, beside the wait (search/dbaingest.py); the outcome carries its summary.
* ``change_model``: move an index to another model: blue/green behind an alias
  (ingest/reindex.py), or in place on an index es-metric does not own (ingest/migrate.py);
  ``abandon_change`` gives either up.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from elasticsearch import Elasticsearch

from ..config import Settings
from ..model.card import read_card
from ..model.runtime import card_for_runtime
from ..types import Mode, ModelCard
from ..search.dbaingest import IngestDba
from . import migrate, reindex
from .enqueue import Job, enqueue, make_searchable, wait
from .sources import Source

Progress = Callable[[int, int, int], None]


@dataclass(frozen=True)
class IngestOutcome:
    """A finished ingest: the job, its counts, and the DBA pass over what it wrote (None: the
    index runs none after ingests, or it was not asked for)."""

    job: Job
    indexed: int
    failed: int
    seconds: float
    dba: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """What ``esm ingest --json`` reports of the wait (JSON-safe)."""
        spent = self.seconds
        return {"indexed": self.indexed, "failed": self.failed, "seconds": round(spent, 1),
                "images_per_s": round((self.indexed + self.failed) / spent, 1) if spent else None,
                "dba": self.dba}


def finish_ingest(settings: Settings, client: Elasticsearch, job: Job, *, timeout: float | None = None,
                  on_progress: Progress | None = None, dba: bool = True) -> IngestOutcome:
    """Wait for ``job``; refresh its index; and, when the index runs DBA after ingests (and
    ``dba``), augment what the job wrote and the neighbourhoods it entered: in steps beside
    the wait while the workers embed, the rest after it (search/dbaingest.py)."""
    started = time.monotonic()
    along = IngestDba(client, job.target, job.started_at, then=on_progress) if dba else None
    try:
        done, failed = wait(settings, job, on_progress=along.progress if along else on_progress,
                            timeout=timeout)
    except BaseException:
        if along:  # no step starts after a failed wait; the one under way ends
            along.stop()
        raise
    seconds = time.monotonic() - started
    make_searchable(client, job)
    passed = along.finish() if along else None
    return IngestOutcome(job, done, failed, seconds, passed)


def ingest_and_wait(settings: Settings, client: Elasticsearch, index: str, source: Source, *,
                    mode: Mode = "index", timeout: float | None = None,
                    on_progress: Progress | None = None, dba: bool = True) -> IngestOutcome:
    """Queue ``source`` for the workers, then ``finish_ingest``."""
    job = enqueue(settings, client, index, source, mode=mode)
    return finish_ingest(settings, client, job, timeout=timeout, on_progress=on_progress, dba=dba)


def model_card(settings: Settings, model_path: str | Path) -> ModelCard:
    """The card of a model file as an index made on this node records it (its runtime)."""
    return card_for_runtime(read_card(model_path), settings.runtime)


def change_model(settings: Settings, client: Elasticsearch, index: str, model_path: str | Path, *,
                 force: bool = False, delete_old: bool = False, timeout: float | None = None,
                 on_progress: Progress | None = None) -> reindex.ReindexResult | migrate.MigrationResult:
    """Move ``index`` to the model at ``model_path``: blue/green when ``index`` is an
    es-metric alias (``delete_old``: drop the old index after the swap), in place when it is
    an index es-metric does not own (a new vector field beside the old one)."""
    path, card = str(Path(model_path).resolve()), model_card(settings, model_path)
    if reindex.in_place(client, index):
        return migrate.change_model(settings, client, index, path, card, force=force, timeout=timeout)
    return reindex.reindex(settings, client, index, path, card, force=force, delete_old=delete_old,
                           timeout=timeout, on_progress=on_progress)


def abandon_change(settings: Settings, client: Elasticsearch, index: str,
                   model_path: str | Path) -> tuple[str, bool]:
    """Give up a change to the model at ``model_path``: (what was removed, in place?) — the new
    field's values of an in-place change, or the half-built index of a blue/green one."""
    model_id = model_card(settings, model_path)["model_id"]
    if reindex.in_place(client, index):
        return migrate.abandon(client, index, model_id), True
    return reindex.abandon(client, index, model_id), False
