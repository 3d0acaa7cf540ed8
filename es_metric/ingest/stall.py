"""Is an ingest job still alive? A stall detector for ``wait`` and ``reindex``.

Every task of a job has the id ``<job id>.<n>``, so its tasks can be found where they can be:
waiting in the broker's queue, delivered but not yet acknowledged (a running task, or one a
dead worker held, redelivered after the visibility timeout), or held by a worker (running,
prefetched, or due for a retry). A job without progress for a while and none of its tasks
anywhere is dead: nothing will ever finish it, so waiting for it must end.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from ..config import Settings
from ..errors import JobStalled
from .broker import known_layout, restore
from .celery_app import active_queues, make_app
from .jobs import JobProgress, redis_client, redis_errors

log = logging.getLogger(__name__)


def task_id(job_id: str, n: int) -> str:
    return f"{job_id}.{n}"


def job_of(task: str | None) -> str | None:
    return task.rsplit(".", 1)[0] if task and "." in task else None


@dataclass(frozen=True)
class Activity:
    queued: frozenset[str]     # jobs with a task waiting in the broker's queue
    held: frozenset[str]       # jobs with a task a worker holds (active, reserved, scheduled)
    workers: tuple[str, ...]   # the live workers that consume the queue
    unacked: frozenset[str] = frozenset()  # delivered, not acknowledged (held, or a dead worker's)
    others: tuple[str, ...] = ()  # live workers that answered but consume other queues only
    broker_seen: bool = True  # False: kombu's layout unknown, queued and unacked not looked at

    def alive(self, job_id: str) -> bool:
        """A task waiting or held by a live worker. A task delivered to a worker that died
        (unacked, held by no one answering) is not alive: it comes back after the broker's
        visibility timeout (30 min), or sooner when a wait gives it back (requeue_orphans).
        Without the broker's view every job may be alive."""
        return job_id in self.queued or job_id in self.held or not self.broker_seen


def unacked_tasks(client: redis.Redis) -> list[tuple[bytes, str | None]]:
    """(delivery tag, job id) of every task delivered but not acknowledged; none when the
    installed kombu's layout is unknown (logged)."""
    layout = known_layout()
    return [] if layout is None else [(tag, job_of(task)) for tag, task in layout.unacked(client)]


def broker_jobs(settings: Settings, client: redis.Redis) -> tuple[set[str], set[str]] | None:
    """Jobs with a task waiting in the queue, and jobs with one delivered but not acknowledged;
    None when the installed kombu's layout is unknown."""
    layout = known_layout()
    if layout is None:
        return None
    found = {job for task in layout.queued_task_ids(client, settings.worker_queue)
             if (job := job_of(task)) is not None}
    unacked = {job for _tag, task in layout.unacked(client) if (job := job_of(task)) is not None}
    return found, unacked


def worker_jobs(settings: Settings, workers: tuple[str, ...], timeout: float = 2.0) -> set[str]:
    """Jobs with a task one of ``workers`` holds: running, prefetched, or scheduled for a retry
    (asked of those workers only; the answer comes as soon as all of them replied)."""
    if not workers:
        return set()
    app = make_app(settings)
    found: set[str] = set()
    try:
        inspect = app.control.inspect(destination=list(workers), timeout=timeout, limit=len(workers))
        for replies in (inspect.active(), inspect.reserved(), inspect.scheduled()):
            for tasks in (replies or {}).values():
                for task in tasks:
                    job = job_of((task.get("request") or task).get("id"))
                    if job is not None:
                        found.add(job)
    except Exception as exc:  # noqa: BLE001 - an unreachable broker means "no worker answers"
        log.debug("inspect failed: %s", exc)
    finally:
        app.close()
    return found


def activity(settings: Settings, client: redis.Redis) -> Activity:
    """Where the tasks of every job are now (one look at the broker and the workers)."""
    live = active_queues(settings)
    workers = tuple(sorted(w for w, queues in live.items() if settings.worker_queue in queues))
    seen = broker_jobs(settings, client)
    queued, unacked = seen or (set(), set())
    return Activity(frozenset(queued), frozenset(worker_jobs(settings, workers)), workers,
                    frozenset(unacked), tuple(sorted(set(live) - set(workers))), seen is not None)


def requeue_orphans(settings: Settings, job_id: str, client: redis.Redis) -> int:
    """Give a job's tasks that were delivered but never acknowledged, and that no live worker
    holds, back to the queue now (kombu's own ``restore_by_tag``) instead of after the broker's
    30-min visibility timeout: e.g. a task a worker had taken when Redis restarted and dropped
    on reconnecting, or one a killed worker held. Safe even if a worker did hold it unseen:
    tasks are idempotent (same ids, same documents). Returns how many went back."""
    tags = [tag for tag, job in unacked_tasks(client) if job == job_id]
    if not tags:
        return 0
    app = make_app(settings)
    try:
        with app.connection_for_write() as conn:
            restore(conn.default_channel, tags)
    finally:
        app.close()
    log.warning("job %s: %d task(s) delivered to a worker that no longer holds them went back "
                "to the queue", job_id, len(tags))
    return len(tags)


def stall_error(settings: Settings, job_id: str, counts: tuple[int, int, int], quiet_s: float,
                act: Activity) -> JobStalled | None:
    """Why waiting for a job without progress cannot end, or None when it still can."""
    total, done, failed = counts
    left = total - done - failed
    if job_id in act.held or (job_id in act.queued and act.workers) or not act.broker_seen:
        return None
    if job_id in act.queued:
        return no_consumer_error(settings, job_id, left, total, quiet_s, act.others)
    if job_id in act.unacked:
        return JobStalled(f"job {job_id} stalled: {done} done, {failed} failed of {total}, no progress "
                          f"for {quiet_s:.0f} s; {left} images are held by a worker that is gone "
                          "(the broker gives them back only after its visibility timeout, 30 min)",
                          hint="run the same ingest again: it is idempotent (same ids, same documents)")
    return JobStalled(f"job {job_id} stalled: {done} done, {failed} failed of {total}, no progress "
                      f"for {quiet_s:.0f} s, and none of its tasks is queued or running (lost, "
                      "e.g. the broker's data was lost)",
                      hint="run the same ingest again: it is idempotent (same ids, same documents)")


def no_consumer_error(settings: Settings, job_id: str, left: int, total: int, quiet_s: float,
                      others: tuple[str, ...]) -> JobStalled:
    """Tasks queued, and no live worker consumes their queue (none runs, or those that run
    consume other queues: started with another -Q, or told to cancel this one)."""
    queue = settings.worker_queue
    why = (f"the live workers ({', '.join(others)}) consume other queues" if others else
           "no worker answers")
    return JobStalled(f"job {job_id}: {left} of {total} images wait in the queue {queue!r}, but no "
                      f"live worker consumes that queue ({why}; no progress for {quiet_s:.0f} s)",
                      hint=f"start a worker on it: `esm stack up` (or `celery -A workers.celery_app "
                           f"worker -Q {queue}`), or `celery -A workers.celery_app control "
                           f"add_consumer {queue}`; the tasks stay queued")


def open_jobs(settings: Settings, index: str, client: redis.Redis | None = None) -> dict[str, int]:
    """{job id: total images} of the ingest jobs writing into the concrete ``index`` that have
    not finished and are alive: progress within ``settings.stall_seconds``, or a task of theirs
    queued or running. A dead job (its tasks lost) is logged and left out: it blocks nothing."""
    r = client or redis_client(settings)
    found, act = {}, None
    with redis_errors(settings):
        for key in r.scan_iter(match="esm:job:*", count=500):
            key = key.decode() if isinstance(key, bytes) else key
            if key.endswith((":done", ":failed")):
                continue
            target = r.hget(key, "index")
            if (target.decode() if isinstance(target, bytes) else target) != index:
                continue
            job = JobProgress(settings, key.split(":", 2)[2], r)
            total, done, failed = job.counts()
            if done + failed >= total:
                continue
            if job.idle_seconds() > settings.stall_seconds:
                act = act or activity(settings, r)
                if not act.alive(job.job_id):
                    log.warning("ingest job %s into %s is dead (%d of %d images never finished, "
                                "none of its tasks queued or running): not waiting for it",
                                job.job_id, index, total - done - failed, total)
                    continue
            found[job.job_id] = total
    return found
