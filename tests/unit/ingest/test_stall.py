"""The stall detector's verdicts on where a job's tasks are (pure: no broker)."""
from __future__ import annotations

from es_metric.config import Settings
from es_metric.ingest.stall import Activity, stall_error

S = Settings()
COUNTS = (16, 8, 0)


def test_a_task_held_by_a_live_worker_is_waited_for():
    act = Activity(frozenset(), frozenset({"j"}), ("w1",), frozenset({"j"}))
    assert act.alive("j") and stall_error(S, "j", COUNTS, 200, act) is None


def test_a_queued_task_waits_for_a_worker_and_says_so_without_one():
    assert stall_error(S, "j", COUNTS, 200, Activity(frozenset({"j"}), frozenset(), ("w1",))) is None
    err = stall_error(S, "j", COUNTS, 200, Activity(frozenset({"j"}), frozenset(), ()))
    assert err is not None and "no worker answers" in err.message


def test_a_task_only_a_dead_worker_took_ends_the_wait():
    """Delivered (unacked) but held by no worker that answers: a SIGKILLed worker's task, which
    the broker gives back only after its visibility timeout; waiting 30 min helps no one."""
    act = Activity(frozenset(), frozenset(), ("w2",), frozenset({"j"}))
    err = stall_error(S, "j", COUNTS, 200, act)
    assert not act.alive("j")
    assert err is not None and "held by a worker that is gone" in err.message and "8 images" in err.message
    assert "again" in err.hint


def test_queued_tasks_whose_queue_only_other_queues_workers_answer_for_end_the_wait():
    """Workers answer, but none consumes the job's queue (another -Q, or a cancelled consumer):
    the queued tasks cannot run; the error names the queue and the workers that answered."""
    act = Activity(frozenset({"j"}), frozenset(), (), others=("esm-7@host",))
    err = stall_error(S.with_(worker_queue="ingest"), "j", COUNTS, 200, act)
    assert err is not None and "8 of 16 images wait in the queue 'ingest'" in err.message
    assert "no live worker consumes that queue" in err.message and "esm-7@host" in err.message
    assert "-Q ingest" in err.hint and "add_consumer ingest" in err.hint
