"""esm ingest | reindex: images to vectors through the workers, and moving an index to a new model."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from ..ingest.sources import local_source
from ..progressbar import enabled
from ..model.card import read_card
from ..types import Mode
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
    from ..ingest.enqueue import enqueue, existing_index_items

    if follow_mode:
        if not from_index:
            raise click.UsageError("--follow needs --from-index")
        return follow(index, image_field, base_dir, poll, as_json)
    with Cluster() as (s, es):
        if stall_timeout is not None:
            s = s.with_(stall_seconds=stall_timeout)
        mode: Mode
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
        if wait:  # the service layer: wait, refresh, the DBA pass the index records
            summary.update(_follow(s, es, job, timeout, dba, quiet=as_json).summary())
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


def _follow(s, es, job, timeout, dba: bool, quiet: bool):
    from ..ingest.service import finish_ingest

    if quiet or not enabled():
        return finish_ingest(s, es, job, timeout=timeout, dba=dba)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]ingest"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn(),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task("ingest", total=job.total, failed=0)
        return finish_ingest(s, es, job, timeout=timeout, dba=dba,
                             on_progress=lambda t, d, f: bar.update(task, completed=d + f, failed=f))


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
    """Blue/green: re-embed INDEX with a new model, verify, swap the alias atomically (an
    index es-metric does not own, with no alias: in place, a new vector field beside the old)."""
    from ..ingest.migrate import MigrationResult
    from ..ingest.service import abandon_change, change_model

    if not model_path:
        raise click.UsageError("--model is required")
    with Cluster() as (s, es):
        if stall_timeout is not None:
            s = s.with_(stall_seconds=stall_timeout)
        if abandon:
            gone, in_place = abandon_change(s, es, index, model_path)
            click.echo(f"abandoned the change to {read_card(model_path)['model_id']}: cleared {gone}; "
                       "search stays on the old model" if in_place else f"deleted half-built index {gone}")
            return
        res = change_model(s, es, index, model_path, force=force, delete_old=delete_old, timeout=timeout)
    if as_json:
        echo_json(asdict(res))
    elif isinstance(res, MigrationResult):
        click.echo(f"{index}: {res.old_model} ({res.old_field}) -> {res.new_model} ({res.new_field}) "
                   f"in place; {res.vectors} of {res.documents} documents embedded, {res.failed} failed; "
                   f"search switched; old vectors cleared from {res.cleared} documents")
    else:
        click.echo(f"{index}: {res.old_index} -> {res.new_index}; {res.documents} documents, "
                   f"{res.vectors} vectors, {res.failed} failed; alias swapped"
                   + (f"; caught up with {res.caught_up} written and {res.removed} deleted during the run"
                      if res.caught_up or res.removed else "")
                   + ("; old index deleted" if res.deleted_old else "; old index kept (--delete-old)"))
