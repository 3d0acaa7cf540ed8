"""esm mapping create | failures: the index and its dead letters."""
from __future__ import annotations

from pathlib import Path

import click

from ..config import Settings
from ..index.fields import DEFAULT_OBJECT
from ..index.gallery import multi_photo_vector_field
from ..index.mappings import DEFAULT_OVERSAMPLE, INDEX_TYPES, IndexOptions
from ..model.card import gate_allows, read_card
from .common import Cluster, echo_json
from .root import main


@main.group("mapping")
def mapping_group() -> None:
    """Index mappings with a dense_vector field sized by the model card."""


@mapping_group.command("create")
@click.argument("index")
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--existing", is_flag=True, help="Add the vector field to an existing index.")
@click.option("--dba", is_flag=True,
              help="With --existing: let database-side augmentation write into the index's "
                   "documents (its raw-vector copy and marker fields); off by default there.")
@click.option("--index-type", type=click.Choice(INDEX_TYPES), default="hnsw", show_default=True)
@click.option("--m", type=int, default=16, show_default=True, help="HNSW links per node.")
@click.option("--ef-construction", type=int, default=100, show_default=True)
@click.option("--rescore-oversample", type=float, default=DEFAULT_OVERSAMPLE, show_default=True,
              help="Quantised types: rescore oversample x k candidates with the full vectors (0: off).")
@click.option("--vector-field", default="image_vector", show_default=True)
@click.option("--multi-photo", is_flag=True,
              help="Several photos per document: one vector per photo in a nested field.")
@click.option("--photos-field", default="photos", show_default=True,
              help="With --multi-photo: the nested field of the photos.")
@click.option("--fields-object", default=DEFAULT_OBJECT, show_default=True,
              help="With --existing: the object es-metric keeps all its fields under (must be "
                   "free in the index: the shop's own fields are never written).")
@click.option("--text-field", "text_fields", multiple=True, help="Declare a text field (repeatable).")
@click.option("--keyword-field", "keyword_fields", multiple=True, help="Declare a keyword field.")
@click.option("--replicas", type=int, default=0, show_default=True)
@click.option("--lean/--no-lean", default=True, show_default=True,
              help="New index: leave the vector out of _source (about a third of the disk at "
                   "128-d); partial updates by other applications must then carry the vector.")
@click.option("--force", is_flag=True, help="Use a model whose gate did not pass (not better than pretrained).")
def mapping_create(index, model_path, existing, dba, index_type, m, ef_construction, rescore_oversample,
                   vector_field, multi_photo, photos_field, fields_object, text_fields,
                   keyword_fields, replicas, lean, force) -> None:
    """Create INDEX-<model id> behind the alias INDEX (or, with --existing, extend INDEX)."""
    from ..index.indices import add_vectors_to_existing, create_versioned_index, index_info

    from ..model.runtime import card_for_runtime

    card = card_for_runtime(read_card(model_path), Settings.from_env().runtime)
    gate_allows(card, force)
    options = IndexOptions(index_type, m, ef_construction, rescore_oversample)
    path = str(Path(model_path).resolve())
    if multi_photo:
        vector_field = multi_photo_vector_field(photos_field)
    if dba and (not existing or multi_photo):
        raise click.UsageError("--dba is for --existing indices of one vector per document "
                               "(a new index runs DBA when its model card asks for it)")
    with Cluster() as (_s, es):
        if existing:
            name = add_vectors_to_existing(es, index, card, path, options=options, vector_field=vector_field,
                                           fields_object=fields_object, dba=dba)
            click.echo(f"added {index_info(es, name).vector_field} ({card['dims']}-d, "
                       f"{card['similarity']}) to existing index {name}"
                       + ("; DBA may write into its documents" if dba else ""))
            return
        name = create_versioned_index(es, index, card, path, options=options, vector_field=vector_field,
                                      text_fields=text_fields, keyword_fields=keyword_fields,
                                      replicas=replicas, lean=lean)
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
