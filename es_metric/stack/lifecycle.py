"""The local development stack: a real single-node Elasticsearch, Redis and a Celery worker.

``up`` is idempotent and records what it started (pids) in ``<stack_dir>/run/stack.json``;
``down`` stops exactly those processes by pid. A service the user already runs (``ESM_ES_URL`` /
``ESM_REDIS_URL`` set, or something already answering on the port) is used, never touched.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..errors import StackError
from ..ingest.celery_app import worker_ping
from ..redact import redact_url
from .es_node import es_health, es_node_info, start_es
from .procs import identity, read_pid, still_running, stop_pid

log = logging.getLogger(__name__)

REDIS_PACKAGE = "redis-server"


@dataclass
class Component:
    """What ``status`` reports for one service."""

    name: str
    running: bool
    managed: bool  # started by ``esm stack up`` (and so stopped by ``down``)
    where: str
    detail: str = ""
    pid: int | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def run_dir(settings: Settings) -> Path:
    path = settings.stack_dir / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _state_path(settings: Settings) -> Path:
    return run_dir(settings) / "stack.json"


def load_state(settings: Settings) -> dict:
    path = _state_path(settings)
    return json.loads(path.read_text()) if path.exists() else {}


def _save_state(settings: Settings, state: dict) -> None:
    _state_path(settings).write_text(json.dumps(state, indent=2))


def _remember(settings: Settings, name: str, pid: int, **extra) -> None:
    """Record a started process with its identity (so that a reused pid is never signalled)."""
    state = load_state(settings)
    state[name] = {"pid": pid, "identity": identity(pid), **extra}
    _save_state(settings, state)


def _record(settings: Settings, name: str) -> tuple[int | None, dict | None, Path]:
    """(pid, identity, pid file) of the process ``up`` recorded as ``name``."""
    entry = load_state(settings).get(name, {})
    pidfile = run_dir(settings) / f"{name}.pid"
    return entry.get("pid") or read_pid(pidfile), entry.get("identity"), pidfile


def managed(settings: Settings, name: str) -> bool:
    """The process recorded as ``name`` still runs (and is still that process)."""
    return still_running(*_record(settings, name))


def stop_component(settings: Settings, name: str, timeout: float) -> bool:
    """Stop the process recorded as ``name`` if it is still that process; forget the record."""
    pid, ident, pidfile = _record(settings, name)
    stopped = stop_pid(pid, signal.SIGTERM, timeout, recorded=ident, pidfile=pidfile, name=name)
    _forget(settings, name)
    return stopped


def _forget(settings: Settings, name: str) -> None:
    state = load_state(settings)
    state.pop(name, None)
    _save_state(settings, state)


# --------------------------------------------------------------------------- Redis

def redis_ping(settings: Settings) -> dict | None:
    """Redis ``INFO server`` if it answers, else None."""
    import redis

    try:
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1, socket_timeout=2)
        return client.info("server")
    except redis.RedisError:
        return None


def _redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0:
        raise StackError("redis-server is not installed",
                         hint=f"install it: sudo apt-get install -y {REDIS_PACKAGE}")
    log.info("installing %s with apt-get", REDIS_PACKAGE)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", REDIS_PACKAGE]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise StackError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-400:]}")
    return shutil.which("redis-server") or "/usr/bin/redis-server"


def start_redis(settings: Settings) -> Component:
    where = redact_url(settings.redis_url)
    if redis_ping(settings) is not None:
        return Component("redis", True, managed(settings, "redis"), where, "already running")
    if settings.redis_external:
        raise StackError(f"Redis at {where} (ESM_REDIS_URL) does not answer",
                         hint="start it, or unset ESM_REDIS_URL to let esm run a local one")
    binary = _redis_binary()
    data = settings.stack_dir / "redis"
    logs = settings.stack_dir / "logs"
    data.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    pidfile = run_dir(settings) / "redis.pid"
    cmd = [binary, "--bind", "127.0.0.1", "--port", str(settings.redis_port),
           "--daemonize", "yes", "--pidfile", str(pidfile), "--dir", str(data),
           "--logfile", str(logs / "redis.log"), "--appendonly", "yes", "--save", ""]
    subprocess.run(cmd, check=True)
    for _ in range(50):
        if redis_ping(settings) is not None and read_pid(pidfile):
            _remember(settings, "redis", read_pid(pidfile))
            return Component("redis", True, True, where, "started", read_pid(pidfile))
        time.sleep(0.1)
    raise StackError("redis-server did not start", hint=f"see {logs / 'redis.log'}")


# --------------------------------------------------------------------------- Celery worker

def worker_pidfile(settings: Settings) -> Path:
    suffix = "" if settings.worker_queue == "esm" else f"-{settings.worker_queue}"
    return run_dir(settings) / f"worker{suffix}.pid"


def start_worker(settings: Settings, concurrency: int | None = None) -> Component:
    pidfile = worker_pidfile(settings)
    if managed(settings, pidfile.stem):
        return Component("worker", True, True, settings.worker_queue, "already running",
                         _record(settings, pidfile.stem)[0])
    logs = settings.stack_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    conc = concurrency or settings.worker_concurrency
    name = f"{settings.worker_queue}-{os.getpid()}"
    cmd = [sys.executable, "-m", "celery", "-A", "es_metric.ingest.celery_app", "worker",
           "-Q", settings.worker_queue, "--concurrency", str(conc), "--loglevel", "INFO",
           "--pidfile", str(pidfile), "--logfile", str(logs / f"{pidfile.stem}-%i.log"),
           "--hostname", f"{name}@%h", "--detach"]
    env = {**os.environ, **settings.with_(worker_concurrency=conc).as_env()}
    subprocess.run(cmd, check=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pid = read_pid(pidfile)
        if pid and any(n.startswith(name + "@") for n in worker_ping(settings, timeout=1.0)):
            _remember(settings, pidfile.stem, pid, concurrency=conc)
            return Component("worker", True, True, settings.worker_queue,
                             f"started, {conc} process(es)", pid)
        time.sleep(0.5)
    raise StackError("the Celery worker did not answer within 60 s",
                     hint=f"see {logs}/worker-0.log")


def stop_worker(settings: Settings) -> bool:
    return stop_component(settings, worker_pidfile(settings).stem, timeout=30)


# --------------------------------------------------------------------------- whole stack

def up(settings: Settings, *, worker: bool = True, concurrency: int | None = None) -> list[Component]:
    """Start whatever is missing; return what runs. Safe to call again."""
    comps = [start_es(settings, remember=_remember, state=load_state(settings)),
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
    wpid, alive = _record(settings, wname)[0], managed(settings, wname)
    detail = (", ".join(names) if names else
              "process alive but not answering pings (e.g. after a broker restart)" if alive else
              "no worker answers")
    worker = Component("worker", bool(names) or alive, alive, f"queue {settings.worker_queue}", detail, wpid)
    return [es, redis, worker]

