"""The local development stack as a whole: a real single-node Elasticsearch, Redis and a
Celery worker.

``up`` is idempotent and records what it started (pids) in ``<stack_dir>/run/stack.json``;
``down`` stops exactly those processes by pid. A service the user already runs (``ESM_ES_URL`` /
``ESM_REDIS_URL`` set, or something already answering on the port) is used, never touched.
"""
from __future__ import annotations

from ..config import Settings
from ..ingest.celery_app import worker_ping
from ..redact import redact_url
from .es_node import es_health, es_node_info, start_es
from .redis_server import redis_ping, start_redis
from .state import Component, load_state, managed, record, stop_component
from .worker import start_worker, worker_pidfile


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
    names = [k for k in state if k.startswith("worker")] + [k for k in ("redis", "es") if k in state]
    return [name for name in names
            if stop_component(settings, name, timeout=30 if name.startswith("worker") else 60)]


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
    names = worker_ping(settings) if rinfo else []
    wname = worker_pidfile(settings).stem
    wpid, alive = record(settings, wname)[0], managed(settings, wname)
    detail = (", ".join(names) if names else
              "process alive but not answering pings (e.g. after a broker restart)" if alive else
              "no worker answers")
    worker = Component("worker", bool(names) or alive, alive, f"queue {settings.worker_queue}", detail, wpid)
    return [es, redis, worker]
