"""A model card travels as types.ModelCard, a TypedDict whose newer parts are optional: a card
written before those parts existed (no ``pool``, ``rerank``, ``runtime``, no figures under
``metrics``) still loads, and everything that reads a card gets the old defaults from it."""
from __future__ import annotations

import json
import zipfile

import pytest

from es_metric.errors import ConfigError
from es_metric.index.mappings import card_asks_dba, index_meta
from es_metric.model.card import CARD_ENTRY, WEIGHTS_ENTRY, gate_allows, read_card
from es_metric.model.modelfile import load_model
from es_metric.model.runtime import INT8, card_for_runtime, runtime_label
from es_metric.types import ModelCard

from .test_modelfile import model  # noqa: F401 - the fixture: a fresh small-cnn model file

NEWER = ("pool", "rerank", "runtime")  # keys later versions added to the card


@pytest.fixture
def old_model(model):  # noqa: F811 - the imported fixture
    path = model[2]
    with zipfile.ZipFile(path) as zf:
        on_disk, weights = json.loads(zf.read(CARD_ENTRY)), zf.read(WEIGHTS_ENTRY)
    old = {k: v for k, v in on_disk.items() if k not in NEWER}
    old["metrics"] = {}
    with zipfile.ZipFile(path, "w") as zf:  # rewritten as an older version wrote it
        zf.writestr(CARD_ENTRY, json.dumps(old))
        zf.writestr(WEIGHTS_ENTRY, weights)
    return path, old


def test_an_old_card_without_the_newer_keys_still_loads(old_model):
    path, old = old_model
    card: ModelCard = read_card(path)
    assert card == old and not set(NEWER) & set(card)
    loaded = load_model(path)
    assert loaded.card["model_id"] == old["model_id"] and loaded.encoder.dim == 8


def test_every_reader_of_an_old_card_gets_the_defaults(old_model):
    path, _ = old_model
    card = read_card(path)
    assert runtime_label(card) == "torch"
    assert card_for_runtime(card, "auto") is card
    with pytest.raises(ConfigError, match="records no passed int8 gate"):
        card_for_runtime(card, INT8)
    gate_allows(card, force=False)  # no gate recorded: allowed
    assert not card_asks_dba(card)
    meta = index_meta(card, str(path), "image_vector")["es_metric"]
    assert meta["runtime"] == "torch" and meta["dims"] == 8
    assert not {"rerank", "runtime_parity", "runtime_variant", "near_duplicate_threshold", "cutoff"} & set(meta)
