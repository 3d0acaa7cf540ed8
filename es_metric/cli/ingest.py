"""esm ingest | reindex: images to vectors through the workers, and moving an index to a new model."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from ..config import Settings
from ..ingest.sources import local_source
from ..progressbar import enabled
from ..model.card import read_card
from .common import Cluster, FiniteRange, echo_json
from .follow import follow
from .root import main


STALL_HELP = ("Give up when nothing moved for N s and nothing of the job is running or can run: "
              "lost, or queued with no live worker consuming the queue [default: ESM_STALL_SECONDS or 120].")


@main.command()
@click.argument("index")
@click.argument("source", required=False)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow progress to the end.")
@click.option("--from-index", is_flag=True, help="SOURCE-less: embed the images of INDEX's own documents.")
@click.option("--image-field", default="image_path", show_default=True,
              help="With --from-index: the field holding image paths or URLs (or lists of them).")
@click.option("--image-key", default=None, help="Manifest key holding the image path.")
@click.option("--base-dir", type=click.Path(file_okay=False),
              help="With --from-index: base for relative paths, and a folder images may be read from.")
@click.option("--timeout", type=float, default=None, help="Give up waiting after N seconds.")
@click.option("--stall-timeout", type=float, default=None, help=STALL_HELP)
@click.option("--follow", "follow_mode", is_flag=True,
              help="With --from-index: keep embedding new and changed documents until stopped.")
@click.option("--poll", type=FiniteRange(min=0.1), default=5.0, show_default=True,
              help="With --follow: seconds between passes.")
@click.option("--dba/--no-dba", default=True, show_default=True,
              help="After the wait: augment the new documents and the neighbourhoods they enter, "
                   "when the index runs DBA (skipped: `esm dba INDEX` later).")
@click.option("--json", "as_json", is_flag=True)
def ingest(index, source, wait, from_index, image_field, image_key, base_dir, timeout, stall_timeout,
           follow_mode, poll, dba, as_json) -> None:
    """Queue SOURCE (image folder or JSONL manifest) for the workers to embed into INDEX."""
    from ..index.indices import index_info
    from ..ingest.enqueue import enqueue, existing_index_items, make_searchable

    if follow_mode:
        if not from_index:
            raise click.UsageError("--follow needs --from-index")
        return follow(index, image_field, base_dir, poll, as_json)
    with Cluster() as (s, es):
        if stall_timeout is not None:
            s = s.with_(stall_seconds=stall_timeout)
        if from_index:
            src, mode = existing_index_items(s, es, index, image_field, base_dir), "update"
        elif source:  # columns may not take es-metric's own field names (the index's record)
            layout = index_info(es, index).fields
            src, mode = local_source(Path(source), s.image_roots, image_key, layout), "index"
        else:
            raise click.UsageError("give SOURCE, or --from-index")
        job = enqueue(s, es, index, src, mode=mode)
        if not as_json:
            click.echo(f"job {job.job_id}: {job.total - job.refused} images queued in {job.tasks} tasks "
                       f"-> {job.target}" + (f"; {job.refused} refused (see `esm failures {index}`)"
                                              if job.refused else ""), err=True)
        summary: dict[str, Any] = {"job_id": job.job_id, "queued": job.total - job.refused, "refused": job.refused,
                   "index": job.target}
        if wait:
            along = _dba(es, index, job) if dba else None
            summary.update(_follow(s, job, timeout, quiet=as_json, along=along))
            make_searchable(es, job)
            summary["dba"] = along.finish() if along else None
    if as_json:
        echo_json(summary)
    elif wait:
        click.echo(f"done: {summary['indexed']} indexed, {summary['failed']} failed "
                   f"in {summary['seconds']} s ({summary['images_per_s']} images/s)"
                   + (f"; see `esm failures {index}`" if summary["failed"] else ""))
        if summary.get("dba"):
            d = summary["dba"]
            click.echo(f"dba: {d['documents']} new documents augmented, {d['neighbours']} neighbours "
                       f"recomputed ({d['written']} written) in {d['total_s']} s")


def _dba(es, index: str, job):
    """DBA of what the job writes, during the wait and after it, when the index runs it after
    ingests (``finish`` returns None when it does not)."""
    from ..search.dbaingest import IngestDba

    return IngestDba(es, index, job.started_at)


def _follow(s, job, timeout, quiet: bool, along=None) -> dict:
    from ..ingest.enqueue import wait

    t0 = time.monotonic()
    step = along.progress if along else None
    if quiet or not enabled():
        done, failed = wait(s, job, timeout=timeout, on_progress=step)
    else:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("[bold]ingest"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn(),
                      console=Console(stderr=True)) as bar:
            task = bar.add_task("ingest", total=job.total, failed=0)
            def show(t: int, d: int, f: int) -> None:
                bar.update(task, completed=d + f, failed=f)
                if step:
                    step(t, d, f)

            done, failed = wait(s, job, timeout=timeout, on_progress=show)
    secs = time.monotonic() - t0
    return {"indexed": done, "failed": failed, "seconds": round(secs, 1),
            "images_per_s": round((done + failed) / secs, 1) if secs else None}


@main.command()
@click.argument("index")
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False),
              help="The new model file.")
@click.option("--force", is_flag=True, help="Accept a model that failed its gate, or image failures.")
@click.option("--delete-old", is_flag=True, help="Delete the old index after the swap.")
@click.option("--abandon", is_flag=True, help="Delete a half-built index for --model instead.")
@click.option("--timeout", type=float, default=None)
@click.option("--stall-timeout", type=float, default=None, help=STALL_HELP)
@click.option("--json", "as_json", is_flag=True)
def reindex(index, model_path, force, delete_old, abandon, timeout, stall_timeout, as_json) -> None:
    """Blue/green: re-embed INDEX with a new model, verify, swap the alias atomically."""
    from ..ingest.reindex import abandon as abandon_target, in_place, reindex as run_reindex
    from ..model.runtime import card_for_runtime

    if not model_path:
        raise click.UsageError("--model is required")
    card = card_for_runtime(read_card(model_path), Settings.from_env().runtime)  # as mapping create
    with Cluster() as (s, es):
        if stall_timeout is not None:
            s = s.with_(stall_seconds=stall_timeout)
        if abandon and in_place(es, index):
            from ..ingest.migrate import abandon as abandon_change

            click.echo(f"abandoned the change to {card['model_id']}: cleared "
                       f"{abandon_change(es, index, card['model_id'])}; search stays on the old model")
            return
        if abandon:
            click.echo(f"deleted half-built index {abandon_target(es, index, card['model_id'])}")
            return
        if in_place(es, index):
            return _change_in_place(s, es, index, model_path, card, force, timeout, as_json)
        res = run_reindex(s, es, index, str(Path(model_path).resolve()), card, force=force,
                          delete_old=delete_old, timeout=timeout)
    if as_json:
        echo_json(asdict(res))
        return
    click.echo(f"{index}: {res.old_index} -> {res.new_index}; {res.documents} documents, "
               f"{res.vectors} vectors, {res.failed} failed; alias swapped"
               + (f"; caught up with {res.caught_up} written and {res.removed} deleted during the run"
                  if res.caught_up or res.removed else "")
               + ("; old index deleted" if res.deleted_old else "; old index kept (--delete-old)"))


def _change_in_place(s, es, index, model_path, card, force, timeout, as_json) -> None:
    """An index es-metric does not own (no alias): a new vector field beside the old one."""
    from ..ingest.migrate import change_model

    res = change_model(s, es, index, str(Path(model_path).resolve()), card, force=force,
                       timeout=timeout)
    if as_json:
        echo_json(asdict(res))
        return
    click.echo(f"{index}: {res.old_model} ({res.old_field}) -> {res.new_model} ({res.new_field}) "
               f"in place; {res.vectors} of {res.documents} documents embedded, {res.failed} failed; "
               f"search switched; old vectors cleared from {res.cleared} documents")
