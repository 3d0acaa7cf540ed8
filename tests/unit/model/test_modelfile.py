"""Model files: format 2 (a zip: card.json + weights.pt) reads its card with zipfile + json and
no torch; format-1 files (one torch pickle) still load; hostile files are refused cleanly."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from es_metric.errors import ModelError
from es_metric.model.card import CARD_ENTRY, FORMAT, FORMAT_V1, MAX_CARD_BYTES, WEIGHTS_ENTRY, read_card
from es_metric.model.encoder import create_encoder
from es_metric.model.modelfile import build_card, load_model, save_model


@pytest.fixture
def model(tmp_path):
    torch.manual_seed(0)
    enc = create_encoder("small-cnn", dim=8, metric="cosine", pretrained=False).eval()
    card = build_card(enc, backbone="small-cnn", loss="triplet", training={"epochs": 1},
                      data_fingerprint="abc")
    return enc, card, save_model(tmp_path / "m.pt", enc, card)


def test_a_model_file_is_a_zip_whose_card_is_plain_json(model):
    _enc, card, path = model
    with zipfile.ZipFile(path) as zf:
        assert set(zf.namelist()) == {CARD_ENTRY, WEIGHTS_ENTRY}
        on_disk = json.loads(zf.read(CARD_ENTRY))
    assert on_disk == card == read_card(path) and on_disk["format"] == FORMAT


def test_reading_the_card_imports_no_torch(model):
    _enc, card, path = model
    probe = ("import json, sys; from es_metric.model.card import read_card; "
             f"c = read_card({str(path)!r}); print(json.dumps([c['model_id'], 'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [card["model_id"], False]


def _embed(enc, x):
    with torch.no_grad():
        return enc(x).numpy()


def test_a_format_1_file_still_loads_through_torch(model, tmp_path):
    enc, card, _path = model
    old = tmp_path / "old.pt"
    torch.save({"format": FORMAT_V1, "card": {**card, "format": FORMAT_V1},
                "state_dict": enc.state_dict()}, old)
    assert not zipfile.is_zipfile(old) or CARD_ENTRY not in zipfile.ZipFile(old).namelist()
    assert read_card(old)["model_id"] == card["model_id"]
    loaded = load_model(old)
    x = torch.rand(2, 3, 64, 64)
    np.testing.assert_array_equal(_embed(enc, x), _embed(loaded.encoder, x))
    assert loaded.card["format"] == FORMAT_V1


def test_format_2_round_trip_gives_the_same_encoder(model):
    enc, card, path = model
    loaded = load_model(path)
    x = torch.rand(2, 3, 64, 64)
    np.testing.assert_array_equal(_embed(enc, x), _embed(loaded.encoder, x))
    assert loaded.model_id == card["model_id"]


def _zip(path, entries: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


@pytest.mark.parametrize("card_bytes, match", [
    (b"{not json", "not a readable es-metric model"),
    (b"[1, 2]", "is not an es-metric model file"),
    (json.dumps({"format": "something/9", "dims": 8}).encode(), "is not an es-metric model file"),
    (b" " * (MAX_CARD_BYTES + 1), "refused before inflating"),  # compresses to almost nothing: a bomb
])
def test_hostile_cards_are_refused_with_a_clear_error(tmp_path, card_bytes, match):
    path = _zip(tmp_path / "evil.pt", {CARD_ENTRY: card_bytes, WEIGHTS_ENTRY: b""})
    with pytest.raises(ModelError, match=match):
        read_card(path)


def test_a_zip_that_is_no_model_is_refused(tmp_path):
    path = _zip(tmp_path / "other.zip", {"readme.txt": b"hello"})
    with pytest.raises(ModelError, match="not a readable es-metric model"):
        read_card(path)


def test_missing_weights_are_refused(model, tmp_path):
    _enc, card, _path = model
    path = _zip(tmp_path / "noweights.pt", {CARD_ENTRY: json.dumps(card).encode()})
    for read in (read_card, load_model):   # a card is held to its weights: none, no card
        with pytest.raises(ModelError, match="not a readable es-metric model: it has no weights.pt"):
            read(path)
