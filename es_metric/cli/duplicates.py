"""esm duplicates: clusters of near-duplicate documents of an index (an explicit O(N·k) pass)."""
from __future__ import annotations

from pathlib import Path

import click

from .common import Cluster, echo_json
from .root import main


@main.command()
@click.argument("index")
@click.option("--threshold", default="auto", show_default=True, metavar="S|auto",
              help="Link documents at least this similar (cosine; L2 distance at most this for "
                   "l2_norm models); auto: the model card's calibrated near-duplicate threshold.")
@click.option("-k", "k", type=click.IntRange(1, 100), default=10, show_default=True,
              help="Neighbours searched per document (per photo on a multi-photo index).")
@click.option("--page", type=click.IntRange(1, 1000), default=100, show_default=True,
              help="Documents per point-in-time page (one msearch each).")
@click.option("--report", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write a page to review the clusters (thumbnails embedded) to this file.")
@click.option("--json", "as_json", is_flag=True, help='Print {"clusters": [{"ids", "similarity"}]}.')
def duplicates(index, threshold, k, page, report, as_json) -> None:
    """Clusters of near-duplicate documents of INDEX: every document's nearest neighbours above
    the threshold, joined by union-find; a cluster's similarity is its weakest link. Reads the
    whole index: run it off-peak."""
    from ..search.duplicates import Scan, find_duplicates

    with Cluster() as (s, es):
        result = find_duplicates(es, index, Scan(threshold=threshold, k=k, page=page))
        if report:
            from ..index.indices import index_info
            from ..search.review import review_page

            report.write_text(review_page(es, index_info(es, index), result, s), encoding="utf-8")
    summary = (f"{len(result['clusters'])} clusters ({sum(len(c['ids']) for c in result['clusters'])} "
               f"documents) among {result['documents']} of {result['index']} at threshold "
               f"{result['threshold']:.4f}" + (f"; review page: {report}" if report else ""))
    if as_json:
        echo_json({"clusters": result["clusters"]})
        click.echo(summary, err=True)
        return
    for cluster in result["clusters"]:
        click.echo(f"{cluster['similarity']:.4f}  {' '.join(cluster['ids'])}")
    click.echo(summary)
