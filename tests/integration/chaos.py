"""Chaos soak: images ingested in waves while the local stack's worker, Redis and Elasticsearch
are killed and restarted at random moments (by pid, from the stack's own records). At the end
every image must be indexed exactly once, or recorded as failed with a reason.

Used by bench/soak.py (thousands of images, minutes of chaos) and by the short CI version in
tests/integration/test_soak.py.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from es_metric.config import Settings
from es_metric.errors import ClusterUnavailable, JobStalled
from es_metric.index.failures import list_failures
from es_metric.index.indices import count, create_versioned_index
from es_metric.ingest.enqueue import Job, enqueue, wait
from es_metric.ingest.jobs import JobProgress
from es_metric.ingest.sources import Source, folder_items
from es_metric.model.modelfile import read_card
from es_metric.stack import lifecycle, worker
from es_metric.stack.procs import pid_alive, stop_pid
from es_metric.stack.redis_server import start_redis
from es_metric.stack.state import load_state, record
from tests.imagegen import make_image
from tests.integration.faults import start_es_again, worker_children, worker_main

log = logging.getLogger("esm.chaos")


def make_images(root: Path, n: int, seed: int) -> Path:
    """``n`` small distinct JPEGs in ``root`` (10 sub-folders)."""
    rng = random.Random(seed)
    for i in range(n):
        folder = root / f"c{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        make_image(i % 6, rng, size=64).save(folder / f"img_{i:05d}.jpg", "JPEG", quality=90)
    return root


@dataclass
class Chaos:
    """Kills one of worker / Redis / Elasticsearch every ``gap`` seconds (random), restarts it."""

    settings: Settings
    seed: int
    gap: tuple[float, float] = (5.0, 20.0)
    lock: threading.Lock = field(default_factory=threading.Lock)
    events: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    error: BaseException | None = None

    def run(self, seconds: float) -> None:
        rng, deadline = random.Random(self.seed), time.monotonic() + seconds
        victims: list[str] = []
        try:
            # after the deadline, only the round under way is finished (each of the three once)
            while not self._stop.wait(rng.uniform(*self.gap)) and (time.monotonic() < deadline or victims):
                if not victims:  # each of the three in every round, in a random order
                    victims = rng.sample(["worker", "redis", "es"], 3)
                victim = victims.pop()
                with self.lock:
                    getattr(self, f"_kill_{victim}")(rng)
        except BaseException as exc:  # noqa: BLE001 - reported by run_soak, not lost in a thread
            self.error = exc

    def stop(self) -> None:
        self._stop.set()

    def _record(self, what: str) -> None:
        log.warning("chaos: %s", what)
        self.events.append(what)

    def _pid(self, name: str) -> int:
        pid = load_state(self.settings).get(name, {}).get("pid")
        if not pid_alive(pid):
            raise RuntimeError(f"no live {name} recorded by `esm stack up`")
        return pid

    def _kill_worker(self, rng: random.Random) -> None:
        children, main, roll = worker_children(self.settings), worker_main(self.settings), rng.random()
        if children and roll < 0.4:  # a pool process dies mid-task: the task is redelivered
            os.kill(rng.choice(children), signal.SIGKILL)
            self._record("worker pool process SIGKILLed")
            return
        if main and roll < 0.7:  # the main process dies (as on kombu's reconnect crash): its
            os.kill(main, signal.SIGKILL)  # supervisor starts it again; its tasks are orphaned
            self._record("worker main process SIGKILLed")
            return
        worker.stop_worker(self.settings)     # the whole worker stops (warm) and comes back
        worker.start_worker(self.settings)
        self._record("worker stopped and restarted")

    def _kill_redis(self, rng: random.Random) -> None:
        os.kill(self._pid("redis"), signal.SIGKILL)
        time.sleep(rng.uniform(0.2, 3.0))
        start_redis(self.settings)
        self._record("redis SIGKILLed and restarted")

    def _kill_es(self, rng: random.Random) -> None:
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        _, ident, pidfile = record(self.settings, "es")
        if not stop_pid(self._pid("es"), sig, timeout=60, recorded=ident, pidfile=pidfile, name="es"):
            raise RuntimeError("elasticsearch was not stopped (see the warning above)")
        start_es_again(self.settings)
        self._record(f"elasticsearch {signal.Signals(sig).name} and restarted")


def _enqueue(settings, es, alias, items, root, lock) -> Job:
    for _attempt in range(30):
        with lock:  # never half a wave: chaos waits while tasks are sent
            try:
                return enqueue(settings, es, alias, Source(items, [], (root,)))
            except ClusterUnavailable:
                pass
        time.sleep(2)
    raise RuntimeError("could not enqueue a wave for a minute")


def _finish(settings, es, alias, root, lock, job: Job, items: list[dict]) -> int:
    """Wait for a job; when it stalls (its tasks lost), queue what it never finished again, as
    an operator would (ingest is idempotent). Returns how many images had to be queued again."""
    requeued = 0
    while True:
        try:
            wait(settings, job, timeout=1800)
            return requeued
        except JobStalled as exc:
            progress = JobProgress(settings, job.job_id)
            finished = {m.decode() for suffix in (":done", ":failed")
                        for m in progress.redis.smembers(progress.key + suffix)}
            missing = [i for i in items if i["ref"] not in finished]
            log.warning("chaos: %s; queueing its %d unfinished images again", exc.message, len(missing))
            requeued += len(missing)
            job, items = _enqueue(settings, es, alias, missing, root, lock), missing


def run_soak(settings: Settings, es, model: Path, root: Path, *, images: int, chaos_seconds: float,
             waves: int, seed: int = 0, batch: int = 8, alias: str = "soak",
             gap: tuple[float, float] = (5.0, 20.0)) -> dict:
    """Ingest ``images`` generated images in ``waves`` jobs spread over ``chaos_seconds`` of chaos;
    verify exactly-once or failed-with-reason; return the counts."""
    make_images(root, images, seed)
    es.options(ignore_status=404).indices.delete(index=f"{alias}*")
    create_versioned_index(es, alias, read_card(model), str(model))
    # A stall is looked into after 30 s without progress (not 120): the tasks a killed main
    # process held go back to the queue, lost ones are sent again, sooner.
    s = settings.with_(batch_size=batch, stall_seconds=30)
    items = list(folder_items(root))
    chaos = Chaos(settings, seed, gap)
    thread = threading.Thread(target=chaos.run, args=(chaos_seconds,), daemon=True)
    t0 = time.monotonic()
    thread.start()
    jobs = []
    for w in range(waves):
        wave = items[w::waves]
        jobs.append((_enqueue(s, es, alias, wave, root, chaos.lock), wave))
        time.sleep(chaos_seconds / waves)
    requeued = sum(_finish(s, es, alias, root, chaos.lock, job, wave) for job, wave in jobs)
    chaos.stop()
    thread.join()
    if chaos.error is not None:
        raise RuntimeError(f"the chaos thread failed: {chaos.error!r}") from chaos.error
    lifecycle.up(settings)  # whatever chaos left down comes back before counting
    return verify(settings, es, alias, items, root) | {
        "chaos_events": len(chaos.events), "events": _tally(chaos.events), "requeued_after_stall": requeued,
        "seconds": round(time.monotonic() - t0, 1)}


def _tally(events: list[str]) -> dict[str, int]:
    return {e: events.count(e) for e in sorted(set(events))}


def verify(settings: Settings, es, alias: str, items: list[dict], root: Path) -> dict:
    """Every image indexed exactly once (one document per distinct image) or failed with a reason."""
    from elasticsearch.helpers import scan

    shas = {i["ref"]: hashlib.sha256(Path(i["ref"]).read_bytes()).hexdigest() for i in items}
    docs = count(es, alias)
    seen: dict[str, str] = {}
    for hit in scan(es, index=alias, _source=["image_path", "image_sha256"]):
        seen[hit["_id"]] = hit["_source"]["image_path"]
    dupes = es.search(index=alias, size=0, aggs={"d": {"terms": {"field": "image_sha256", "min_doc_count": 2,
                                                                 "size": 10}}})
    failures = list_failures(es, settings.failures_index, alias, size=10000)
    failed = {f["ref"] for f in failures}
    indexed_refs = {ref for ref, sha in shas.items() if sha in seen}
    missing = set(shas) - indexed_refs - failed
    return {"images": len(items), "distinct_images": len(set(shas.values())), "documents": docs,
            "failed": len(failed - indexed_refs), "reasons": _tally([f["reason"] for f in failures]),
            "duplicate_documents": len(dupes["aggregations"]["d"]["buckets"]),
            "neither_indexed_nor_failed": len(missing),
            "exactly_once": docs == len(seen) == len(set(shas.values())) - len(failed - indexed_refs)
            and not missing and not dupes["aggregations"]["d"]["buckets"]}
