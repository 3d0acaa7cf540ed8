"""A stale pid record never gets a stranger killed: the stack signals a pid only while it is
still the process it recorded (same boot, same start time, same executable)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest

from es_metric.config import Settings
from es_metric.stack import lifecycle
from es_metric.stack.procs import identity, mismatch, still_running, stop_pid
from es_metric.stack.state import load_state, managed


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []

    def start(cmd=None) -> subprocess.Popen:
        proc = subprocess.Popen(cmd) if cmd else _sleeper()
        started.append(proc)
        return proc
    yield start
    for proc in started:  # our own children, by handle
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _recorded_then_exited(start) -> dict:
    """The identity of a child recorded at start, after that child has exited."""
    first = start()
    record = identity(first.pid)
    first.terminate()
    first.wait()
    return record


def test_identity_of_a_live_process():
    me = identity(os.getpid())
    assert me["pid"] == os.getpid() and me["exe"] == os.path.realpath(sys.executable)
    assert me["start_ticks"] > 0 and me["boot_id"]
    assert mismatch(os.getpid(), me) is None


def test_a_record_pointing_at_another_process_is_not_killed(processes, caplog):
    caplog.set_level(logging.WARNING)
    record = _recorded_then_exited(processes)
    time.sleep(0.05)  # a later start time than the recorded process, as after a pid reuse
    other = processes(["sleep", "120"])           # an unrelated process...
    stale = {**record, "pid": other.pid}           # ...that the stale record now points at
    assert not still_running(other.pid, stale)
    assert stop_pid(other.pid, recorded=stale, name="es") is False
    assert other.poll() is None, "an unrelated process was signalled"
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"not stopping pid {other.pid} (es): it is no longer the process esm recorded")
    assert "/sleep" in warning


def test_the_recorded_process_itself_is_stopped(processes):
    proc = processes()
    assert stop_pid(proc.pid, recorded=identity(proc.pid)) is True
    assert proc.wait(timeout=5) is not None


def test_without_a_record_the_pid_file_decides(processes, tmp_path):
    """A process that started after its pid file was written did not write it."""
    pidfile = tmp_path / "w.pid"
    proc = processes()
    pidfile.write_text(str(proc.pid))           # written after the start: the writer's file
    assert mismatch(proc.pid, None, pidfile) is None
    past = time.time() - 3600
    os.utime(pidfile, (past, past))             # a file older than the process: a stale one
    assert "started after" in mismatch(proc.pid, None, pidfile)
    assert stop_pid(proc.pid, pidfile=pidfile) is False and proc.poll() is None
    assert stop_pid(proc.pid) is False and proc.poll() is None  # nothing to check against
    assert "nothing was recorded" in mismatch(proc.pid)


def test_stack_down_and_status_skip_a_reused_pid(processes, tmp_path, caplog):
    """`esm stack down` with a stack.json whose worker and es pids now belong to strangers."""
    caplog.set_level(logging.WARNING)
    s = Settings.from_env({"ESM_STACK_DIR": str(tmp_path), "ESM_ES_PORT": "1", "ESM_REDIS_PORT": "1"})
    old_worker, old_es = _recorded_then_exited(processes), _recorded_then_exited(processes)
    time.sleep(0.05)
    strangers = [processes(), processes()]
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "stack.json").write_text(json.dumps({
        "worker": {"pid": strangers[0].pid, "identity": old_worker},
        "es": {"pid": strangers[1].pid, "identity": old_es}}))
    assert not managed(s, "worker") and not managed(s, "es")
    assert lifecycle.down(s) == []
    assert [p.poll() for p in strangers] == [None, None]
    assert len([r for r in caplog.records if "not stopping pid" in r.getMessage()]) == 2
    assert load_state(s) == {}  # the stale records are gone
