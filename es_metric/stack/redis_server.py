"""Redis for the local stack: a ``redis-server`` (installed with apt-get when missing and we
are root), append-only so queued tasks survive a restart."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time

import redis

from ..config import Settings
from ..errors import StackError
from ..redact import redact_url
from .procs import read_pid
from .state import Component, managed, remember, run_dir

log = logging.getLogger(__name__)

REDIS_PACKAGE = "redis-server"


def redis_ping(settings: Settings) -> dict | None:
    """Redis ``INFO server`` if it answers, else None."""
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
        if redis_ping(settings) is not None and (pid := read_pid(pidfile)):
            remember(settings, "redis", pid)
            return Component("redis", True, True, where, "started", read_pid(pidfile))
        time.sleep(0.1)
    raise StackError("redis-server did not start", hint=f"see {logs / 'redis.log'}")
