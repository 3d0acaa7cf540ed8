"""The Celery app: broker, serializer and reliability settings, the task name that is the
contract with other applications, and which workers answer. Tasks live in tasks.py."""
from __future__ import annotations

import logging
import re

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, celeryd_init

from ..config import Settings
from ..redact import install_log_filter
from . import promfiles

log = logging.getLogger(__name__)

#: The embedding task's name and its JSON arguments ``[job spec, items]`` are a contract:
#: applications other than ``esm`` may send it. Never rename it.
TASK_NAME = "es_metric.embed_batch"

# Longest a task may run; the broker's visibility timeout must exceed it, or Redis would
# redeliver a task that is still running (and it would be written twice, harmlessly but wastefully).
TASK_TIME_LIMIT = 15 * 60
VISIBILITY_TIMEOUT = 2 * TASK_TIME_LIMIT
# kombu's Redis transport: without a socket timeout a command on a connection that died without
# closing (failover, NAT, a paused VM) waits forever, e.g. a publish or an inspect of `--wait`.
BROKER_OPTIONS = {"visibility_timeout": VISIBILITY_TIMEOUT, "socket_timeout": 30,
                  "socket_connect_timeout": 5}


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or Settings.from_env()
    app = Celery("es_metric", broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=TASK_TIME_LIMIT,
        task_soft_time_limit=TASK_TIME_LIMIT - 60,
        broker_transport_options=BROKER_OPTIONS,
        result_backend_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        result_expires=24 * 3600,
        task_default_queue=settings.worker_queue,
        broker_connection_retry=True,             # reconnect after losing Redis (the default) ...
        broker_connection_retry_on_startup=True,  # ... and when it is not up yet at start
        # A task running when Redis goes away finishes and writes (its documents are idempotent);
        # if its ack is lost with the connection, it is redelivered and rewrites the same ids.
        # True would kill the pool process mid-batch instead (Celery 6's default): set, not
        # inherited, so the choice is ours and the deprecation warning is silent.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        include=["es_metric.ingest.tasks"],
    )
    return app


@celeryd_init.connect
def _worker_metrics(**_kw) -> None:
    """Before the task modules (and prometheus_client) are imported: the metrics' folder."""
    promfiles.prepare(Settings.from_env())


app = make_app()


def worker_ping(settings: Settings, timeout: float = 2.0) -> list[str]:
    """Hostnames of the Celery workers of ``settings.worker_queue`` answering a broadcast ping."""
    ping_app = make_app(settings)
    try:
        replies = ping_app.control.ping(timeout=timeout) or []
    except Exception as exc:  # the broker may be down: that means "no worker answers"
        log.debug("worker ping failed: %s", exc)
        return []
    finally:
        ping_app.close()
    mine = re.compile(rf"^{re.escape(settings.worker_queue)}-\d+@")
    return sorted(name for reply in replies for name in reply if mine.match(name))


def active_queues(settings: Settings, timeout: float = 2.0) -> dict[str, tuple[str, ...]]:
    """{worker hostname: the queues it consumes now} of every live worker on this broker, any
    name (Celery's inspect ``active_queues``: a worker whose consumer stopped, or that was told
    to cancel a queue, no longer lists it). Empty when the broker cannot be reached."""
    app = make_app(settings)
    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception as exc:  # noqa: BLE001 - the broker may be down: that means "no worker answers"
        log.debug("inspect active_queues failed: %s", exc)
        return {}
    finally:
        app.close()
    return {name: tuple(q.get("name", "") for q in queues or ()) for name, queues in replies.items()}


@after_setup_logger.connect
@after_setup_task_logger.connect
def _redact_logs(logger, **_kw) -> None:
    """Secrets (ESM_* passwords, API keys, URL passwords) scrubbed from every worker log line.

    Celery masks the broker password in its own lines; this covers everything else a worker
    logs, exception messages and tracebacks included."""
    install_log_filter(Settings.from_env().secrets(), logger)
