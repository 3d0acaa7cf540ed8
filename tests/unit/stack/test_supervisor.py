"""The worker's supervisor, with stand-in workers (no services): it restarts a worker that exits,
with a doubling back-off, counts the restarts in the stack state, kills what an exited worker
left in its process group, and on SIGTERM stops its worker and ends."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from es_metric.config import Settings
from es_metric.pids import pid_alive
from es_metric.stack.lifecycle import supervision_detail
from es_metric.stack.state import load_state
from es_metric.stack.supervisor import FIRST_DELAY, MAX_DELAY, STABLE_AFTER, exit_description, next_delay
from tests.integration.faults import wait_until

# Runs the real Supervisor with the worker's command line replaced by WORKER (argv[1]) and a
# back-off short enough for a test.
RUN = """
import sys
from es_metric.config import Settings
from es_metric.stack import supervisor
supervisor.worker_command = lambda settings, name, conc, detach=False: [sys.executable, "-c", sys.argv[1]]
supervisor.FIRST_DELAY, supervisor.MAX_DELAY = 0.05, 0.4
raise SystemExit(supervisor.main(["unit-1", "1"]))
"""


def test_the_back_off_doubles_in_a_crash_loop_and_starts_over_after_a_stable_run():
    delays, previous = [], 0.0
    for _ in range(9):
        previous = next_delay(previous, ran_for=2.0)
        delays.append(previous)
    assert delays[:4] == [FIRST_DELAY, 2 * FIRST_DELAY, 4 * FIRST_DELAY, 8 * FIRST_DELAY]
    assert delays[-1] == MAX_DELAY and all(b >= a for a, b in zip(delays, delays[1:]))
    assert next_delay(MAX_DELAY, ran_for=STABLE_AFTER) == FIRST_DELAY


def test_exit_statuses_in_words():
    assert exit_description(1) == "exit 1"
    assert exit_description(-signal.SIGKILL) == "killed by SIGKILL"


def test_status_says_how_often_and_why_the_worker_was_restarted():
    sup = {"pid": 42, "restarts": 2, "last_exit": "killed by SIGKILL",
           "last_exit_at": time.time() - 5, "next_start_at": 1000.0}
    text = supervision_detail(sup, worker_alive=False, now=996.0)
    assert text.startswith("supervised (pid 42), restarted 2 times, last: killed by SIGKILL at ")
    assert text.endswith(", restarting in 4 s")
    assert supervision_detail({"pid": 42, "restarts": 0}, True, 0) == "supervised (pid 42), restarted 0 times"


@pytest.fixture
def supervise(tmp_path):
    """``supervise(worker_code)``: a supervisor of a stand-in worker, in a stack dir of its own;
    stopped (by its handle) afterwards."""
    started: list[subprocess.Popen] = []
    env = {**os.environ, "ESM_STACK_DIR": str(tmp_path / "stack"), "ESM_QUEUE": "unitq"}

    def start(worker_code: str) -> tuple[subprocess.Popen, Settings]:
        proc = subprocess.Popen([sys.executable, "-c", RUN, worker_code], env=env)
        started.append(proc)
        return proc, Settings.from_env(env)
    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _restarts(settings: Settings) -> dict:
    return load_state(settings).get("supervisor-unitq", {})


def test_a_worker_that_keeps_exiting_is_restarted_and_counted(supervise):
    proc, settings = supervise("raise SystemExit(3)")
    rec = wait_until(lambda: _restarts(settings).get("restarts", 0) >= 4 and _restarts(settings), 60,
                     "4 restarts")
    assert rec["last_exit"] == "exit 3" and rec["next_start_at"] >= rec["last_exit_at"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_sigterm_stops_the_worker_and_the_supervisor(supervise):
    proc, settings = supervise("import time; time.sleep(120)")
    worker = wait_until(lambda: load_state(settings).get("worker-unitq", {}).get("pid"), 60, "the worker's record")
    assert pid_alive(worker)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not pid_alive(worker) and "worker-unitq" not in load_state(settings)


def test_what_an_exited_worker_left_in_its_process_group_is_killed(supervise, tmp_path):
    """A worker main process that dies leaves its pool processes behind; the supervisor ends
    them (its own process group, by group id, while the dead main still holds it)."""
    marker = tmp_path / "child.pid"
    code = ("import os, subprocess, sys, time\n"
            f"marker = {str(marker)!r}\n"
            "if not os.path.exists(marker):\n"
            "    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            "    open(marker, 'w').write(str(child.pid))\n"
            "    os._exit(1)\n"
            "time.sleep(120)\n")
    proc, settings = supervise(code)
    child = int(wait_until(lambda: marker.exists() and marker.read_text(), 60, "the pool stand-in"))
    wait_until(lambda: not pid_alive(child), 60, "the orphaned pool process to be killed")
    # the supervisor kills the group first and records the restart after: wait for the record
    rec = wait_until(lambda: _restarts(settings).get("restarts", 0) >= 1 and _restarts(settings), 60,
                     "the restart recorded")
    assert rec["restarts"] >= 1 and rec["last_exit"] == "exit 1"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
