"""esm mapping create | ingest | failures | reindex."""
from __future__ import annotations

from pathlib import Path

import click

from ..index.mappings import INDEX_TYPES, IndexOptions
from . import main
from .common import Cluster, echo_json


@main.group("mapping")
def mapping_group() -> None:
    """Index mappings with a dense_vector field sized by the model card."""


@mapping_group.command("create")
@click.argument("index")
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--existing", is_flag=True, help="Add the vector field to an existing index.")
@click.option("--index-type", type=click.Choice(INDEX_TYPES), default="hnsw", show_default=True)
@click.option("--m", type=int, default=16, show_default=True, help="HNSW links per node.")
@click.option("--ef-construction", type=int, default=100, show_default=True)
@click.option("--vector-field", default="image_vector", show_default=True)
@click.option("--text-field", "text_fields", multiple=True, help="Declare a text field (repeatable).")
@click.option("--keyword-field", "keyword_fields", multiple=True, help="Declare a keyword field.")
@click.option("--replicas", type=int, default=0, show_default=True)
def mapping_create(index, model_path, existing, index_type, m, ef_construction, vector_field,
                   text_fields, keyword_fields, replicas) -> None:
    """Create INDEX-<model id> behind the alias INDEX (or, with --existing, extend INDEX)."""
    from ..index.indices import add_vectors_to_existing, create_versioned_index, index_info
    from ..model.modelfile import read_card

    card = read_card(model_path)
    options = IndexOptions(index_type, m, ef_construction)
    path = str(Path(model_path).resolve())
    with Cluster() as (_s, es):
        if existing:
            name = add_vectors_to_existing(es, index, card, path, options=options, vector_field=vector_field)
            click.echo(f"added {vector_field} ({card['dims']}-d, {card['similarity']}) to existing index {name}")
            return
        name = create_versioned_index(es, index, card, path, options=options, vector_field=vector_field,
                                      text_fields=text_fields, keyword_fields=keyword_fields,
                                      replicas=replicas)
        live = index_info(es, index)
    if live.concrete != name:  # the alias already served another model: it was left alone
        click.echo(f"index {name} ({card['dims']}-d {card['similarity']}, {index_type}) created, but alias "
                   f"{index} still serves {live.concrete} (model {live.model_id}); move it with "
                   f"`esm reindex {index} --model {model_path}`, or delete {live.concrete} to start over",
                   err=True)
        return
    click.echo(f"index {name} ({card['dims']}-d {card['similarity']}, {index_type}) behind alias {index}")


@main.command()
@click.argument("index")
@click.argument("source", required=False)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow progress to the end.")
@click.option("--from-index", is_flag=True, help="SOURCE-less: embed the images of INDEX's own documents.")
@click.option("--image-field", default="image_path", show_default=True,
              help="With --from-index: the field holding image paths.")
@click.option("--image-key", default=None, help="Manifest key holding the image path.")
@click.option("--base-dir", type=click.Path(file_okay=False),
              help="With --from-index: base for relative paths, and a folder images may be read from.")
@click.option("--timeout", type=float, default=None, help="Give up waiting after N seconds.")
@click.option("--stall-timeout", type=float, default=None,
              help="Give up when nothing moved for N s and nothing of the job is queued or running "
                   "[default: ESM_STALL_SECONDS or 120].")
@click.option("--json", "as_json", is_flag=True)
def ingest(index, source, wait, from_index, image_field, image_key, base_dir, timeout, stall_timeout,
           as_json) -> None:
    """Queue SOURCE (image folder or JSONL manifest) for the workers to embed into INDEX."""
    from ..ingest.enqueue import enqueue, existing_index_items
    from ..ingest.sources import local_source

    with Cluster() as (s, es):
        if stall_timeout is not None:
            s = s.with_(stall_seconds=stall_timeout)
        if from_index:
            src, mode = existing_index_items(s, es, index, image_field, base_dir), "update"
        elif source:
            src, mode = local_source(Path(source), s.image_roots, image_key), "index"
        else:
            raise click.UsageError("give SOURCE, or --from-index")
        job = enqueue(s, es, index, src, mode=mode)
        if not as_json:
            click.echo(f"job {job.job_id}: {job.total - job.refused} images queued in {job.tasks} tasks "
                       f"-> {job.target}" + (f"; {job.refused} refused (see `esm failures {index}`)"
                                              if job.refused else ""), err=True)
        summary = {"job_id": job.job_id, "queued": job.total - job.refused, "refused": job.refused,
                   "index": job.target}
        if wait:
            from ..ingest.enqueue import make_searchable
            summary.update(_follow(s, job, timeout, quiet=as_json))
            make_searchable(es, job)
            from ..search.dba import augment_if_recorded
            summary["dba"] = augment_if_recorded(es, index)  # None: the model records no DBA
    if as_json:
        echo_json(summary)
    elif wait:
        click.echo(f"done: {summary['indexed']} indexed, {summary['failed']} failed "
                   f"in {summary['seconds']} s ({summary['images_per_s']} images/s)"
                   + (f"; see `esm failures {index}`" if summary["failed"] else ""))


def _follow(s, job, timeout, quiet: bool) -> dict:
    import time

    from ..ingest.enqueue import wait
    from ..progressbar import enabled

    t0 = time.monotonic()
    if quiet or not enabled():
        done, failed = wait(s, job, timeout=timeout)
    else:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("[bold]ingest"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn(),
                      console=Console(stderr=True)) as bar:
            task = bar.add_task("ingest", total=job.total, failed=0)
            done, failed = wait(s, job, timeout=timeout,
                                on_progress=lambda t, d, f: bar.update(task, completed=d + f, failed=f))
    secs = time.monotonic() - t0
    return {"indexed": done, "failed": failed, "seconds": round(secs, 1),
            "images_per_s": round((done + failed) / secs, 1) if secs else None}


@main.command()
@click.argument("index")
@click.option("--json", "as_json", is_flag=True)
@click.option("--size", type=int, default=1000, show_default=True)
def failures(index, as_json, size) -> None:
    """List images that could not be indexed into INDEX, with reasons."""
    from ..index.failures import list_failures

    with Cluster() as (s, es):
        rows = list_failures(es, s.failures_index, index, size)
    if as_json:
        echo_json({"index": index, "count": len(rows), "failures": rows})
        return
    for r in rows:
        click.echo(f"{r['reason']:<26} {r['ref']}  {r.get('message', '')}")
    click.echo(f"{len(rows)} failure(s)")


@main.command()
@click.argument("index")
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False),
              help="The new model file.")
@click.option("--force", is_flag=True, help="Accept a model that failed its gate, or image failures.")
@click.option("--delete-old", is_flag=True, help="Delete the old index after the swap.")
@click.option("--abandon", is_flag=True, help="Delete a half-built index for --model instead.")
@click.option("--timeout", type=float, default=None)
@click.option("--json", "as_json", is_flag=True)
def reindex(index, model_path, force, delete_old, abandon, timeout, as_json) -> None:
    """Blue/green: re-embed INDEX with a new model, verify, swap the alias atomically."""
    from dataclasses import asdict

    from ..model.modelfile import read_card
    from ..ingest.reindex import abandon as abandon_target, reindex as run_reindex

    if not model_path:
        raise click.UsageError("--model is required")
    card = read_card(model_path)
    with Cluster() as (s, es):
        if abandon:
            click.echo(f"deleted half-built index {abandon_target(es, index, card['model_id'])}")
            return
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
