"""Reading vectors back from doc values (a lean index keeps them out of _source)."""
from es_metric.index.mappings import new_index_body
from es_metric.index.vectors import hit_vector, is_lean, lean_source

CARD = {"model_id": "m-1", "dims": 3, "similarity": "cosine", "backbone": "small-cnn"}


def test_hit_vector_reads_doc_values_first_then_source():
    assert hit_vector({"fields": {"v": [[0.099999994, 0.2, 0.3]]}, "_source": {}}, "v") == \
        [0.099999994, 0.2, 0.3]
    assert hit_vector({"fields": {"v": [0.5, 0.5]}}, "v") == [0.5, 0.5]
    assert hit_vector({"_source": {"v": [1.0, 0.0]}}, "v") == [1.0, 0.0]  # an index made before
    assert hit_vector({"_source": {"t": "x"}, "fields": {}}, "v") is None


def test_new_indices_are_lean_unless_asked_not_to_be():
    lean = new_index_body(CARD, "/m.pt", vector_field="emb")["mappings"]
    assert lean["_source"] == lean_source("emb") == {"excludes": ["emb", "emb_raw"]}
    assert is_lean(lean, "emb") and not is_lean(lean, "image_vector")
    full = new_index_body(CARD, "/m.pt", lean=False)["mappings"]
    assert "_source" not in full and not is_lean(full, "image_vector")
