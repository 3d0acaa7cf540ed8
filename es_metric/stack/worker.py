"""The local stack's Celery worker: started detached on ``settings.worker_queue`` with the
settings of this process, stopped by pid."""
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


def worker_pidfile(settings: Settings) -> Path:
    suffix = "" if settings.worker_queue == "esm" else f"-{settings.worker_queue}"
    return run_dir(settings) / f"worker{suffix}.pid"


def worker_command(settings: Settings, name: str, concurrency: int,
                   python: str = sys.executable) -> list[str]:
    """The command line of a detached worker of ``settings.worker_queue`` named ``name``@host,
    run by ``python`` (another interpreter: say, a light install's), logging to
    ``logs/<pid file stem>-<process index>.log``."""
    pidfile = worker_pidfile(settings)
    logs = settings.stack_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return [python, "-m", "celery", "-A", "es_metric.ingest.celery_app", "worker",
            "-Q", settings.worker_queue, "--concurrency", str(concurrency), "--loglevel", "INFO",
            "--pidfile", str(pidfile), "--logfile", str(logs / f"{pidfile.stem}-%i.log"),
            "--hostname", f"{name}@%h", "--detach"]


def start_worker(settings: Settings, concurrency: int | None = None) -> Component:
    pidfile = worker_pidfile(settings)
    if managed(settings, pidfile.stem):
        return Component("worker", True, True, settings.worker_queue, "already running",
                         record(settings, pidfile.stem)[0])
    logs = settings.stack_dir / "logs"
    conc = concurrency or settings.worker_concurrency
    name = f"{settings.worker_queue}-{os.getpid()}"
    env = {**os.environ, **settings.with_(worker_concurrency=conc).as_env()}
    subprocess.run(worker_command(settings, name, conc), check=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pid = read_pid(pidfile)
        if pid and any(n.startswith(name + "@") for n in worker_ping(settings, timeout=1.0)):
            remember(settings, pidfile.stem, pid, concurrency=conc)
            return Component("worker", True, True, settings.worker_queue,
                             f"started, {conc} process(es)", pid)
        time.sleep(0.5)
    raise StackError("the Celery worker did not answer within 60 s",
                     hint=f"see {logs}/worker-0.log")


def stop_worker(settings: Settings) -> bool:
    return stop_component(settings, worker_pidfile(settings).stem, timeout=30)
