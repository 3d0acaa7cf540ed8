"""Incremental DBA without a search per entered neighbourhood, on the real stack: the lists the
markers keep are merged with the new documents, across the steps of a pass that overlaps the
workers' embedding, and an entered document written meanwhile by someone else is searched again
instead of being overwritten from a stale list. Each time the result is what a full pass gives."""
from __future__ import annotations

import numpy as np
import pytest
from elasticsearch.helpers import bulk

import es_metric.search.dba as dba
from es_metric.index.dbafields import DbaFields, augmented_doc
from es_metric.index.fields import DocFields
from es_metric.index.indices import index_info
from es_metric.index.vectors import hit_vector
from es_metric.search.dbaingest import IngestDba
from es_metric.search.rerank import augment_database
from es_metric.similarity import Metric
from tests.integration.helpers import esm
from tests.integration.test_dba_incremental import K, around, dba_model, fill, raw_and_searched, unit  # noqa: F401

pytestmark = pytest.mark.integration


def built(es, name: str, model, seed: int = 3) -> tuple[np.ndarray, np.random.Generator]:
    """An index of 1,000 documents augmented as an exact full pass leaves them (with lists),
    around 10 centres; returns the centres."""
    esm("mapping", "create", name, "--model", model)
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((10, index_info(es, name).dims)))
    fill(es, name, around(centres, 100, 0.3, rng), augmented=True)
    return centres, rng


def write_new(es, name: str, vectors: np.ndarray, prefix: str) -> None:
    """Documents as the worker writes them (vector only, not augmented), not refreshed."""
    info = index_info(es, name)
    bulk(es, ({"_index": info.concrete, "_id": f"{prefix}{i}",
               "_source": {info.vector_field: v.round(7).tolist(), "image_path": f"/new/{prefix}{i}.png",
                           "model_id": info.model_id, "indexed_at": "2026-01-01T00:00:00.000Z"}}
              for i, v in enumerate(vectors)))


def against_full_pass(es, name: str, new_prefix: str) -> tuple[np.ndarray, set[int], set[int]]:
    """(max difference of the new documents from a full pass, documents differing from it,
    documents a new one entered)."""
    ids, raw, searched = raw_and_searched(es, name)
    expected = augment_database(raw, K, 3.0, Metric.COSINE)
    fresh = [n for n, i in enumerate(ids) if i.startswith(new_prefix)]
    sims = raw @ raw.T
    np.fill_diagonal(sims, -np.inf)
    changed = set(np.where((sims[:, fresh] >= np.sort(sims, axis=1)[:, [-K]]).any(1))[0]) - set(fresh)
    differing = set(np.where(np.abs(searched - expected).max(1) > 1e-4)[0]) - set(fresh)
    return np.abs(searched[fresh] - expected[fresh]).max(1), differing, changed


def test_a_pass_in_steps_along_the_wait_ends_as_one_full_pass(es, index_name, dba_model):
    centres, rng = built(es, index_name, dba_model)
    new = around(centres[:4], 4, 0.15, rng)  # 16 new documents, 4 tight groups
    first, second = new[::2], new[1::2]      # each group split between the two batches
    along = IngestDba(es, index_name, started_at=None)
    write_new(es, index_name, first, "n")
    along.progress(16, 8, 0)                 # the workers wrote the first batch: a step
    along.pause()
    write_new(es, index_name, second, "m")
    along.progress(16, 16, 0)                # the job is complete: left to finish
    es.indices.refresh(index=index_name)     # make_searchable
    summary = along.finish()
    assert summary["steps"] == 1 and summary["documents"] == 16 and summary["after_wait_s"] <= summary["total_s"]
    assert summary["searched"] == 0 and summary["failed"] == 0
    assert summary["written"] <= 16 * (K + 1)

    fresh_diff, differing, changed = against_full_pass(es, index_name, ("n", "m"))
    assert fresh_diff.max() <= 1e-4  # the first batch's lists took in the second batch
    assert differing <= changed


def test_a_step_may_spend_the_budget_of_the_jobs_images_still_to_come(es, index_name, dba_model):
    esm("mapping", "create", index_name, "--model", dba_model)
    rng = np.random.default_rng(5)
    dims = index_info(es, index_name).dims
    hubs = unit(rng.standard_normal((10, dims)))
    fill(es, index_name, unit(np.repeat(hubs, 100, axis=0) + 0.1 * rng.standard_normal((1000, dims))),
         augmented=True)  # 10 tight groups of 100
    along = IngestDba(es, index_name, started_at=None)
    write_new(es, index_name, hubs[:1], "n")  # the job's first image: nearer to its 100 than they are to each other
    along.progress(12, 1, 0)                  # a step of one document that entered ~100 neighbourhoods
    along.pause()
    first = dict(along.p.counts)
    write_new(es, index_name, unit(rng.standard_normal((11, dims))), "m")  # the rest: far from everything
    along.progress(12, 12, 0)
    es.indices.refresh(index=index_name)
    summary = along.finish()
    assert first["neighbours"] > K and first["deferred"] == 0  # beyond one document's k: the job's budget
    assert summary["deferred"] == 0 and summary["written"] <= 12 * (K + 1)
    fresh_diff, differing, changed = against_full_pass(es, index_name, ("n", "m"))
    assert fresh_diff.max() <= 1e-4 and differing <= changed


def test_a_step_that_fails_leaves_the_rest_to_finish(es, index_name, dba_model):
    centres, rng = built(es, index_name, dba_model)
    along = IngestDba(es, index_name, started_at=None)
    write_new(es, index_name, around(centres[:2], 3, 0.15, rng), "n")
    concrete = index_info(es, index_name).concrete
    es.indices.close(index=concrete)  # the cluster refuses the step
    try:
        along.progress(6, 3, 0)
        along.pause()
    finally:
        es.indices.open(index=concrete, wait_for_active_shards="1")
    along.progress(6, 5, 0)  # no more steps once one failed
    es.indices.refresh(index=index_name)
    summary = along.finish()
    assert summary["steps"] == 0 and summary["documents"] == 6
    assert against_full_pass(es, index_name, "n")[0].max() <= 1e-4


def test_an_entered_document_written_meanwhile_is_searched_again_not_overwritten(es, index_name, dba_model,
                                                                                  monkeypatch):
    centres, rng = built(es, index_name, dba_model)
    info = index_info(es, index_name)
    f = DbaFields.of(info.fields)
    write_new(es, index_name, around(centres[:1], 3, 0.15, rng), "n")
    es.indices.refresh(index=index_name)
    read_marked, touched = dba.read_marked, []

    def and_another_writer(client, index, fields, ids):
        """Reads as the pass does, then another pass rewrites one of the documents read."""
        got = read_marked(client, index, fields, ids)
        if not touched and got:
            e = next(iter(got.values()))
            hit = client.search(index=index, query={"ids": {"values": [e.id]}}, docvalue_fields=[f.vector],
                                source=[f.marker])["hits"]["hits"][0]
            mark = {**DocFields.read(hit["_source"], f.marker), "at": "2026-02-02T00:00:00.000Z"}
            client.update(index=index, id=e.id, doc=augmented_doc(f, hit_vector(hit, f.vector),
                                                                  e.vector.astype(float).tolist(), mark))
            touched.append(e.id)
        return got

    monkeypatch.setattr(dba, "read_marked", and_another_writer)
    summary = dba.augment_new(es, index_name)
    assert touched and summary["searched"] >= 1 and summary["failed"] == 0
    stamped = es.count(index=index_name, query={"term": {f"{f.marker}.run": summary["run"]}})["count"]
    assert stamped == summary["written"]  # the touched document too: written again after its search
    fresh_diff, differing, changed = against_full_pass(es, index_name, "n")
    assert fresh_diff.max() <= 1e-4 and differing <= changed


def test_a_fault_in_a_step_is_raised_by_finish_not_lost(es, index_name, dba_model, monkeypatch):
    import es_metric.search.dbaingest as dbaingest

    centres, rng = built(es, index_name, dba_model)
    along = IngestDba(es, index_name, started_at=None)
    write_new(es, index_name, around(centres[:1], 2, 0.15, rng), "n")

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug in a step")

    monkeypatch.setattr(dbaingest, "augment_blocks", broken)
    along.progress(4, 2, 0)
    along.pause()
    with pytest.raises(ZeroDivisionError):
        along.finish()


def test_finish_sees_what_the_step_under_way_wrote(es, index_name, dba_model):
    centres, rng = built(es, index_name, dba_model)
    along = IngestDba(es, index_name, started_at=None)
    write_new(es, index_name, around(centres[:2], 4, 0.15, rng), "n")
    along.progress(12, 8, 0)                  # a step starts in its thread...
    write_new(es, index_name, around(centres[2:3], 4, 0.15, rng), "m")
    es.indices.refresh(index=index_name)      # ...the job ends, make_searchable, while it may still write
    summary = along.finish()
    assert summary["documents"] == 12 and summary["written"] <= 12 * (K + 1)  # none augmented twice
    fresh_diff, differing, changed = against_full_pass(es, index_name, ("n", "m"))
    assert fresh_diff.max() <= 1e-4 and differing <= changed
