"""A lean index on the real stack: no vector in _source, --like reads doc values, the workers'
update-mode writes carry the vector, and a bare partial update (another application's) is
exactly the hazard docs/lean-index.md documents: the document loses its vector, and status shows it."""
from __future__ import annotations

import numpy as np
import pytest

from es_metric.index.indices import index_info
from es_metric.index.vectors import is_lean
from es_metric.ingest.enqueue import enqueue, make_searchable, wait
from es_metric.ingest.reindex import without_vector
from tests.integration.helpers import esm, esm_json, stored_docs

pytestmark = pytest.mark.integration


def test_lean_index_like_search_and_writes_that_keep_the_vector(es, stack, index_name, tiny_model,
                                                                tiny_data):
    esm("mapping", "create", index_name, "--model", tiny_model)
    info = index_info(es, index_name)
    assert is_lean(es.indices.get_mapping(index=info.concrete)[info.concrete]["mappings"], "image_vector")
    files = sorted((tiny_data / "class_1").iterdir())[:6]
    manifest = tiny_data.parent / f"{index_name}.jsonl"
    manifest.write_text("".join(f'{{"image": "{f}", "id": "d{i}", "title": "t{i}"}}\n'
                                for i, f in enumerate(files)))
    assert esm_json("ingest", index_name, manifest)["indexed"] == 6

    assert "image_vector" not in es.get(index=info.concrete, id="d0")["_source"]
    docs = stored_docs(es, info.concrete)
    assert all(len(d["image_vector"]) == 32 for d in docs.values())
    hits = esm_json("search", index_name, "--like", "d0", "-k", "3")["hits"]
    assert len(hits) == 3 and "d0" not in [h["id"] for h in hits]

    # another application's partial update: the vector is gone (the documented hazard) ...
    es.update(index=info.concrete, id="d1", doc={"title": "renamed"}, refresh=True)
    assert without_vector(es, info.concrete, info.fields) == 1
    assert "no vector" in esm("search", index_name, "--like", "d1", ok=False).output
    # ... and the workers' update-mode write brings it back, keeping the other fields
    job = enqueue(stack, es, index_name, [{"ref": str(files[1]), "id": "d1", "fields": {}}],
                  mode="update")
    wait(stack, job)
    make_searchable(es, job)
    assert without_vector(es, info.concrete, info.fields) == 0
    again = stored_docs(es, info.concrete, {"ids": {"values": ["d1"]}})["d1"]
    assert again["title"] == "renamed"
    np.testing.assert_allclose(again["image_vector"], docs["d1"]["image_vector"], atol=1e-6)
