"""Ingest job state in Redis: the job's total and sets of done and failed image references
(idempotent), and the Redis client that keeps it."""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Iterable, Iterator

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ..config import Settings
from ..errors import ClusterUnavailable, ConfigError
from ..redact import redact_url

log = logging.getLogger(__name__)

JOB_TTL = 7 * 24 * 3600


class _Retry(Retry):
    """Retries a lost connection, never a refused password (that is not going to change)."""

    def call_with_retry(self, do, fail, is_retryable=None, **kw):
        def retryable(err: Exception) -> bool:
            return not isinstance(err, redis.AuthenticationError) and (is_retryable is None or is_retryable(err))
        return super().call_with_retry(do, fail, retryable, **kw)


def redis_client(settings: Settings) -> redis.Redis:
    """A client that rides out a short Redis restart (about 30 s of retries with backoff)."""
    return redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=10,
                                retry=_Retry(ExponentialBackoff(cap=5, base=0.1), 12),
                                retry_on_error=[redis.ConnectionError, redis.TimeoutError])


class JobProgress:
    def __init__(self, settings: Settings, job_id: str, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.job_id = job_id
        self.redis = client or redis_client(settings)
        self.key = f"esm:job:{job_id}"

    def start(self, total: int, **info) -> None:
        with self._errors():
            pipe = self.redis.pipeline()
            stamp = time.time()
            pipe.hset(self.key, mapping={"total": total, "created": stamp, "updated": stamp,
                                         **{k: str(v) for k, v in info.items()}})
            pipe.expire(self.key, JOB_TTL)
            pipe.execute()

    def record(self, done: Iterable[str], failed: Iterable[str]) -> None:
        done, failed = list(done), list(failed)
        with self._errors():
            pipe = self.redis.pipeline()
            if done:
                pipe.sadd(self.key + ":done", *done)
                pipe.srem(self.key + ":failed", *done)
            if failed:
                pipe.sadd(self.key + ":failed", *failed)
            pipe.hset(self.key, "updated", time.time())
            for suffix in ("", ":done", ":failed"):
                pipe.expire(self.key + suffix, JOB_TTL)
            pipe.execute()

    def delivery(self, task_id: str, retries: int) -> int:
        """How many times this try of a task has started: Celery delivers a task again when
        the worker process running it died (killed, out of memory, a crash in a decoder)."""
        with self._errors():
            pipe = self.redis.pipeline()
            pipe.hincrby(self.key + ":deliveries", f"{task_id}:{retries}", 1)
            pipe.expire(self.key + ":deliveries", JOB_TTL)
            return int(pipe.execute()[0])

    def counts(self) -> tuple[int, int, int]:
        """(total, done, failed)."""
        with self._errors():
            pipe = self.redis.pipeline()
            pipe.hget(self.key, "total")
            pipe.scard(self.key + ":done")
            pipe.scard(self.key + ":failed")
            total, done, failed = pipe.execute()
        return int(total or 0), int(done), int(failed)

    def finished(self) -> set[str]:
        """The keys of the images done or failed."""
        with self._errors():
            members = self.redis.sunion([self.key + ":done", self.key + ":failed"])
        return {m.decode() if isinstance(m, bytes) else m for m in members}

    def idle_seconds(self) -> float:
        """Seconds since the job last recorded progress (or was created)."""
        with self._errors():
            stamp = self.redis.hget(self.key, "updated") or self.redis.hget(self.key, "created")
        return time.time() - float(stamp) if stamp else float("inf")

    def _errors(self):
        return redis_errors(self.settings)


@contextmanager
def redis_errors(settings: Settings) -> Iterator[None]:
    """Redis refusing the password becomes ConfigError, Redis away ClusterUnavailable (with
    the URL's password masked)."""
    try:
        yield
    except redis.AuthenticationError:
        raise ConfigError(f"Redis at {redact_url(settings.redis_url)} refused the credentials",
                          hint="check the password in ESM_REDIS_URL") from None
    except (redis.ConnectionError, redis.TimeoutError):
        raise ClusterUnavailable(f"cannot reach Redis at {redact_url(settings.redis_url)}",
                                 hint="start it with `esm stack up`, or set ESM_REDIS_URL") from None
