"""kombu's Redis transport read from outside: the one module that knows its private layout.

kombu keeps a queue as Redis lists (one per priority step: ``queue``, ``queue\\x06\\x163`` ...) and
the tasks delivered but not acknowledged in the hash ``unacked`` (``[message, exchange, routing
key]`` by delivery tag). None of this is kombu's public API, so the layout is taken from kombu's
own ``Channel`` class and used only with a kombu version it was checked against
(``WRITTEN_FOR``). Outside that range :func:`redis_layout` raises ``BrokerUnsupported``, and
:func:`known_layout`, for callers that only observe (the stall detector, the queue-depth metric),
logs it once and answers None: they go on without the broker's view; nothing guesses at an
unknown layout.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version as installed_version
from typing import Any, Iterator

import redis

from ..errors import BrokerUnsupported

log = logging.getLogger(__name__)

#: The kombu versions whose Redis layout this module was written for and tested with: [low, high).
WRITTEN_FOR = ((5, 3), (5, 8))
PAGE = 500  # list items / hash fields read per Redis call


def parse_version(text: str) -> tuple[int, int]:
    parts = text.split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def check_version(text: str) -> None:
    """BrokerUnsupported unless kombu ``text`` lies in WRITTEN_FOR."""
    low, high = WRITTEN_FOR
    if not low <= parse_version(text) < high:
        raise BrokerUnsupported(
            f"kombu {text} is outside the versions whose Redis layout es_metric reads "
            f"({low[0]}.{low[1]} to before {high[0]}.{high[1]})",
            hint=f"install kombu>={low[0]}.{low[1]},<{high[0]}.{high[1]}, or check "
                 "es_metric/ingest/broker.py against the new kombu and widen WRITTEN_FOR")


@dataclass(frozen=True)
class RedisLayout:
    """Where kombu's Redis transport keeps queues and unacknowledged deliveries."""

    sep: str
    priority_steps: tuple[int, ...]
    unacked_key: str

    def queue_keys(self, queue: str) -> tuple[str, ...]:
        """The lists of ``queue``, one per priority step (step 0 is the queue's own name)."""
        return tuple(f"{queue}{self.sep}{p}" if p else queue for p in self.priority_steps)

    def depth(self, client: redis.Redis, queue: str) -> int:
        """Tasks waiting in ``queue``, every priority counted."""
        with client.pipeline(transaction=False) as pipe:
            for key in self.queue_keys(queue):
                pipe.llen(key)
            return sum(int(n) for n in pipe.execute())

    def queued_task_ids(self, client: redis.Redis, queue: str) -> Iterator[str]:
        """The task id of every message waiting in ``queue``."""
        for key in self.queue_keys(queue):
            for start in range(0, int(client.llen(key)), PAGE):
                for raw in client.lrange(key, start, start + PAGE - 1):
                    if (task := task_id_of(raw)) is not None:
                        yield task

    def unacked(self, client: redis.Redis) -> Iterator[tuple[bytes, str | None]]:
        """(delivery tag, task id) of every message delivered and not acknowledged."""
        for tag, raw in client.hscan_iter(self.unacked_key, count=PAGE):
            yield tag, task_id_of(raw)


def task_id_of(raw: bytes | str) -> str | None:
    """The task id in a message as kombu stores it (an unacked entry wraps it in a list)."""
    try:
        message = json.loads(raw)
        if isinstance(message, list):  # an unacked entry: [message, exchange, routing key]
            message = message[0]
        task = (message.get("headers") or {}).get("id")
        return task if isinstance(task, str) else None
    except (ValueError, TypeError, AttributeError, IndexError):
        return None


@cache
def _installed() -> RedisLayout | BrokerUnsupported:
    try:
        check_version(installed_version("kombu"))
    except BrokerUnsupported as exc:
        log.warning("the broker's queues and deliveries are not read: %s (%s)", exc.message, exc.hint)
        return exc
    from kombu.transport.redis import Channel

    return RedisLayout(Channel.sep, tuple(Channel.priority_steps), Channel.unacked_key)


def redis_layout() -> RedisLayout:
    """The layout of the installed kombu; BrokerUnsupported outside WRITTEN_FOR."""
    found = _installed()
    if isinstance(found, BrokerUnsupported):
        raise found
    return found


def known_layout() -> RedisLayout | None:
    """The layout, or None outside WRITTEN_FOR (logged once per process): for observers."""
    found = _installed()
    return None if isinstance(found, BrokerUnsupported) else found


def restore(channel: Any, tags: list[bytes]) -> None:
    """Give unacknowledged deliveries back to their queue's head (the Redis channel's QoS
    ``restore_by_tag``, itself not public API: BrokerUnsupported outside WRITTEN_FOR)."""
    redis_layout()
    for tag in tags:
        channel.qos.restore_by_tag(tag, leftmost=True)
