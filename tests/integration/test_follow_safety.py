"""Follow mode, trusting nothing the shop writes: an image value too long to store is still
embedded once (never again on every pass), a photo changed to a value that is refused loses
its stale vector (and `esm status` counts the document), and the follower lock is never held
twice (a follower that stalled past its TTL cannot take the lock back from its successor).

Passes run explicitly (``follow_pass``) and waits poll with deadlines: nothing sleeps and then
asserts that nothing happened."""
from __future__ import annotations

import shutil
import threading

import pytest

from es_metric.index.indices import index_info
from es_metric.ingest.follow import FollowerState, follow_pass, open_jobs, run_follower, save_state
from es_metric.ingest.jobs import redis_client
from tests.integration.helpers import esm, esm_json
from tests.integration.test_follow import wait_until
from tests.integration.test_url_ingest import url_stack  # noqa: F401 - a fixture: its own worker

pytestmark = pytest.mark.integration


def drain(settings, state: FollowerState) -> None:
    """Wait until every job the follower queued has each image indexed or failed."""
    wait_until(lambda: not open_jobs(settings, state.jobs), "the follower's jobs")


def with_vector(es, index: str) -> set[str]:
    """Ids of the documents that have a vector in the index's vector field."""
    info = index_info(es, index)
    query = {"exists": {"field": info.vector_field}}
    if info.photos_field:
        query = {"nested": {"path": info.photos_field, "query": query}}
    es.indices.refresh(index=index)
    hits = es.search(index=index, query=query, size=100, source=False)["hits"]["hits"]
    return {h["_id"] for h in hits}


def seq_nos(es, index: str) -> dict[str, int]:
    es.indices.refresh(index=index)
    hits = es.search(index=index, size=100, seq_no_primary_term=True, source=False)["hits"]["hits"]
    return {h["_id"]: h["_seq_no"] for h in hits}


def test_follower_embeds_an_image_value_over_8k_characters_once(es, index_name, tiny_model, url_stack):
    s, hp, _handler = url_stack
    long_url = f"http://{hp}/red.png?pad=" + "x" * 9000   # a real photo behind a 9 KB reference
    es.indices.create(index=index_name, mappings={"properties": {"photo": {"type": "keyword"}}})
    es.index(index=index_name, id="long", document={"photo": long_url})
    es.index(index=index_name, id="short", document={"photo": f"http://{hp}/blue.png"})
    esm("mapping", "create", index_name, "--model", tiny_model, "--existing")
    state = FollowerState(index_name, image_field="photo")

    assert follow_pass(s, es, state) == 2
    drain(s, state)
    assert with_vector(es, index_name) == {"long", "short"}
    before = seq_nos(es, index_name)
    for _ in range(3):  # each pass reads the vector writes back, and must find nothing stale
        assert follow_pass(s, es, state) == 0
        drain(s, state)
    assert seq_nos(es, index_name) == before   # nothing was written again
    assert state.queued == 2


def test_a_photo_changed_to_a_refused_value_loses_its_stale_vector(es, index_name, tiny_model, tiny_data,
                                                                  tmp_path, stack, redis_cleanup):
    base = tmp_path / "photos"
    base.mkdir()
    names = []
    for c in (0, 1, 2):
        src = sorted((tiny_data / f"class_{c}").iterdir())[0]
        shutil.copy(src, base / f"c{c}{src.suffix}")
        names.append(f"c{c}{src.suffix}")
    (base / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    es.indices.create(index=index_name, mappings={"properties": {"photo": {"type": "keyword"}}})
    for i, name in enumerate(names):
        es.index(index=index_name, id=f"p{i}", document={"photo": name})
    esm("mapping", "create", index_name, "--model", tiny_model, "--existing")
    redis_cleanup(index_name)
    state = FollowerState(index_name, image_field="photo")
    assert follow_pass(stack, es, state, str(base)) == 3
    drain(stack, state)
    assert with_vector(es, index_name) == {"p0", "p1", "p2"}

    # the shop changes two photos: one to a path outside the roots (refused by the follower),
    # one to a file that is no image (refused by the worker)
    es.update(index=index_name, id="p0", doc={"photo": "../../../../etc/passwd"})
    es.update(index=index_name, id="p1", doc={"photo": "broken.jpg"})
    follow_pass(stack, es, state, str(base))
    drain(stack, state)
    assert with_vector(es, index_name) == {"p2"}   # the old photos' vectors are gone
    save_state(redis_client(stack), state)
    assert esm_json("status", index_name)["without_vector"] == 2
    hits = esm_json("search", index_name, "--image", base / names[0], "-k", "3")["hits"]
    assert [h["id"] for h in hits] == ["p2"]       # p0 is no longer found as its old photo
    reasons = {r["doc_id"]: r["reason"] for r in esm_json("failures", index_name)["failures"]}
    assert (reasons["p0"], reasons["p1"]) == ("path_refused", "corrupt_image")
    before = seq_nos(es, index_name)
    for _ in range(2):  # refused once: not queued, not rewritten, on every later pass
        assert follow_pass(stack, es, state, str(base)) == 0
        drain(stack, state)
    assert seq_nos(es, index_name) == before

    es.update(index=index_name, id="p1", doc={"photo": names[1]})   # fixed: embedded again
    assert follow_pass(stack, es, state, str(base)) == 1
    drain(stack, state)
    assert with_vector(es, index_name) == {"p1", "p2"}


def test_a_follower_that_stalled_past_its_ttl_cannot_take_the_lock_back(es, index_name, tiny_model,
                                                                         tiny_data, stack, redis_cleanup):
    es.indices.create(index=index_name, mappings={"properties": {"photo": {"type": "keyword"}}})
    first = sorted((tiny_data / "class_0").iterdir())[0]
    es.index(index=index_name, id="p0", document={"photo": f"class_0/{first.name}"})
    esm("mapping", "create", index_name, "--model", tiny_model, "--existing")
    redis_cleanup(index_name)
    r = redis_client(stack)
    lock_key = f"esm:follow:{index_name}:lock"
    stalled, resume, stop_a, stop_b = (threading.Event() for _ in range(4))
    outcome: dict[str, object] = {}

    def stall_after_first_pass(state, queued) -> None:
        if state.passes == 1 and not stalled.is_set():
            stalled.set()
            resume.wait(120)   # a long GC pause, a frozen VM: the lock's TTL runs out meanwhile

    def run(name: str, stop: threading.Event, on_pass=None) -> None:
        try:
            outcome[name] = run_follower(stack, es, index_name, "photo", base_dir=str(tiny_data),
                                         poll_s=0.2, stop=stop, on_pass=on_pass, lock_ttl=2.0)
        except Exception as exc:  # noqa: BLE001 - the test inspects what ended the follower
            outcome[name] = exc

    first = threading.Thread(target=run, args=("a", stop_a, stall_after_first_pass), daemon=True)
    first.start()
    wait_until(stalled.is_set, "the first follower's first pass")
    holder_a = r.get(lock_key)
    wait_until(lambda: not r.exists(lock_key), "the stalled follower's lock to expire", timeout=30)
    b_passed = threading.Event()
    second = threading.Thread(target=run, args=("b", stop_b, lambda st, q: b_passed.set()), daemon=True)
    second.start()
    wait_until(b_passed.is_set, "the successor's first pass")
    holder_b = r.get(lock_key)
    resume.set()               # the first follower wakes up: it must notice and stop
    try:
        first.join(30)
        assert not first.is_alive(), "the stalled follower kept running beside its successor"
        assert "lock" in str(outcome["a"]).lower()
        assert holder_b != holder_a and r.get(lock_key) == holder_b   # the successor still holds it
        assert second.is_alive()
    finally:
        stop_a.set()
        stop_b.set()
        first.join(30)
        second.join(30)
    assert isinstance(outcome["b"], FollowerState)


def test_a_write_landing_during_a_pass_is_read_by_the_next_pass_only(es, index_name, tiny_model, tiny_data,
                                                                    stack, redis_cleanup, monkeypatch):
    """The shop writes between a pass's checkpoints and its read: that document is the next
    pass's alone (read by both while its job still ran, it was queued twice)."""
    import es_metric.ingest.follow as follow

    photos = [f"class_0/{p.name}" for p in sorted((tiny_data / "class_0").iterdir())[:2]]
    es.indices.create(index=index_name, mappings={"properties": {"photo": {"type": "keyword"}}})
    es.index(index=index_name, id="before", document={"photo": photos[0]})
    esm("mapping", "create", index_name, "--model", tiny_model, "--existing")
    redis_cleanup(index_name)
    taken = follow.primary_checkpoints

    def then_the_shop_writes(client, index):
        checkpoints = taken(client, index)
        es.index(index=index_name, id="meanwhile", document={"photo": photos[1]})
        return checkpoints

    monkeypatch.setattr(follow, "primary_checkpoints", then_the_shop_writes)
    state = FollowerState(index_name, image_field="photo")
    assert follow_pass(stack, es, state, str(tiny_data)) == 1      # "before" only
    monkeypatch.setattr(follow, "primary_checkpoints", taken)
    assert follow_pass(stack, es, state, str(tiny_data)) == 1      # "meanwhile", once
    drain(stack, state)
    assert with_vector(es, index_name) == {"before", "meanwhile"} and state.queued == 2
