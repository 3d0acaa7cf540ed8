"""`esm status INDEX`: documents still without a vector, how long the oldest has waited, and
what the follower does (read-only: Elasticsearch counts and the follower's state in Redis)."""
from __future__ import annotations

import socket
import time

from elasticsearch import Elasticsearch

from ..config import Settings
from ..index.dbafields import DbaFields
from ..index.indices import index_info
from ..pids import pid_alive
from ..search.dba import not_augmented
from .follow import FollowerState, load_state, open_jobs, state_key
from .jobs import redis_client, redis_errors
from .migrate import missing_query

DEAD_AFTER_POLLS = 3


def follower_view(state: FollowerState, now: float) -> dict:
    """The follower's state for people: running, stopped, dead (no heartbeat), or never."""
    shown = state.state
    age = now - state.heartbeat if state.heartbeat else None
    gone = state.host == socket.gethostname() and state.pid and not pid_alive(state.pid)
    if shown == "running" and (gone or age is not None and age > DEAD_AFTER_POLLS * state.poll_s + 30):
        shown = "dead"  # killed: it never said it stopped
    return {"state": shown, "image_field": state.image_field, "pid": state.pid, "host": state.host,
            "heartbeat_age_s": round(age, 1) if age is not None else None, "poll_s": state.poll_s,
            "passes": state.passes, "queued": state.queued, "refused": state.refused,
            "open_jobs": len(state.jobs), "checkpoint": state.checkpoint,
            "last_error": state.last_error}


def lag_seconds(settings: Settings, state: FollowerState, now: float) -> float:
    """Age of the oldest queued document not yet indexed or failed, from the start of the
    poll interval in which it was written (an upper bound by at most one interval); 0 when
    nothing the follower queued waits."""
    waiting = open_jobs(settings, state.jobs)
    return round(max(0.0, now - min(waiting.values())), 2) if waiting else 0.0


def index_status(settings: Settings, client: Elasticsearch, index: str) -> dict:
    """The JSON `esm status --json` prints (``without_vector``, ``lag_s``, ``follower``...)."""
    info = index_info(client, index)
    with redis_errors(settings):
        r = redis_client(settings)
        state, followed = load_state(r, info.concrete), bool(r.exists(state_key(info.concrete)))
        now = time.time()
        lag = lag_seconds(settings, state, now)
    client.indices.refresh(index=info.concrete)
    # the followed image field; never followed: the image es-metric recorded (fields.py)
    field = state.image_field if followed else info.fields.image_path
    without = client.count(index=info.concrete, query={"bool": {
        "filter": [{"exists": {"field": field}}], "must_not": [info.fields.has_vector()]}})["count"]
    out = {"index": info.name, "concrete": info.concrete, "model_id": info.model_id,
           "vector_field": info.vector_field,
           "documents": client.count(index=info.concrete)["count"],
           "without_vector": int(without), "lag_s": lag, "follower": follower_view(state, now)}
    if info.dba_raw:  # what the next `esm dba INDEX` would augment
        out["not_augmented"] = int(client.count(index=info.concrete, query=not_augmented(
            DbaFields.of(info.fields)))["count"])
    moving = info.migration
    if moving is not None:
        missing = client.count(index=info.concrete,
                               query=missing_query(info.fields.with_vector(moving.vector_field)))
        out["migration"] = {"state": moving.state, "to_model": moving.model_id,
                            "from_model": moving.from_model_id,
                            "field": moving.vector_field, "missing": int(missing["count"])}
    return out
