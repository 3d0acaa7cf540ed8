"""The typed contracts of es_metric.types: the shapes that cross Celery, the failures index and
the model file stay what their readers expect."""
from __future__ import annotations

import json

from es_metric.index.failures import failure_for, record_key
from es_metric.ingest.sources import LineRefused, checked_item
from es_metric.types import failure


def test_a_failure_record_is_ref_reason_message_and_a_named_doc_id_only():
    assert failure("a.jpg", "decode_error", "bad") == {"ref": "a.jpg", "reason": "decode_error", "message": "bad"}
    assert failure("a.jpg", "decode_error", "bad", None) == failure("a.jpg", "decode_error", "bad", "")
    assert failure("a.jpg", "bad_id", "m", 7) == {"ref": "a.jpg", "reason": "bad_id", "message": "m", "doc_id": "7"}
    assert list(failure("a.jpg", "r", "m", "x")) == ["ref", "reason", "message", "doc_id"]


def test_every_builder_makes_the_same_json_record(tmp_path):
    from_item = failure_for({"ref": "a.jpg", "id": "d1"}, "path_refused", "outside")
    from_line = LineRefused("a.jpg", "path_refused", "outside", "d1").record
    assert json.dumps(from_item) == json.dumps(from_line)
    assert failure_for("not a dict", "bad_item", "m")["ref"] == repr("not a dict")
    assert record_key(from_item) == "a.jpg\x00d1"
    _, records = checked_item(str(tmp_path.parent / "elsewhere.jpg"), "d2", {}, tmp_path, (tmp_path,),
                              multi=False, where="line 1", label="line 1")
    assert [sorted(r) for r in records] == [["doc_id", "message", "reason", "ref"]]
    assert records[0]["doc_id"] == "d2"


def test_the_literals_name_exactly_the_values_the_code_accepts():
    from typing import get_args

    from es_metric.model.runtime import RUNTIMES
    from es_metric.search.fusion import FUSIONS
    from es_metric.types import Fusion, Mode, Runtime, RuntimeSetting

    assert get_args(Fusion) == FUSIONS
    assert get_args(Runtime) == RUNTIMES
    assert get_args(RuntimeSetting) == ("auto", *RUNTIMES)
    assert get_args(Mode) == ("index", "update")
