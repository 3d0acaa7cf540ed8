"""esm stack up|down|status."""
from __future__ import annotations

import json
import time

import click

from .common import settings
from .root import main


@main.group("stack")
def stack_group() -> None:
    """Local single-node Elasticsearch + Redis + Celery worker (no Docker needed)."""


def _print(components, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps([c.as_dict() for c in components]))
        return
    for c in components:
        state = "running" if c.running else "down"
        owner = "started by esm" if c.managed else "not managed by esm"
        pid = f" pid {c.pid}" if c.pid else ""
        click.echo(f"{c.name:<14} {state:<8} {c.where:<34} {c.detail} [{owner}{pid}]")


@stack_group.command("up")
@click.option("--no-worker", is_flag=True, help="Start Elasticsearch and Redis only.")
@click.option("--concurrency", type=int, default=None, help="Worker processes (ESM_WORKER_CONCURRENCY).")
@click.option("--json", "as_json", is_flag=True)
def up(no_worker: bool, concurrency: int | None, as_json: bool) -> None:
    """Start whatever is not running yet (idempotent). The worker runs under a supervisor that
    restarts it when it exits (with a back-off); `status` says how often it did."""
    from ..stack import lifecycle

    t0 = time.monotonic()
    comps = lifecycle.up(settings(), worker=not no_worker, concurrency=concurrency)
    _print(comps, as_json)
    if not as_json:
        click.echo(f"stack ready in {time.monotonic() - t0:.1f} s")


@stack_group.command("down")
def down() -> None:
    """Stop exactly the processes `esm stack up` started (by pid)."""
    from ..stack import lifecycle

    stopped = lifecycle.down(settings())
    click.echo("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))


@stack_group.command("status")
@click.option("--json", "as_json", is_flag=True)
def status(as_json: bool) -> None:
    """What runs, where, which versions and health."""
    from ..stack import lifecycle

    comps = lifecycle.status(settings())
    _print(comps, as_json)
    if not all(c.running for c in comps):
        raise SystemExit(1)


@stack_group.command("restart-worker")
@click.option("--concurrency", type=int, default=None)
def restart_worker(concurrency: int | None) -> None:
    """Restart the Celery worker and its supervisor (after a code change, or to change its
    process count)."""
    from ..stack import worker

    s = settings()
    worker.stop_worker(s)
    _print([worker.start_worker(s, concurrency)], False)
