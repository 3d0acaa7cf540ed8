"""DBA during an ingest's wait, so the pass overlaps the workers' embedding.

An ingest that waits augments what its job wrote (search/dba.py). ``IngestDba`` starts that
work while the workers are still embedding: its ``progress`` is a ``wait`` callback, and each
time more images are done (the workers record them after writing), it refreshes the index (so
their documents, and what its last step wrote, are visible) and augments the job's documents
written so far, with the neighbourhoods they enter. Documents of a later step enter those of an
earlier one through the neighbour lists the markers keep (dbamerge), so the index ends as one
pass after the wait would leave it; only less of the work is left for after the wait:
``finish`` (after ``make_searchable``) augments the rest, the last batch. The bound on documents
written is the job's: <= (k + 1) x its images not failed (an early step may spend the budget of
images still to come; should they fail after all, up to k more per failed image).

The steps run in a thread beside the wait. A step the cluster refuses is logged and ends the
overlap (the job goes on; ``finish`` does what is left); any other error is raised by ``finish``.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from elasticsearch import ApiError, Elasticsearch, TransportError

from ..errors import EsmError
from ..index.indices import index_info
from .dba import Pass, augment_blocks, runs_after_ingest, start, summary, window_start

log = logging.getLogger(__name__)
WaitProgress = Callable[[int, int, int], None]  # (total, done, failed), as ``wait`` reports it


class IngestDba:
    """DBA along one job's wait (see the module): ``progress`` for ``wait(on_progress=...)``
    (``then``: a callback of the caller's, called first), ``finish()`` after the wait.
    Does nothing when the index does not run DBA after ingests (``finish`` returns None).
    The steps run in a thread of their own, back to back while the workers write more, so the
    wait's polls go on and it ends when the job does."""

    def __init__(self, client: Elasticsearch, index: str, started_at: float | None,
                 then: WaitProgress | None = None) -> None:
        self.then = then
        self.since = window_start(started_at) if started_at else None
        self.p: Pass | None = start(client, index) if runs_after_ingest(index_info(client, index)) else None
        self.stepping = self.p is not None
        self.done, self.seen, self.steps, self.busy = 0, 0, 0, 0.0
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def progress(self, total: int, done: int, failed: int) -> None:
        """At each poll: steps start (or go on) once the workers have written more (not once the
        job is complete: ``finish`` takes that)."""
        if self.then:
            self.then(total, done, failed)
        if self.p is None:
            return
        self.p.planned = total - failed  # the neighbours' budget: k per image of the job
        self.done = done
        if self.stepping and done > self.seen and done + failed < total and not self.busy_now():
            self.thread = threading.Thread(target=self._steps, name="esm-dba-steps", daemon=True)
            self.thread.start()

    def busy_now(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def pause(self) -> None:
        """Let the step under way (if any) end; no new one starts until ``progress`` sees more."""
        if self.thread is not None:
            self.thread.join()

    def stop(self) -> None:
        """No step starts after this; the one under way (if any) ends."""
        self.stepping = False
        self.pause()

    def _steps(self) -> None:
        try:
            while self.stepping and self.done > self.seen:
                self.seen = self.done
                self.busy += self._augment(refresh=True)
                self.steps += 1
        except (ApiError, TransportError, EsmError) as exc:  # the wait goes on; finish does what is left
            log.warning("dba during the wait stopped (%s); the rest after the wait", exc)
            self.stepping = False
        except BaseException as exc:  # anything else is a fault: finish raises it
            self.error, self.stepping = exc, False

    def _augment(self, refresh: bool) -> float:
        assert self.p is not None
        t0 = time.monotonic()
        if refresh:
            self.p.client.indices.refresh(index=self.p.info.concrete)
        augment_blocks(self.p, self.since)
        return time.monotonic() - t0

    def finish(self) -> dict[str, Any] | None:
        """After the wait and ``make_searchable``: the step under way ends, the rest is
        augmented; the pass's counts, with ``total_s`` (the pass's own time: its steps and the
        rest, each counted once) and ``after_wait_s`` (from here to the end, the wait for the
        step under way included)."""
        if self.p is None:
            return None
        t0 = time.monotonic()
        self.stop()  # the step under way ends: its time is in busy already
        if self.error is not None:
            raise self.error
        t1 = time.monotonic()
        self._augment(refresh=self.thread is not None)  # what a step wrote after make_searchable, visible
        self.p.client.indices.refresh(index=self.p.info.concrete)
        end = time.monotonic()
        after, own = end - t0, end - t1
        log.info("dba: %d new documents of %s augmented in %d steps during the wait and %.1f s after it",
                 self.p.counts["documents"], self.p.info.concrete, self.steps, after)
        return {**summary(self.p), "total_s": round(self.busy + own, 2), "after_wait_s": round(after, 2),
                "steps": self.steps}
