"""Follow an index that another application (the shop) writes all day.

Each pass takes the per-shard ``_seq_no`` checkpoints, then reads every document written since
the stored checkpoints up to the ones just taken (a write landing meanwhile is the next pass's:
read by both while its job still runs, it would be queued twice) and queues those whose image
field differs from ``image_ref``: the value
the worker stored beside the vector when it embedded the document (index/imageref.py: a value
over 8 KiB by its digest). New documents have no ``image_ref``; a changed photo differs from
it; a price change, or our own vector write, leaves it equal, so an unchanged document is never
embedded again. A document whose new image is refused loses the vector of its earlier one and
records the refused value, so it is refused once, not on every pass. Then the checkpoints are
stored in Redis (``esm:follow:<index>``): a follower restarted after a crash resumes from there,
and whatever it reads twice is compared again rather than re-embedded.

One follower per index: a redis-py ``Lock`` (a token of the holder's, checked and renewed by
Lua), so a follower that stalled past the lock's TTL cannot renew a lock its successor took,
and stops. During a model change in place (migrate.py) every queued document is embedded by
both models. When the jobs of a pass have finished, the documents they wrote are augmented
(search/dba.py) if the index runs DBA after ingests.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Callable

import redis
from elasticsearch import ApiError, Elasticsearch, TransportError
from redis.exceptions import LockError

from ..config import Settings
from ..errors import EsmError, IndexStateError, LockLost
from ..index.fields import DocFields
from ..index.imageref import is_stale as stale_in, retire
from ..index.indices import IndexInfo, index_info
from ..pids import pid_alive
from ..search.dba import augment_if_recorded
from .enqueue import check_image_field, enqueue, existing_roots, hit_item
from .jobs import JobProgress, redis_client, redis_errors
from .migrate import second_model
from .reindex import changed_since, primary_checkpoints
from .sources import Source

log = logging.getLogger(__name__)
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


def is_stale(source: dict, image_field: str, fields: DocFields | None = None) -> bool:
    """Has the document an image value its vector was not made from (new or changed)?
    ``fields``: the index's layout (fields.py; default: top level)."""
    return stale_in(source, image_field, fields or DocFields.top_level())


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
    source, fields, refused = Source(roots=roots), info.fields, {}
    reads = [state.image_field, fields.image_ref]
    for hit in changed_since(client, info.concrete, since, [], includes=reads, until=now):
        if is_stale(hit["_source"], state.image_field, fields):
            item, records = hit_item(hit, state.image_field, info.concrete, roots, base_dir,
                                     bool(info.photos_field))
            source.add(item, records)
            if item is None:
                refused[hit["_id"]] = fields.read(hit["_source"], state.image_field)
    retire(client, info.concrete, fields, refused)
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
    """One follower per index: a redis-py ``Lock`` whose token names the holder's host and pid
    (plus a random part). Acquire, extend and release are atomic on the token (Lua), so a
    follower that lost the lock (it stalled past the TTL and another took it) cannot renew or
    release it: ``renew`` raises LockLost and the follower stops. A holder on this
    host whose pid is gone (killed) is taken over at once, by deleting exactly its token."""

    def __init__(self, r: redis.Redis, index: str, ttl: float) -> None:
        self.key, self.ttl = state_key(index) + ":lock", max(float(ttl), 1.0)
        self.lock = r.lock(self.key, timeout=self.ttl, thread_local=False)
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

    def acquire(self) -> None:
        if self.lock.acquire(blocking=False, token=self.me):
            return
        holder = (self.lock.redis.get(self.key) or b"").decode(errors="replace")
        host, pid = (holder.split(":") + ["", ""])[:2]
        if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
            try:
                self.lock.do_release(holder)       # exactly the dead holder's token, or nothing
            except LockError:
                pass                                # someone else was quicker
            if self.lock.acquire(blocking=False, token=self.me):
                return
        raise IndexStateError(f"a follower already runs for this index ({holder.rsplit(':', 1)[0]})",
                              hint="stop it first, or wait for its lock to expire")

    def renew(self) -> None:
        """Another TTL from now; LockLost when the lock is no longer this follower's."""
        try:
            self.lock.extend(self.ttl, replace_ttl=True)
        except LockError:
            raise LockLost(f"this follower lost its lock on {self.key.split(':')[2]} (it "
                                  "stalled past the lock's TTL and another follower took over); "
                                  "stopping", hint="the other follower goes on") from None

    def release(self) -> None:
        try:
            self.lock.release()
        except redis.RedisError:  # expired, or another follower's by now (LockError): not ours
            pass


def run_follower(settings: Settings, client: Elasticsearch, index: str, image_field: str, *,
                 base_dir: str | None = None, poll_s: float = 5.0,
                 stop: threading.Event | None = None,
                 on_pass: Callable[[FollowerState, int], None] | None = None,
                 lock_ttl: float | None = None) -> FollowerState:
    """Follow ``index`` until ``stop`` is set (or KeyboardInterrupt). A pass that fails
    because Elasticsearch or Redis is away is logged and tried again at the next poll. The
    lock (``lock_ttl``, default 3 polls + 30 s) is renewed before each pass and before each
    checkpoint is saved: a follower that lost it raises LockLost and writes nothing more."""
    stop = stop or threading.Event()
    r = redis_client(settings)
    with redis_errors(settings):
        info = index_info(client, index)
        check_image_field(info, image_field)
        lock = FollowerLock(r, info.concrete, lock_ttl or 3 * poll_s + 30)
        lock.acquire()
        state = load_state(r, info.concrete)
    if state.image_field != image_field:  # another field: nothing read so far counts
        state.checkpoint = {}
    state.image_field, state.poll_s, state.state = image_field, poll_s, "running"
    state.pid, state.host = os.getpid(), socket.gethostname()
    lost = False
    try:
        while not stop.is_set():
            started = time.monotonic()
            _renew(lock)
            queued = _one_pass(settings, client, state, base_dir)
            state.heartbeat = time.time()
            if _renew(lock):
                _save(r, state)
            if on_pass:
                on_pass(state, queued)
            stop.wait(max(0.0, poll_s - (time.monotonic() - started)))
    except LockLost:
        lost = True  # the successor owns the state now: leave it alone
        raise
    finally:
        if not lost:
            state.state = "stopped"
            if _save(r, state):
                lock.release()
    return state


def _renew(lock: FollowerLock) -> bool:
    """Renew the lock; False when Redis is away (tried again later), LockLost when lost."""
    try:
        lock.renew()
        return True
    except redis.RedisError as exc:
        log.warning("could not renew the follower's lock: %s", exc)
        return False


def _save(r: redis.Redis, state: FollowerState) -> bool:
    try:
        save_state(r, state)
        return True
    except redis.RedisError as exc:  # Redis away: the next pass saves it
        log.warning("could not save the follower's state: %s", exc)
        return False


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
