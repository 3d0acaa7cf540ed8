"""esm search | dba: searching an index, and the database-side augmentation pass."""
from __future__ import annotations

from pathlib import Path

import click

from ..progressbar import enabled
from ..redact import redact_url
from ..search.facets import MAX_FACET_SIZE, TERMS_SIZE
from ..search.fusion import DEFAULT_FUSION, DEFAULT_IMAGE_WEIGHT, DEFAULT_TEXT_WEIGHT, FUSIONS
from ..search.queries import MAX_NUM_CANDIDATES, MAX_QE_K
from .common import Cluster, FiniteRange, echo_json
from .root import main


@main.command()
@click.argument("index")
@click.option("--image", help="Query image: a file, or an http(s) URL (fetched under ESM_URL_ALLOW).")
@click.option("--like", "like", multiple=True,
              help="More like this: an indexed document id or an image file (repeatable).")
@click.option("--unlike", "unlike", multiple=True,
              help="Less like this: a document id or an image file (repeatable; with --image or --like).")
@click.option("--examples", type=click.Choice(["mean", "max"]), default="mean", show_default=True,
              help="Several examples: mean vector moved away from the negatives (Rocchio), or each "
                   "result's best similarity to any positive minus its best to any negative.")
@click.option("--text", help="Text query on the index's text fields (hybrid with an image).")
@click.option("--text-field", "text_fields", multiple=True, metavar="FIELD",
              help="Match --text on this text field of the index, unweighted (repeatable). "
                   "Default: every text field, names and titles x3.")
@click.option("--text-query", "text_query", metavar="JSON",
              help='The shop\'s own Elasticsearch query as the text leg, e.g. \'{"match": {"name": '
                   '"{{text}}"}}\' ({{text}}: where --text goes); filters still apply.')
@click.option("--filter", "filters", multiple=True,
              help="FIELD=VALUE, FIELD!=VALUE, FIELD>=N, FIELD=A|B, FIELD=LO..HI (repeatable).")
@click.option("--facet", "facets", multiple=True,
              help="Count the results' values of FIELD (terms, or ranges for numbers; repeatable).")
@click.option("--facet-size", type=click.IntRange(1, MAX_FACET_SIZE), default=TERMS_SIZE, show_default=True,
              help="Values per terms facet; the rest are counted in an \"other\" row.")
@click.option("--collapse", metavar="FIELD", help="One hit per value of FIELD (a product or group id).")
@click.option("--diversify", type=click.FloatRange(0, 1), default=None, metavar="LAMBDA",
              help="Maximal marginal relevance: LAMBDA x relevance - (1 - LAMBDA) x similarity to "
                   "the hits above (1: plain ranking; try 0.7).")
@click.option("--explain", is_flag=True,
              help="Per hit: each leg's raw score, rank, normalised score and weight.")
@click.option("-k", "k", type=int, default=10, show_default=True)
@click.option("--page", type=int, default=1, show_default=True)
@click.option("--num-candidates", type=click.IntRange(1, MAX_NUM_CANDIDATES), default=None,
              help="kNN candidates per shard (more: closer to exact, slower). Default: 10 x k, at least 100.")
@click.option("--fusion", type=click.Choice(FUSIONS), default=DEFAULT_FUSION, show_default=True,
              help="Image + text: adaptive (minmax, the text's weight scaled per query by how far "
                   "the photo's best hits agree with it: nothing when the photo rejects the text), "
                   "minmax or zscore (each leg normalised over its window, weighted sum), rrf "
                   "(weighted reciprocal rank fusion), weighted (raw scores summed).")
@click.option("--image-weight", type=float, default=DEFAULT_IMAGE_WEIGHT, show_default=True)
@click.option("--text-weight", type=float, default=DEFAULT_TEXT_WEIGHT, show_default=True)
@click.option("--min-similarity", metavar="S|auto", default=None,
              help="Cosine similarity floor (or L2 distance ceiling for l2_norm models); auto: "
                   "the cut-off the model card calibrated for its precision target.")
@click.option("--near-duplicates", is_flag=True, help="Only near-duplicates (calibrated threshold).")
@click.option("--qe-k", type=click.IntRange(0, MAX_QE_K), default=None,
              help="Query expansion: blend the first round's top N vectors into the query "
                   "(0: off). Default: the model card's setting.")
@click.option("--json", "as_json", is_flag=True)
def search(index, image, like, unlike, examples, text, text_fields, text_query, filters, facets, facet_size, collapse,
           diversify, explain, k, page, num_candidates, fusion, image_weight, text_weight, min_similarity,
           near_duplicates, qe_k, as_json) -> None:
    """Search INDEX by image(s), by document(s), by text, with filters and facets."""
    from ..images import DecodeLimits, read_bytes
    from ..ingest.fetch import read_ref
    from ..model.runtime import Inference
    from ..search.service import SearchRequest, run_search

    with Cluster() as (s, es):
        limits = DecodeLimits(s.max_image_pixels, s.max_image_bytes)
        like_ids, like_images = _ids_and_files(like, limits, read_bytes)
        unlike_ids, unlike_images = _ids_and_files(unlike, limits, read_bytes)
        req = SearchRequest(image=read_ref(image, s, limits) if image else None, like=like_ids,
                            unlike=unlike_ids, like_images=like_images, unlike_images=unlike_images,
                            examples=examples, text=text, text_fields=list(text_fields) or None,
                            filters=list(filters), facets=list(facets),
                            k=k, page=page, num_candidates=num_candidates, fusion=fusion,
                            image_weight=image_weight, text_weight=text_weight,
                            min_similarity=min_similarity, near_duplicates=near_duplicates, qe_k=qe_k,
                            text_query=text_query, facet_size=facet_size, collapse=collapse,
                            diversify=diversify, explain=explain)
        result = run_search(es, index, req, limits, where=redact_url(s.es_url),
                            inference=Inference.of(s))
    if as_json:
        echo_json(result)
        return
    _table(result)


def _ids_and_files(values, limits, read_bytes) -> tuple[list[str], list[bytes]]:
    """An existing file is an example image; anything else a document id."""
    ids, images = [], []
    for v in values:
        if _names_a_file(v):
            images.append(read_bytes(v, limits))
        else:
            ids.append(v)
    return ids, images


def _names_a_file(value: str) -> bool:
    """True for an existing regular file; a value no file could have (too long, NUL) is an id."""
    try:
        return Path(value).is_file()
    except (OSError, ValueError):
        return False


def _table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(result['hits'])} hits  (ES {result['took_ms']} ms, "
                        f"client {result['client_ms']} ms, model {result['model_id']})")
    explained = any("explain" in h for h in result["hits"])
    for col in ("rank", "score", "id", "title / label", "image") + ("explain",) * explained:
        table.add_column(col)
    for rank, hit in enumerate(result["hits"], 1):
        src = hit["source"]
        title = src.get("title") or src.get("name") or src.get("label") or ""
        table.add_row(str(rank), f"{hit['score']:.4f}", str(hit["id"])[:16], str(title)[:40],
                      str(src.get("image_path", ""))[-50:], *([_why(hit.get("explain"))] * explained))
    console = Console()
    console.print(table)
    for name, rows in (result.get("facets") or {}).items():
        console.print(f"[bold]{name}[/]: " + ", ".join(
            f"{'other' if r.get('other') else r['value']} ({r['count']})" for r in rows))
    if result.get("note"):
        console.print(f"[yellow]{result['note']}")


def _why(explain: dict | None) -> str:
    """One hit's explanation in a line: each leg's raw score (rank) -> normalised x weight."""
    if not explain:
        return ""
    parts = []
    for name, leg in explain["legs"].items():
        raw = "-" if leg["score"] is None else f"{leg['score']:.3g} (#{leg['rank']})"
        norm = "" if leg["normalised"] is None else f" -> {leg['normalised']:.3g} x {leg['weight']:g}"
        parts.append(f"{name} {raw}{norm}")
    mmr = explain.get("mmr")
    return " + ".join(parts) + (f"; mmr {mmr['mmr']:.3g}" if mmr else "")


@main.command()
@click.argument("index")
@click.option("--full", is_flag=True,
              help="Augment every document again (off-peak; resumes an interrupted --full).")
@click.option("--k", "k", type=click.IntRange(min=1), default=None,
              help="Neighbours blended into each vector. Default: as the index was augmented, "
                   "else the model card's. A new k needs --full.")
@click.option("--alpha", type=FiniteRange(min=0), default=None,
              help="Similarity exponent of the neighbour weights.")
@click.option("--num-candidates", type=click.IntRange(min=1, max=10_000), default=None,
              help="HNSW candidates of each neighbour search (more: closer to exact, slower).")
@click.option("--block", type=click.IntRange(min=1, max=5_000), default=200, show_default=True,
              help="Documents per block (memory: a block and its neighbours' vectors).")
@click.option("--json", "as_json", is_flag=True)
def dba(index, full, k, alpha, num_candidates, block, as_json) -> None:
    """Database-side augmentation: blend vectors of INDEX with their nearest neighbours'.
    Without --full: the documents not augmented yet (and the existing ones they enter)."""
    from ..search.dba import augment_new
    from ..search.dbafull import rebuild

    with Cluster() as (_s, es):
        if full:
            result = _with_bar(lambda cb: rebuild(es, index, k=k, alpha=alpha, candidates=num_candidates,
                                                  block=block, on_progress=cb), as_json)
        else:
            result = augment_new(es, index, k=k, alpha=alpha, candidates=num_candidates, block=block,
                                 record=True)
    if as_json:
        echo_json(result)
        return
    click.echo(f"{result['documents']} documents of {result['index']} augmented with their {result['k']} "
               f"nearest neighbours" + ("" if full else f", {result['neighbours']} neighbours recomputed")
               + f"; {result['written']} written, {result['failed']} failed in {result['total_s']} s"
               + (f" (resumed: {result['already_done']} done before)" if full and result["resumed"] else ""))


def _with_bar(work, quiet: bool) -> dict:
    """Run ``work(on_progress)`` under a progress bar on stderr (none when quiet)."""
    if quiet or not enabled():
        return work(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]dba --full"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task("dba", total=None)
        return work(lambda done, total: bar.update(task, completed=done, total=total))
