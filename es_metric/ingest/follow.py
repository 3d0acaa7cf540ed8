"""Follow an index that another application (the shop) writes all day.

Each pass takes the per-shard ``_seq_no`` checkpoints, then reads every document written since
the stored checkpoints and queues those whose image field differs from ``image_ref``: the value
the worker stored beside the vector when it embedded the document. New documents have no
``image_ref``; a changed photo differs from it; a price change, or our own vector write, leaves
it equal, so an unchanged document is never embedded again. Then the checkpoints are stored in
Redis (``esm:follow:<index>``): a follower restarted after a crash resumes from there, and
whatever it reads twice is compared again rather than re-embedded.

During a model change in place (migrate.py) every queued document is embedded by both models.
When the jobs of a pass have finished, the documents they wrote are augmented (search/dba.py)
if the index runs DBA after ingests.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import redis
from elasticsearch import ApiError, Elasticsearch, TransportError

from ..config import Settings
from ..errors import EsmError, IndexStateError
from ..index.indices import IndexInfo, index_info
from ..pids import pid_alive
from ..search.dba import augment_if_recorded
from .enqueue import enqueue, existing_roots, hit_item
from .jobs import JobProgress, redis_client, redis_errors
from .migrate import second_model
from .reindex import changed_since, primary_checkpoints
from .sources import Source

log = logging.getLogger(__name__)
REF_FIELD = "image_ref"
STATE_TTL = 30 * 24 * 3600


@dataclass
class FollowerState:
    """What a follower keeps in Redis between passes (and what `esm status` shows)."""

    index: str                                   # the concrete index
    image_field: str = "image_path"
    checkpoint: dict[str, int] = field(default_factory=dict)   # shard -> highest _seq_no read
    index_uuid: str = ""
    state: str = "never"                         # running | stopped (a dead one says running)
    pid: int | None = None
    host: str | None = None
    heartbeat: float = 0.0
    poll_s: float = 5.0
    passes: int = 0
    queued: int = 0                              # documents queued since the state was made
    refused: int = 0
    last_pass_at: float = 0.0
    last_error: str | None = None
    jobs: dict[str, float] = field(default_factory=dict)   # open job -> its documents written after


def state_key(index: str) -> str:
    return f"esm:follow:{index}"


def load_state(r: redis.Redis, index: str) -> FollowerState:
    raw = r.get(state_key(index))
    if not raw:
        return FollowerState(index)
    data = json.loads(raw)
    known = {k: v for k, v in data.items() if k in FollowerState.__dataclass_fields__}
    return FollowerState(**known)


def save_state(r: redis.Redis, state: FollowerState) -> None:
    r.set(state_key(state.index), json.dumps(asdict(state)), ex=STATE_TTL)


def is_stale(source: dict, image_field: str) -> bool:
    """Has the document an image reference its vector was not made from (new or changed)?"""
    ref = source.get(image_field)
    return ref not in (None, "") and source.get(REF_FIELD) != ref


def index_uuid(client: Elasticsearch, concrete: str) -> str:
    """Changes when the index is deleted and made again (its sequence numbers start over)."""
    return client.indices.get_settings(index=concrete)[concrete]["settings"]["index"]["uuid"]


def queue_documents(settings: Settings, client: Elasticsearch, info: IndexInfo,
                    source: Source) -> list[str]:
    """Queue the items for the index's model, and for the next model while one fills its
    field; returns the job ids."""
    jobs = [enqueue(settings, client, info.name, source, mode="update").job_id]
    other = second_model(info)
    if other and source.items:
        jobs.append(enqueue(settings, client, info.name, Source(source.items, [], source.roots),
                            mode="update", model=other).job_id)
    return jobs


def follow_pass(settings: Settings, client: Elasticsearch, state: FollowerState,
                base_dir: str | None = None) -> int:
    """One pass (see the module doc); returns how many documents it queued."""
    info = index_info(client, state.index)
    uuid = index_uuid(client, info.concrete)
    if uuid != state.index_uuid:  # a new index of that name: read it from the start
        state.checkpoint, state.index_uuid = {}, uuid
    taken_at, now = time.time(), primary_checkpoints(client, info.concrete)
    since = {shard: state.checkpoint.get(shard, -1) for shard in now}
    roots = existing_roots(settings, client, info.concrete, base_dir)
    source = Source(roots=roots)
    for hit in changed_since(client, info.concrete, since, [], includes=[state.image_field, REF_FIELD]):
        if is_stale(hit["_source"], state.image_field):
            item, refused = hit_item(hit, state.image_field, info.concrete, roots, base_dir)
            (source.items if item else source.refused).append(item or refused)
    if source.items or source.refused:
        written_after = state.last_pass_at or taken_at  # documents read now were written since
        for job_id in queue_documents(settings, client, info, source):
            state.jobs[job_id] = written_after
    state.checkpoint, state.last_pass_at = now, taken_at
    state.queued += len(source.items)
    state.refused += len(source.refused)
    before, state.jobs = state.jobs, open_jobs(settings, state.jobs)
    finished = [since for job_id, since in before.items() if job_id not in state.jobs]
    if finished:  # what they wrote, augmented (and the neighbourhoods it entered), as an ingest does
        augment_if_recorded(client, state.index, started_at=min(finished))
    return len(source.items)


def open_jobs(settings: Settings, jobs: dict[str, float]) -> dict[str, float]:
    """The jobs of ``jobs`` that have images neither indexed nor failed yet."""
    still = {}
    for job_id, since in jobs.items():
        total, done, failed = JobProgress(settings, job_id).counts()
        if total == 0 or done + failed < total:
            still[job_id] = since
    return still


class FollowerLock:
    """One follower per index: a Redis key with the holder's host and pid, renewed each pass.
    A holder on this host whose pid is gone (killed) is taken over at once."""

    def __init__(self, r: redis.Redis, index: str, ttl: float) -> None:
        self.r, self.key, self.ttl = r, state_key(index) + ":lock", max(int(ttl), 10)
        self.me = f"{socket.gethostname()}:{os.getpid()}"

    def acquire(self) -> None:
        if self.r.set(self.key, self.me, nx=True, ex=self.ttl):
            return
        holder = (self.r.get(self.key) or b"").decode()
        host, _, pid = holder.rpartition(":")
        if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
            self.r.set(self.key, self.me, ex=self.ttl)
            return
        raise IndexStateError(f"a follower already runs for this index ({holder})",
                              hint="stop it first, or wait for its lock to expire")

    def renew(self) -> None:
        self.r.set(self.key, self.me, ex=self.ttl)

    def release(self) -> None:
        if (self.r.get(self.key) or b"").decode() == self.me:
            self.r.delete(self.key)


def run_follower(settings: Settings, client: Elasticsearch, index: str, image_field: str, *,
                 base_dir: str | None = None, poll_s: float = 5.0,
                 stop: threading.Event | None = None,
                 on_pass: Callable[[FollowerState, int], None] | None = None) -> FollowerState:
    """Follow ``index`` until ``stop`` is set (or KeyboardInterrupt). A pass that fails
    because Elasticsearch or Redis is away is logged and tried again at the next poll."""
    stop = stop or threading.Event()
    r = redis_client(settings)
    with redis_errors(settings):
        concrete = index_info(client, index).concrete
        lock = FollowerLock(r, concrete, 3 * poll_s + 30)
        lock.acquire()
        state = load_state(r, concrete)
    if state.image_field != image_field:  # another field: nothing read so far counts
        state.checkpoint = {}
    state.image_field, state.poll_s, state.state = image_field, poll_s, "running"
    state.pid, state.host = os.getpid(), socket.gethostname()
    try:
        while not stop.is_set():
            started = time.monotonic()
            queued = _one_pass(settings, client, state, base_dir)
            state.heartbeat = time.time()
            try:
                save_state(r, state)
                lock.renew()
            except redis.RedisError as exc:  # Redis away: the next pass saves it
                log.warning("could not save the follower's checkpoint: %s", exc)
            if on_pass:
                on_pass(state, queued)
            stop.wait(max(0.0, poll_s - (time.monotonic() - started)))
    finally:
        state.state = "stopped"
        try:
            save_state(r, state)
            lock.release()
        except redis.RedisError as exc:
            log.warning("could not record the follower's stop: %s", exc)
    return state


def _one_pass(settings: Settings, client: Elasticsearch, state: FollowerState,
              base_dir: str | None) -> int:
    try:
        queued = follow_pass(settings, client, state, base_dir)
        state.passes, state.last_error = state.passes + 1, None
        return queued
    except (EsmError, TransportError, ApiError, redis.RedisError) as exc:
        state.last_error = f"{type(exc).__name__}: {exc}"[:500]
        log.warning("follow pass on %s failed, trying again: %s", state.index, state.last_error)
        return 0
