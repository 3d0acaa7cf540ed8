"""Keep the local stack's Celery worker running, as systemd's ``Restart=always`` or compose's
``restart: unless-stopped`` do in production.

``esm stack up`` starts ``python -m es_metric.stack.supervisor NAME CONCURRENCY`` detached and
records it (``supervisor[-<queue>]`` in the stack state). It runs the worker in the foreground,
in a process group of its own, and records each worker it starts. When the worker exits without
being asked to (a crash, such as celery 5.7.0's "Unrecoverable error" on a Redis restart, or a
kill) it starts it again after a back-off that doubles from 1 s to 60 s and falls back to 1 s
after a run of a minute, and counts the restarts in its record (``esm stack status`` prints
them). SIGTERM (``esm stack down``, by pid) stops the worker warm, SIGKILL after STOP_GRACE
seconds, and ends the supervisor.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from ..config import Settings
from ..redact import install_log_filter
from .state import forget, remember, update
from .worker import supervisor_name, worker_command, worker_pidfile

log = logging.getLogger("es_metric.stack.supervisor")

FIRST_DELAY = 1.0    # seconds before restarting a worker that ran for a while
MAX_DELAY = 60.0     # the longest back-off (a worker that keeps exiting at once)
STABLE_AFTER = 60.0  # a run this long resets the back-off
STOP_GRACE = 25.0    # warm shutdown time before SIGKILL (the CLI waits longer for the supervisor)
POLL = 0.2


def next_delay(previous: float, ran_for: float) -> float:
    """Back-off before the next start: FIRST_DELAY after a run of STABLE_AFTER seconds or more
    (a one-off crash), else twice the previous delay, at most MAX_DELAY (a crash loop)."""
    if previous <= 0 or ran_for >= STABLE_AFTER:
        return FIRST_DELAY
    return min(MAX_DELAY, previous * 2)


def exit_description(status: int) -> str:
    """A Popen return code in words: ``exit 1``, ``killed by SIGKILL``."""
    if status >= 0:
        return f"exit {status}"
    try:
        return f"killed by {signal.Signals(-status).name}"
    except ValueError:
        return f"killed by signal {-status}"


def _exited(pid: int) -> bool:
    """Whether our child ``pid`` has exited, without reaping it: while it is a zombie its pid
    (and its process group id) cannot be given to another process."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _end_group(proc: subprocess.Popen) -> int:
    """Kill what is left of an exited worker's process group (its pool processes, when the main
    process died first), then reap the main process; returns its status."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return proc.wait()


class Supervisor:
    """Runs one worker of ``settings.worker_queue`` named ``name``@host and restarts it."""

    def __init__(self, settings: Settings, name: str, concurrency: int) -> None:
        self.settings, self.name, self.concurrency = settings, name, concurrency
        self.stopping = False
        self.restarts = 0

    def _on_signal(self, _signum, _frame) -> None:
        self.stopping = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        remember(self.settings, supervisor_name(self.settings), os.getpid(),
                 queue=self.settings.worker_queue, concurrency=self.concurrency, restarts=0)
        delay, proc = 0.0, None
        while not self.stopping:
            proc, started = self._start(), time.monotonic()
            status = self._wait(proc)
            if status is None:  # asked to stop
                self._stop(proc)
                break
            delay = next_delay(delay, time.monotonic() - started)
            self._note_exit(proc, status, time.monotonic() - started, delay)
            self._sleep(delay)
        if proc is not None:
            forget(self.settings, worker_pidfile(self.settings).stem, pid=proc.pid)
        log.info("supervisor stopped after %d restart(s)", self.restarts)
        return 0

    def _start(self) -> subprocess.Popen:
        pidfile = worker_pidfile(self.settings)
        # A dead worker's pid file: its pid may name another process by now, and Celery refuses
        # to start while the pid in it is alive.
        pidfile.unlink(missing_ok=True)
        cmd = worker_command(self.settings, self.name, self.concurrency, detach=False)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
        remember(self.settings, pidfile.stem, proc.pid, concurrency=self.concurrency,
                 supervisor=os.getpid())
        log.info("worker %s started (pid %d)", self.name, proc.pid)
        return proc

    def _wait(self, proc: subprocess.Popen) -> int | None:
        """The worker's status once it exits, or None when the supervisor is asked to stop first."""
        while not self.stopping:
            if _exited(proc.pid):
                return _end_group(proc)
            time.sleep(POLL)
        return None

    def _stop(self, proc: subprocess.Popen) -> None:
        """Warm shutdown (the running tasks finish), SIGKILL after STOP_GRACE seconds."""
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while not _exited(proc.pid):
            if time.monotonic() > deadline:
                log.warning("worker %d still running after %.0f s: SIGKILL", proc.pid, STOP_GRACE)
                proc.kill()
                deadline = float("inf")
            time.sleep(POLL)
        log.info("worker %d stopped (%s)", proc.pid, exit_description(_end_group(proc)))

    def _note_exit(self, proc: subprocess.Popen, status: int, ran_for: float, delay: float) -> None:
        self.restarts += 1
        now = time.time()
        log.warning("worker %d %s after %.0f s; restart %d in %.0f s", proc.pid,
                    exit_description(status), ran_for, self.restarts, delay)
        update(self.settings, supervisor_name(self.settings), restarts=self.restarts,
               last_exit=exit_description(status), last_exit_at=now, next_start_at=now + delay)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))


def main(argv: list[str] | None = None) -> int:
    name, concurrency = (argv if argv is not None else sys.argv[1:])[:2]
    settings = Settings.from_env()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(asctime)s: %(levelname)s/supervisor] %(message)s")
    install_log_filter(settings.secrets())
    return Supervisor(settings, name, int(concurrency)).run()


if __name__ == "__main__":
    raise SystemExit(main())
