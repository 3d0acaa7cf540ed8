"""The local development stack as a whole: a real single-node Elasticsearch, Redis and a
Celery worker.

``up`` is idempotent and records what it started (pids) in ``<stack_dir>/run/stack.json``;
``down`` stops exactly those processes by pid. A service the user already runs (``ESM_ES_URL`` /
``ESM_REDIS_URL`` set, or something already answering on the port) is used, never touched.
"""
from __future__ import annotations

import time
from datetime import datetime

from ..config import Settings
from ..ingest.celery_app import worker_ping
from ..redact import redact_url
from .es_node import es_health, es_node_info, start_es
from .redis_server import redis_ping, start_redis
from .state import Component, load_state, managed, record, stop_component
from .worker import SUPERVISOR_STOP_TIMEOUT, start_worker, supervisor_name, worker_pidfile


def up(settings: Settings, *, worker: bool = True, concurrency: int | None = None) -> list[Component]:
    """Start whatever is missing; return what runs. Safe to call again."""
    comps = [start_es(settings),
             start_redis(settings)]
    if worker:
        comps.append(start_worker(settings, concurrency))
    return comps


def down(settings: Settings) -> list[str]:
    """Stop exactly the processes ``up`` started, by pid; return their names."""
    state = load_state(settings)
    names = ([k for k in state if k.startswith("supervisor")] + [k for k in state if k.startswith("worker")]
             + [k for k in ("redis", "es") if k in state])
    timeouts = {"supervisor": SUPERVISOR_STOP_TIMEOUT, "worker": 30}
    return [name for name in names
            if stop_component(settings, name, timeout=timeouts.get(name.split("-")[0], 60))]


def status(settings: Settings) -> list[Component]:
    """What runs, where, which versions; never starts anything."""
    state = load_state(settings)
    health = es_health(settings)
    if health:
        info = es_node_info(settings)
        detail = f"Elasticsearch {info.get('version', '?')} (JVM {info.get('jvm', '?')}), health {health}"
    else:
        detail = "not reachable"
    es = Component("elasticsearch", bool(health), managed(settings, "es"),
                   redact_url(settings.es_url), detail, state.get("es", {}).get("pid"))
    rinfo = redis_ping(settings)
    redis = Component("redis", rinfo is not None, managed(settings, "redis"),
                      redact_url(settings.redis_url),
                      f"Redis {rinfo['redis_version']}" if rinfo else "not reachable",
                      state.get("redis", {}).get("pid"))
    return [es, redis, _worker_status(settings, worker_ping(settings) if rinfo else [])]


def _worker_status(settings: Settings, names: list[str]) -> Component:
    """The worker: who answers, and what its supervisor did (restarts, the last exit)."""
    wname, sname = worker_pidfile(settings).stem, supervisor_name(settings)
    wpid, alive = record(settings, wname)[0], managed(settings, wname)
    detail = (", ".join(names) if names else
              "process alive but not answering pings (e.g. after a broker restart)" if alive else
              "no worker answers")
    sup = load_state(settings).get(sname, {})
    supervised = managed(settings, sname)
    if supervised:
        detail += f"; {supervision_detail(sup, alive, time.time())}"
    elif sup:
        detail += "; its supervisor is gone (nothing restarts it: `esm stack restart-worker`)"
    return Component("worker", bool(names) or alive, alive or supervised, f"queue {settings.worker_queue}",
                     detail, wpid, sup.get("restarts", 0) if supervised else None)


def supervision_detail(sup: dict, worker_alive: bool, now: float) -> str:
    """``supervised (pid P), restarted N times, last: exit 1 at 14:32:05[, restarting in 4 s]``."""
    restarts = sup.get("restarts", 0)
    text = f"supervised (pid {sup.get('pid')}), restarted {restarts} time{'' if restarts == 1 else 's'}"
    if restarts and sup.get("last_exit_at"):
        when = datetime.fromtimestamp(sup["last_exit_at"]).strftime("%H:%M:%S")
        text += f", last: {sup.get('last_exit', '?')} at {when}"
    if not worker_alive and sup.get("next_start_at"):
        text += f", restarting in {max(0.0, sup['next_start_at'] - now):.0f} s"
    return text
