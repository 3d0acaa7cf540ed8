"""The local stack's Celery worker: run on ``settings.worker_queue`` with the settings of this
process by a supervisor (supervisor.py) that restarts it when it exits; both stopped by pid."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ..config import Settings
from ..errors import StackError
from ..ingest.celery_app import worker_ping
from .procs import read_pid
from .state import Component, managed, record, remember, run_dir, stop_component

SUPERVISOR_STOP_TIMEOUT = 45  # above the supervisor's own grace for the worker (STOP_GRACE)


def worker_pidfile(settings: Settings) -> Path:
    suffix = "" if settings.worker_queue == "esm" else f"-{settings.worker_queue}"
    return run_dir(settings) / f"worker{suffix}.pid"


def supervisor_name(settings: Settings) -> str:
    """The stack state's name for the supervisor of ``settings.worker_queue``'s worker."""
    return "supervisor" + worker_pidfile(settings).stem[len("worker"):]


def worker_command(settings: Settings, name: str, concurrency: int,
                   python: str = sys.executable, detach: bool = True) -> list[str]:
    """The command line of a worker of ``settings.worker_queue`` named ``name``@host, run by
    ``python`` (another interpreter: say, a light install's), logging to
    ``logs/<pid file stem>-<process index>.log``; ``detach``: in the background."""
    pidfile = worker_pidfile(settings)
    logs = settings.stack_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return [python, "-m", "celery", "-A", "es_metric.ingest.celery_app", "worker",
            "-Q", settings.worker_queue, "--concurrency", str(concurrency), "--loglevel", "INFO",
            "--pidfile", str(pidfile), "--logfile", str(logs / f"{pidfile.stem}-%i.log"),
            "--hostname", f"{name}@%h", *(["--detach"] if detach else [])]


def start_worker(settings: Settings, concurrency: int | None = None) -> Component:
    """Start a supervised worker unless one runs (or its supervisor is about to restart it);
    wait until it answers a ping."""
    pidfile, sup = worker_pidfile(settings), supervisor_name(settings)
    if managed(settings, sup) or managed(settings, pidfile.stem):
        return Component("worker", True, True, settings.worker_queue, "already running",
                         record(settings, pidfile.stem)[0])
    conc = concurrency or settings.worker_concurrency
    name = f"{settings.worker_queue}-{os.getpid()}"
    proc = _spawn_supervisor(settings, name, conc)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"the worker's supervisor exited ({proc.returncode})",
                             hint=f"see {supervisor_log(settings)}")
        pid = read_pid(pidfile)
        if pid and any(n.startswith(name + "@") for n in worker_ping(settings, timeout=1.0)):
            return Component("worker", True, True, settings.worker_queue,
                             f"started, {conc} process(es), supervised (pid {proc.pid})", pid)
        time.sleep(0.5)
    raise StackError("the Celery worker did not answer within 60 s",
                     hint=f"see {settings.stack_dir / 'logs'}/{pidfile.stem}-0.log and {supervisor_log(settings)}")


def supervisor_log(settings: Settings) -> Path:
    return settings.stack_dir / "logs" / f"{supervisor_name(settings)}.log"


def _spawn_supervisor(settings: Settings, name: str, concurrency: int) -> subprocess.Popen:
    """The supervisor, detached (its own session), recorded in the stack state at once."""
    env = {**os.environ, **settings.with_(worker_concurrency=concurrency).as_env()}
    supervisor_log(settings).parent.mkdir(parents=True, exist_ok=True)
    with open(supervisor_log(settings), "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "es_metric.stack.supervisor", name, str(concurrency)],
                                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    remember(settings, supervisor_name(settings), proc.pid, queue=settings.worker_queue,
             concurrency=concurrency, restarts=0)
    return proc


def stop_worker(settings: Settings) -> bool:
    """Stop the supervisor (it stops its worker), then a worker left without one."""
    sup = stop_component(settings, supervisor_name(settings), timeout=SUPERVISOR_STOP_TIMEOUT)
    return stop_component(settings, worker_pidfile(settings).stem, timeout=30) or sup
