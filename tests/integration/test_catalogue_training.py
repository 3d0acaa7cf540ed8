"""Training from what a shop has, on the real stack: the photos of an index es-metric ingested
(`esm train --from-index`), a pretrained model to index with at once (`--head none`), and the
gate's refusal of a model that is not better (`esm mapping create` without --force)."""
from __future__ import annotations

import json

import pytest

from tests.integration.helpers import esm, esm_error, esm_json

pytestmark = pytest.mark.integration

SMALL = ("--backbone", "small-cnn", "--dim", "16", "--epochs", "2", "--batch-size", "24", "--no-export")


def catalogue(tiny_data, path):
    """6 products of 3 photos (2 per class), categories by class."""
    lines = []
    for c in (0, 2, 4):
        files = sorted(str(p) for p in (tiny_data / f"class_{c}").iterdir())
        for j in range(2):
            lines.append({"id": f"p{c}-{j}", "image": files[j * 3:(j + 1) * 3], "title": f"product {c}-{j}",
                          "category": ["Shapes", f"kind {c}"]})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_train_from_the_photos_of_an_index(es, index_name, tiny_model, tiny_data, tmp_path):
    esm("mapping", "create", index_name, "--model", tiny_model, "--multi-photo")
    summary = esm_json("ingest", index_name, catalogue(tiny_data, tiny_data.parent / f"{index_name}.jsonl"))
    assert summary["indexed"] == 6
    # a document another application wrote, naming a file outside every root: refused, not read
    es.index(index=index_name, id="evil", document={"photos": [{"ref": "/etc/passwd"}], "category": "x"},
             refresh=True)
    card = esm_json("train", "--from-index", index_name, "--out", tmp_path / "m.pt",
                    "--group-field", "category", *SMALL)
    t = card["training"]
    assert (t["n_products"], t["n_photos"], t["groups"]) == (6, 18, 3)
    assert t["source"] == f"index {index_name}" and t["from_index"] == index_name
    refused = [r for r in t["skipped_images"] if r["reason"] == "path_refused"]
    assert len(refused) == 1 and "evil" in refused[0]["path"]
    assert set(card["metrics"]["validation"]) == {"in-domain", "class-disjoint"}


def test_a_pretrained_model_is_written_and_indexable_at_once(es, index_name, tiny_data, tmp_path):
    model = tmp_path / "pretrained.pt"
    card = esm_json("train", catalogue(tiny_data, tiny_data.parent / f"{index_name}.jsonl"), "--head", "none",
                    "--out", model,
                    "--backbone", "small-cnn", "--no-export")
    assert card["head"] == "none" and card["dims"] == card["feat_dim"] and card["metrics"]["gate"]["pretrained"]
    assert card["model_id"].startswith("small-cnn-pretrained-")
    esm("mapping", "create", index_name, "--model", model)  # no --force: it is the baseline itself
    assert esm_json("ingest", index_name, tiny_data / "class_0")["indexed"] == 16


def test_mapping_create_refuses_a_model_that_did_not_pass_its_gate(es, index_name, tiny_model, tmp_path):
    from es_metric.model.modelfile import load_model, save_model
    model = load_model(tiny_model)
    card = {**model.card, "model_id": "as-good-as-pretrained"}
    card["metrics"] = {**card["metrics"], "gate": {
        "passed": False, "metric": "map_at_r", "difference": 0.0, "interval": [-0.01, 0.012],
        "verdict": "not better than pretrained-cosine small-cnn beyond the bootstrap margin: the baseline is as good"}}
    tie = save_model(tmp_path / "tie.pt", model.encoder, card)
    line = esm_error("mapping", "create", index_name, "--model", tie)
    assert "did not pass its evaluation gate" in line and "[-0.0100, +0.0120]" in line
    assert not es.indices.exists_alias(name=index_name)
    esm("mapping", "create", index_name, "--model", tie, "--force")
    assert es.indices.exists_alias(name=index_name)
