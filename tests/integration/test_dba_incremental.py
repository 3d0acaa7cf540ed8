"""Incremental DBA on the real stack: an ingest writes what it adds and the neighbourhoods it
enters, and leaves the index as a full pass would; `esm dba --full` resumes after a kill; a
shop's index is written only when the shop asked for it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from elasticsearch.helpers import bulk, scan

from es_metric.index.dbafields import DbaFields, augmented_doc, marker
from es_metric.index.fields import DocFields
from es_metric.index.indices import index_info
from es_metric.index.vectors import hit_vector
from es_metric.search.rerank import augment_database
from es_metric.similarity import Metric
from tests.imagegen import make_dataset
from tests.imports import run_esm
from tests.integration.helpers import esm, esm_error, esm_json
from tests.integration.test_migrate import shop_index

pytestmark = pytest.mark.integration
K = 10
KILLED_AFTER_5_BLOCKS = """
import os, signal, sys
from es_metric.search import dbafull
from es_metric.cli import main
written = dbafull.write
calls = []
def write_then_die(*args, **kwargs):
    out = written(*args, **kwargs)
    calls.append(1)
    if len(calls) == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return out
dbafull.write = write_then_die
main(prog_name="esm")
"""


@pytest.fixture(scope="module")
def dba_model(tiny_model, tmp_path_factory) -> Path:
    """The session's small model with a card that asks for DBA (k = 10)."""
    from es_metric.model.modelfile import load_model, save_model

    model = load_model(tiny_model)
    card = dict(model.card, rerank={"qe_k": 0, "qe_alpha": 3.0, "dba_k": K, "dba_alpha": 3.0})
    return save_model(tmp_path_factory.mktemp("dba") / "dba.pt", model.encoder, card)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def fill(es, name: str, vectors: np.ndarray, augmented: bool = False, lists: bool = True) -> None:
    """Documents as the worker writes them, written directly; ``augmented``: as an exact full
    pass leaves them (vector blended with its k nearest, raw copy, marker with the k-th and,
    with ``lists``, the k nearest ids; without: a marker from before the lists were kept)."""
    info = index_info(es, name)
    f = DbaFields.of(info.fields)
    if augmented:
        sims = vectors @ vectors.T
        np.fill_diagonal(sims, -np.inf)
        kth = np.sort(sims, axis=1)[:, -K]
        nearest = np.argsort(-sims, axis=1, kind="stable")[:, :K]
        blended = augment_database(vectors, K, 3.0, Metric.COSINE)

    def source(i: int, v: np.ndarray) -> dict:
        doc = {f.vector: v.round(7).tolist(), "image_path": f"/synthetic/{i}.png", "image_sha256": f"s{i}",
               "model_id": info.model_id, "indexed_at": "2026-01-01T00:00:00.000Z"}
        if augmented:
            ids = [f"s{j}" for j in nearest[i]] if lists else None
            doc.update(augmented_doc(f, blended[i].round(7).tolist(), v.round(7).tolist(),
                                     marker(K, 3.0, kth[i], "fill", "2026-01-01T00:00:00.000Z", ids)))
        return doc
    bulk(es, ({"_index": info.concrete, "_id": f"s{i}", "_source": source(i, v)}
              for i, v in enumerate(vectors)), refresh=True)


def around(centres: np.ndarray, per: int, spread: float, rng) -> np.ndarray:
    """``per`` vectors drawn around each centre, the centre itself one more draw among them."""
    dims = centres.shape[1]
    hub = unit(centres + spread * rng.standard_normal(centres.shape))  # where the draws centre
    return unit(np.repeat(hub, per, axis=0) + spread * rng.standard_normal((len(hub) * per, dims)))


def dba_docs(es, name: str) -> dict[str, dict]:
    """Each document's DBA state where the index's record puts it (top level, or under the
    object of an --existing index): ``vector``, ``raw`` (None: not augmented), ``marker``, and
    its whole ``source``."""
    f = DbaFields.of(index_info(es, name).fields)
    es.indices.refresh(index=name)
    return {h["_id"]: {"vector": hit_vector(h, f.vector), "raw": hit_vector(h, f.raw), "source": h["_source"],
                       "marker": DocFields.read(h["_source"], f.marker)}
            for h in scan(es, index=name, query={"docvalue_fields": [f.vector, f.raw]})}


def raw_and_searched(es, name: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    docs = dba_docs(es, name)
    ids = sorted(docs)
    raw = np.stack([docs[i]["raw"] or docs[i]["vector"] for i in ids])
    return ids, raw.astype(np.float32), np.stack([docs[i]["vector"] for i in ids]).astype(np.float32)


def primaries_written(es, name: str) -> int:
    concrete = index_info(es, name).concrete
    stats = es.indices.stats(index=concrete, metric="indexing")["indices"][concrete]["primaries"]
    return int(stats["indexing"]["index_total"])


@pytest.mark.parametrize("lists", [True, False], ids=["kept-lists", "older-markers"])
def test_five_documents_into_two_thousand_write_at_most_five_times_k_plus_one_as_a_full_pass_would(
        es, index_name, dba_model, tmp_path, lists):
    from es_metric.search.service import image_vector

    new = make_dataset(tmp_path / "new", n_classes=5, per_class=1, seed=7)
    esm("mapping", "create", index_name, "--model", dba_model)
    info = index_info(es, index_name)
    queries = np.stack([image_vector(info, p.read_bytes()) for p in sorted(new.rglob("*.jpg"))])
    rng = np.random.default_rng(0)
    others = unit(rng.standard_normal((25, queries.shape[1])))
    fill(es, index_name, np.concatenate([around(queries, 150, 0.25, rng), around(others, 50, 0.25, rng)]),
         augmented=True, lists=lists)  # 2,000 documents as an exact full pass leaves them

    before = primaries_written(es, index_name)
    summary = esm_json("ingest", index_name, new)
    dba = summary["dba"]
    assert summary["indexed"] == 5 and dba["documents"] == 5 and dba["failed"] == 0
    assert dba["neighbours"] > 0 and dba["written"] == 5 + dba["neighbours"] <= 5 * (K + 1)
    # kept lists: the entered neighbourhoods are merged, not searched; older markers: searched
    assert dba["searched"] == (0 if lists else dba["neighbours"])
    assert primaries_written(es, index_name) - before == 5 + dba["written"]  # the worker's 5, then DBA's
    stamped = es.count(index=index_name, query={"term": {"image_vector_dba.run": dba["run"]}})["count"]
    assert stamped == dba["written"]

    ids, raw, searched = raw_and_searched(es, index_name)
    expected = augment_database(raw, K, 3.0, Metric.COSINE)  # a full pass, exact, in memory
    fresh = [ids.index(i) for i in ids if not i.startswith("s")]
    assert len(fresh) == 5
    np.testing.assert_allclose(searched[fresh], expected[fresh], atol=1e-4)
    # the others: stale only where a new document entered a neighbourhood the bound left unwritten
    sims = raw @ raw.T
    np.fill_diagonal(sims, -np.inf)
    changed = set(np.where((sims[:, fresh] >= np.sort(sims, axis=1)[:, [-K]]).any(1))[0]) - set(fresh)
    differing = set(np.where(np.abs(searched - expected).max(1) > 1e-4)[0])
    assert differing <= changed, "a document no new one entered was changed"
    assert len(differing) <= len(changed) - dba["neighbours"] + 1  # + 1: one HNSW miss at most


def test_dba_full_resumes_after_a_kill(es, index_name, dba_model, stack):
    esm("mapping", "create", index_name, "--model", dba_model)
    rng = np.random.default_rng(1)
    fill(es, index_name, around(unit(rng.standard_normal((20, index_info(es, index_name).dims))), 20, 0.3, rng))
    concrete = index_info(es, index_name).concrete
    env = {**os.environ, "ESM_PROGRESS": "0"}
    # the pass kills itself (SIGKILL: no cleanup, no chance to record anything) right after its
    # fifth block is written: the kill lands at the same point on a fast or a slow machine
    proc = subprocess.run([sys.executable, "-c", KILLED_AFTER_5_BLOCKS, "dba", index_name, "--full", "--block", "20",
                           "--num-candidates", "400", "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    meta = es.indices.get_mapping(index=concrete)[concrete]["mappings"]["_meta"]["es_metric"]
    run = meta["dba_full"]["run"]
    es.indices.refresh(index=concrete)
    done = es.count(index=concrete, query={"term": {"image_vector_dba.run": run}})["count"]
    assert done == 100

    again = esm_json("dba", index_name, "--full", "--block", "20", "--num-candidates", "400")
    assert again["resumed"] is True and again["run"] == run and again["already_done"] == done
    assert again["documents"] == 400 - done and again["total"] == 400
    meta = es.indices.get_mapping(index=concrete)[concrete]["mappings"]["_meta"]["es_metric"]
    assert "dba_full" not in meta and meta["dba_setting"] == {"k": K, "alpha": 3.0}
    _, raw, searched = raw_and_searched(es, index_name)
    np.testing.assert_allclose(searched, augment_database(raw, K, 3.0, Metric.COSINE), atol=1e-4)


def test_dba_writes_into_a_shops_index_only_when_asked_at_mapping_create(es, index_name, dba_model,
                                                                          tiny_data):
    files = shop_index(es, index_name, tiny_data)
    es.indices.put_mapping(index=index_name, dynamic="strict")  # the shop allows no stray field
    esm("mapping", "create", index_name, "--model", dba_model, "--existing")
    summary = esm_json("ingest", index_name, "--from-index", "--image-field", "photo", "--base-dir", tiny_data)
    assert summary["indexed"] == 24 and summary["dba"] is None
    props = es.indices.get_mapping(index=index_name)[index_name]["mappings"]["properties"]
    assert set(props) == {"title", "photo", "es_metric"}
    assert not {"image_vector_raw", "image_vector_dba", "dba"} & set(props["es_metric"]["properties"])
    docs = {i: d["source"] for i, d in dba_docs(es, index_name).items()}
    assert all(set(d) == {"title", "photo", "es_metric"} for d in docs.values())
    assert all(set(d["es_metric"]) == {"image_vector", "image_path", "image_sha256", "model_id",
                                       "indexed_at", "image_ref"} for d in docs.values())
    assert "may not write" in esm_error("dba", index_name)

    esm("mapping", "create", index_name, "--model", dba_model, "--existing", "--dba")
    meta = es.indices.get_mapping(index=index_name)[index_name]["mappings"]["_meta"]["es_metric"]
    assert meta["dba"] is True
    run = run_esm("dba", index_name, "--json", timeout=600)  # no torch needed
    assert run.code == 0 and "torch" not in run.modules
    result = run.json()
    assert result["documents"] == 24 and result["failed"] == 0
    after = dba_docs(es, index_name)
    assert all(after[i]["source"]["title"] == docs[i]["title"] and after[i]["marker"]["k"] == K for i in docs)

    # the shop changes a photo; the re-ingest embeds it again and DBA starts from the new photo
    es.update(index=index_name, id="p0", doc={"photo": str(files[20].relative_to(tiny_data))}, refresh=True)
    summary = esm_json("ingest", index_name, "--from-index", "--image-field", "photo", "--base-dir", tiny_data)
    assert summary["dba"]["documents"] == 24  # every re-embedded document, augmented again
    ids, raw, searched = raw_and_searched(es, index_name)
    changed = dba_docs(es, index_name)
    assert np.allclose(changed["p0"]["raw"], changed["p20"]["raw"], atol=1e-5)
    np.testing.assert_allclose(searched, augment_database(raw, K, 3.0, Metric.COSINE), atol=1e-4)


def test_dba_on_a_shops_index_leaves_the_shops_fields_of_the_same_names_alone(es, index_name, dba_model,
                                                                              tiny_data):
    shop_index(es, index_name, tiny_data, n=12)
    mine = {"image_vector_raw": {"type": "keyword"}, "image_vector_dba": {"type": "keyword"},
            "dba": {"type": "keyword"}}  # the shop's own fields, named as DBA names its own
    es.indices.put_mapping(index=index_name, properties=mine, dynamic="strict")
    own = {f"p{i}": {name: f"shop-{name}-{i}" for name in mine} for i in range(12)}
    for doc_id, doc in own.items():
        es.update(index=index_name, id=doc_id, doc=doc)
    es.indices.refresh(index=index_name)
    before = es.indices.get_mapping(index=index_name)[index_name]["mappings"]["properties"]

    esm("mapping", "create", index_name, "--model", dba_model, "--existing", "--dba")
    summary = esm_json("ingest", index_name, "--from-index", "--image-field", "photo", "--base-dir", tiny_data)
    assert summary["indexed"] == 12 and summary["dba"]["documents"] == 12 and summary["dba"]["failed"] == 0
    full = esm_json("dba", index_name, "--full")
    assert full["documents"] == 12 and full["failed"] == 0
    docs = dba_docs(es, index_name)
    for doc_id, doc in own.items():   # every value the shop wrote survives the ingest and both passes
        assert {k: docs[doc_id]["source"].get(k) for k in doc} == doc, doc_id
        assert docs[doc_id]["raw"] is not None and docs[doc_id]["marker"]["run"] == full["run"]
    props = es.indices.get_mapping(index=index_name)[index_name]["mappings"]["properties"]
    assert {k: props[k] for k in before} == before                        # and its mapping
    assert {"image_vector_raw", "image_vector_dba"} <= set(props["es_metric"]["properties"])
    _, raw, searched = raw_and_searched(es, index_name)
    np.testing.assert_allclose(searched, augment_database(raw, K, 3.0, Metric.COSINE), atol=1e-4)


def test_the_follower_augments_what_its_jobs_wrote(es, index_name, dba_model, tiny_data, redis_cleanup):
    from tests.integration.test_follow import start_follower, wait_until

    files = sorted((tiny_data / "class_1").iterdir())
    es.indices.create(index=index_name, mappings={"properties": {"photo": {"type": "keyword"}}})
    for i in range(6):
        es.index(index=index_name, id=f"p{i}", document={"photo": f"class_1/{files[i].name}"})
    esm("mapping", "create", index_name, "--model", dba_model, "--existing", "--dba")
    redis_cleanup(index_name)
    follower = start_follower(index_name, str(tiny_data))
    try:
        def augmented() -> dict:
            docs = dba_docs(es, index_name)
            done = len(docs) == 7 and all(d["raw"] is not None for d in docs.values())
            return docs if done else {}
        es.index(index=index_name, id="p6", document={"photo": f"class_1/{files[6].name}"})
        docs = wait_until(augmented, "every document embedded and augmented", timeout=120)
    finally:
        follower.send_signal(signal.SIGTERM)
        follower.wait(30)
    ids = sorted(docs)
    raw = np.stack([docs[i]["raw"] for i in ids]).astype(np.float32)
    searched = np.stack([docs[i]["vector"] for i in ids])
    np.testing.assert_allclose(searched, augment_database(raw, K, 3.0, Metric.COSINE), atol=1e-4)


def test_the_python_api_wait_augments_what_the_job_wrote(es, index_name, dba_model, tiny_data, stack):
    from es_metric.api import EsMetric

    esm("mapping", "create", index_name, "--model", dba_model)
    docs = [{"id": f"d{i}", "image": str(p), "fields": {"n": i}}
            for i, p in enumerate(sorted((tiny_data / "class_2").iterdir()))]
    with EsMetric(stack.with_(image_roots=(tiny_data,))) as api:
        first = api.enqueue(index_name, docs[:8], mode="index")
        assert api.wait(first, timeout=300, dba=False) == (8, 0)
        assert not any(d["raw"] for d in dba_docs(es, index_name).values())
        assert esm_json("status", index_name)["not_augmented"] == 8
        assert api.wait(api.enqueue(index_name, docs[8:], mode="index"), timeout=300) == (8, 0)
    # the second wait augments its job's documents, and the first job's: written within its
    # window's slack (a minute before the job), never augmented yet
    ids, raw, searched = raw_and_searched(es, index_name)
    assert len(ids) == 16 and all(d["raw"] for d in dba_docs(es, index_name).values())
    assert esm_json("status", index_name)["not_augmented"] == 0
    np.testing.assert_allclose(searched, augment_database(raw, K, 3.0, Metric.COSINE), atol=1e-4)
