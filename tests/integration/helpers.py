"""Helpers for integration tests: run the CLI in-process and parse its JSON; read the worker log."""
from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Iterator

from click.testing import CliRunner

from es_metric.cli import main


def worker_log(settings) -> str:
    """Everything the worker of ``settings.worker_queue`` (started by the stack) has logged."""
    import re

    from es_metric.stack.worker import worker_pidfile
    mine = re.compile(rf"{re.escape(worker_pidfile(settings).stem)}-\d+\.log")  # <stem>-%i.log
    return "\n".join(p.read_text(errors="replace")
                     for p in sorted((settings.stack_dir / "logs").iterdir()) if mine.fullmatch(p.name))


def stored_docs(es, index: str, query: dict | None = None) -> dict[str, dict]:
    """Every document's _source with its vectors (image_vector, image_vector_raw) read back from
    doc values, as es-metric reads them: a lean index keeps them out of _source."""
    from elasticsearch.helpers import scan

    from es_metric.index.vectors import hit_vector, vector_fields

    es.indices.refresh(index=index)
    fields = vector_fields("image_vector")
    docs = {}
    for h in scan(es, index=index, query={"query": query or {"match_all": {}},
                                          "docvalue_fields": fields}):
        vectors = {f: v for f in fields for v in [hit_vector(h, f)] if v is not None}
        docs[h["_id"]] = {**h["_source"], **vectors}
    return docs


def own_fields(es, index: str, source: dict) -> dict:
    """es-metric's own fields of a document by their plain names (``image_ref``, ``model_id``,
    ``indexed_at``, ``image_sha256``, ``image_path``; ``vector``: the vector or the photos),
    read where the index's record keeps them (top level, or under an --existing index's object)."""
    from es_metric.index.indices import index_info

    f = index_info(es, index).fields
    paths = {"image_path": f.image_path, "image_sha256": f.image_sha256, "model_id": f.model_id,
             "indexed_at": f.indexed_at, "image_ref": f.image_ref, "vector": f.photos or f.vector}
    return {name: value for name, path in paths.items() for value in [f.read(source, path)]
            if value is not None}


def esm(*args: str, ok: bool = True):
    """Run ``esm ARGS``; with ok=True assert exit 0 and return the result."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, f"esm {' '.join(map(str, args))} failed:\n{result.output}"
    return result


def esm_json(*args: str) -> dict:
    out = esm(*args, "--json").stdout
    return json.loads(out.strip().splitlines()[-1])



def esm_error(*args: str) -> str:
    """Run ``esm ARGS`` expecting a user error: a non-zero exit, no traceback, and exactly one
    line on stderr starting with ``error:``; returns that line."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code != 0, f"esm {' '.join(map(str, args))} succeeded:\n{result.output}"
    assert isinstance(result.exception, SystemExit), f"not a clean exit: {result.exception!r}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@contextmanager
def url_worker(stack, images: dict[str, bytes], **changes) -> Iterator[tuple]:
    """A local image host (tests.urlserver: no CORS headers; it records every request's headers)
    and a worker on a queue of its own whose settings allow-list it: (settings, host:port,
    handler). ``changes``: more settings for that worker (and the tests' API)."""
    import uuid

    from es_metric.stack import worker as esm_worker
    from tests.urlserver import serving_handler

    with serving_handler(images) as (hp, handler):
        s = stack.with_(worker_queue=f"esm-url-{uuid.uuid4().hex[:6]}", url_allow=(hp,), **changes)
        esm_worker.start_worker(s)
        try:
            yield s, hp, handler
        finally:
            esm_worker.stop_worker(s)
