"""Follow mode beside a shop's index: new and changed images are embedded, unchanged documents
never again, and a follower killed by pid resumes from its checkpoint. "Nothing else happened"
is asserted once the follower's stored checkpoint has passed every write made so far (its own
vector writes included): from then on what it queued is final, no sleep guesses when."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import pytest

from tests.integration.helpers import esm, esm_json, own_fields

pytestmark = pytest.mark.integration


def start_follower(index: str, base: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "es_metric.cli", "ingest", index, "--from-index",
                             "--image-field", "photo", "--base-dir", base, "--follow", "--poll", "0.5"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())


def wait_until(pred, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def read_past_now(es, stack, index: str) -> dict:
    """Wait until the follower of ``index`` has stored a checkpoint at or past every write made
    to it so far (a pass read them all and counted what it queued); returns its state."""
    from es_metric.ingest.follow import load_state
    from es_metric.ingest.jobs import redis_client
    from es_metric.ingest.reindex import primary_checkpoints

    concrete = next(iter(es.indices.get(index=index)))
    target, r = primary_checkpoints(es, concrete), redis_client(stack)

    def passed():
        state = load_state(r, concrete)
        return state if all(state.checkpoint.get(shard, -1) >= seq for shard, seq in target.items()) else None
    return asdict(wait_until(passed, f"the follower's checkpoint to pass {target}"))


def docs(es, index: str) -> dict[str, dict]:
    """Each document's _source, with es-metric's own fields also by their plain names."""
    es.indices.refresh(index=index)
    hits = es.search(index=index, size=100, query={"match_all": {}})["hits"]["hits"]
    return {h["_id"]: {**h["_source"], **own_fields(es, index, h["_source"])} for h in hits}


def embedded(es, index: str, doc_id: str, photo: str, field: str | None = None) -> bool:
    """Is the document embedded from ``photo`` (into ``field``: the index's vector field)?"""
    from es_metric.index.fields import DocFields

    src = docs(es, index).get(doc_id, {})
    return src.get("image_ref") == photo and DocFields.read(src, field or "vector") is not None


def test_follower_embeds_new_and_changed_skips_unchanged_and_resumes_after_kill(
        stack, es, index_name, tiny_model, tiny_data, redis_cleanup):
    files = sorted((tiny_data / "class_0").iterdir())
    other = sorted((tiny_data / "class_3").iterdir())
    base = str(tiny_data)
    es.indices.create(index=index_name, mappings={"properties": {
        "title": {"type": "text"}, "photo": {"type": "keyword"}, "price": {"type": "float"}}})
    for i in range(4):
        es.index(index=index_name, id=f"p{i}", document={"title": f"product {i}", "price": i,
                                                         "photo": f"class_0/{files[i].name}"})
    esm("mapping", "create", index_name, "--model", tiny_model, "--existing")
    redis_cleanup(index_name)

    follower = start_follower(index_name, base)
    try:
        wait_until(lambda: all(embedded(es, index_name, f"p{i}", f"class_0/{files[i].name}")
                               for i in range(4)), "the first four documents")
        first = docs(es, index_name)
        # the shop: a new product, a new photo for p1, a new price for p2 (not an image change)
        es.index(index=index_name, id="p4", document={"title": "new", "price": 9,
                                                      "photo": f"class_0/{files[4].name}"})
        es.update(index=index_name, id="p1", doc={"photo": f"class_3/{other[0].name}"})
        es.update(index=index_name, id="p2", doc={"price": 2.5})
        wait_until(lambda: embedded(es, index_name, "p4", f"class_0/{files[4].name}")
                   and embedded(es, index_name, "p1", f"class_3/{other[0].name}"), "new and changed")
        assert read_past_now(es, stack, index_name)["queued"] == 6  # their vector writes read: nothing more
        second = docs(es, index_name)
        assert second["p1"]["image_sha256"] == hashlib.sha256(other[0].read_bytes()).hexdigest()
        for unchanged in ("p0", "p2", "p3"):
            assert second[unchanged]["indexed_at"] == first[unchanged]["indexed_at"], unchanged
        assert second["p2"]["price"] == 2.5
        st = esm_json("status", index_name)
        assert st["follower"]["state"] == "running" and st["follower"]["queued"] == 6
        assert st["without_vector"] == 0 and st["lag_s"] == 0.0

        follower.send_signal(signal.SIGKILL)  # a crash: no chance to say it stopped
        follower.wait(10)
        assert esm_json("status", index_name)["follower"]["state"] == "dead"
        es.index(index=index_name, id="p5", document={"title": "while down", "price": 5,
                                                      "photo": f"class_0/{files[5].name}"})
        es.update(index=index_name, id="p3", doc={"title": "renamed"})
        es.indices.refresh(index=index_name)
        down = esm_json("status", index_name)
        assert down["without_vector"] == 1

        follower = start_follower(index_name, base)
        wait_until(lambda: embedded(es, index_name, "p5", f"class_0/{files[5].name}"), "resume")
        assert read_past_now(es, stack, index_name)["queued"] == 7  # p3's new title queued nothing
        third = docs(es, index_name)
        for unchanged in ("p0", "p1", "p2", "p3", "p4"):
            assert third[unchanged]["indexed_at"] == second[unchanged]["indexed_at"], unchanged
        st = esm_json("status", index_name)
        assert st["follower"]["queued"] == 7 and st["without_vector"] == 0
        hits = esm_json("search", index_name, "--image", other[0], "-k", "1")["hits"]
        assert hits[0]["id"] == "p1"  # the changed photo is what search finds
    finally:
        follower.send_signal(signal.SIGTERM)
        follower.wait(20)
    assert esm_json("status", index_name)["follower"]["state"] == "stopped"


def test_follow_needs_from_index(stack, index_name):
    result = esm("ingest", index_name, "--follow", ok=False)
    assert result.exit_code == 2 and "--follow needs --from-index" in result.output


def test_follower_refuses_hostile_references_once_and_reads_nothing_outside_the_roots(
        stack, es, index_name, tiny_model, tiny_data, redis_cleanup):
    good = sorted((tiny_data / "class_1").iterdir())[0]
    es.indices.create(index=index_name, mappings={"properties": {"photo": {"type": "keyword"}}})
    shop = {"good": f"class_1/{good.name}", "up": "../../../../etc/passwd", "abs": "/etc/passwd",
            "list": ["class_1/a.jpg", "class_1/b.jpg"], "nul": "class_1/x\x00.jpg"}
    for doc_id, photo in shop.items():
        es.index(index=index_name, id=doc_id, document={"photo": photo})
    esm("mapping", "create", index_name, "--model", tiny_model, "--existing")
    redis_cleanup(index_name)
    follower = start_follower(index_name, str(tiny_data))
    try:
        wait_until(lambda: embedded(es, index_name, "good", shop["good"]), "the good document")
        # past the refusals' own writes: the refused documents did not change, so they stay refused once
        read_past_now(es, stack, index_name)
        st = esm_json("status", index_name)
    finally:
        follower.send_signal(signal.SIGTERM)
        follower.wait(20)
    # a list inside the roots is a gallery: queued, and refused by the worker on this
    # one-vector index (several_photos); paths outside the roots never leave the follower
    assert st["follower"]["queued"] == 2 and st["follower"]["refused"] == 3
    wait_until(lambda: len(esm_json("failures", index_name)["failures"]) == 4, "the four refusals")
    rows = {r["doc_id"]: r["reason"] for r in esm_json("failures", index_name)["failures"]}
    assert rows == {"abs": "path_refused", "nul": "path_refused", "up": "path_refused",
                    "list": "several_photos"}
    src = docs(es, index_name)
    assert all("vector" not in src[d] for d in ("up", "abs", "list", "nul"))
