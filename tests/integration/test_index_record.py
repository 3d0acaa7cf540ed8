"""The index record (``_meta.es_metric``) on the real cluster: two writers at once both keep
their update (put-mapping replaces ``_meta`` whole and has no compare-and-swap), a dead
holder's lock is taken over, a live one is waited for."""
from __future__ import annotations

import threading
import time

import pytest

from es_metric.errors import IndexStateError
from es_metric.index.indices import record_image_roots
from es_metric.index.record import LOCK_INDEX, read_mappings, read_record, record_lock, update_record

pytestmark = pytest.mark.integration


def shop(es, name: str) -> None:
    es.indices.create(index=name, mappings={"_meta": {"shop": "kept", "es_metric": {"image_roots": ["/0"]}},
                                            "properties": {"title": {"type": "text"}}})


def test_two_concurrent_writers_of_the_record_both_keep_their_update(es, index_name):
    shop(es, index_name)
    a_read, b_started, b_done = threading.Event(), threading.Event(), threading.Event()
    errors: list[str] = []

    def slow_add(mine, _mappings):  # writer A: has read the record; B tries to write meanwhile
        a_read.set()
        assert b_started.wait(30)
        b_done.wait(3)  # unguarded, B's write lands here, and A's write below then loses it
        mine["image_roots"] = [*mine.get("image_roots", []), "/a"]

    def writer_b():
        try:
            assert a_read.wait(30)
            b_started.set()
            record_image_roots(es, index_name, ("/b",))
            b_done.set()
        except Exception as exc:  # a failure of B is the test's failure
            errors.append(repr(exc))

    b = threading.Thread(target=writer_b)
    b.start()
    update_record(es, index_name, slow_add)
    b.join(60)
    assert errors == [] and b_done.is_set()
    assert sorted(read_record(es, index_name)["image_roots"]) == ["/0", "/a", "/b"]
    assert read_mappings(es, index_name)["_meta"]["shop"] == "kept"  # the shop's _meta stays
    assert not es.exists(index=LOCK_INDEX, id=index_name)  # released


def test_a_dead_writers_lock_is_taken_over_and_a_live_one_waited_for(es, index_name):
    shop(es, index_name)
    with record_lock(es, index_name), pytest.raises(IndexStateError, match="another writer"), \
            record_lock(es, index_name, wait_s=0.5):
        pass
    es.index(index=LOCK_INDEX, id=index_name, refresh=True,  # a holder that died, lease run out
             document={"owner": "dead", "expires_at": time.time() - 1})
    update_record(es, index_name, lambda mine, _m: mine.update(image_roots=["/new"]))
    assert read_record(es, index_name)["image_roots"] == ["/new"]
    assert not es.exists(index=LOCK_INDEX, id=index_name)
