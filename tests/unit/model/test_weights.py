"""Model files as hostile input (issue 24, findings 6 and 7): no member is inflated past its
bound (sizes and ratios read from the zip directories first), the state dict is read without
torch and without running anything, and a card is held to the weights beside it."""
from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

import pytest
import torch

from es_metric.errors import ModelError
from es_metric.model.card import read_card
from es_metric.model.encoder import BACKBONES, create_encoder
from es_metric.model.modelfile import build_card, load_model, save_model
from es_metric.model.weights import BACKBONE_SHAPES, backbone_digest, state_shapes
from tests.badmodels import bomb_model, inner_bomb_model, lying_model, members_of, stored, write_zip

pytestmark = pytest.mark.security
MB = 1 << 20


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    torch.manual_seed(0)
    enc = create_encoder("small-cnn", dim=32, metric="cosine", pretrained=False).eval()
    card = build_card(enc, backbone="small-cnn", loss="triplet", training={}, data_fingerprint=None)
    return save_model(tmp_path_factory.mktemp("good") / "m.pt", enc, card)


def one_line_error(fn, *args) -> str:
    with pytest.raises(ModelError) as err:
        fn(*args)
    text = str(err.value)
    assert "\n" not in text and len(text) < 400, text
    return text


def test_the_backbone_table_holds_every_registered_backbone():
    """The light check knows each backbone by the names and shapes of its parameters."""
    for name in BACKBONES:
        enc = create_encoder(name, dim=16, pretrained=False)
        shapes = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
        assert BACKBONE_SHAPES[name] == (backbone_digest(shapes), enc.feat_dim), name


def test_shapes_are_read_without_torch_as_torch_reads_them(good):
    with zipfile.ZipFile(good) as zf:
        shapes = state_shapes(io.BytesIO(zf.read("weights.pt")), "m")
        state = torch.load(io.BytesIO(zf.read("weights.pt")), weights_only=True)
    assert shapes == {k: tuple(v.shape) for k, v in state.items()} and shapes["head.weight"] == (32, 128)


@pytest.mark.parametrize("make", [bomb_model, inner_bomb_model])
def test_a_zip_bomb_is_refused_from_the_directory_before_inflating(good, tmp_path, make):
    """weights.pt (or a tensor record inside it) deflating ~1.5 MB to 1.5 GB: refused by
    read_card (the card was read and the bomb never looked at) and by load_model."""
    bomb = make(good, tmp_path / "bomb.pt")
    assert bomb.stat().st_size < 4 * MB   # ~1.5 MB of bomb (+ the real weights, inside)
    for fn in (read_card, load_model):
        assert "refused before inflating" in one_line_error(fn, bomb)


def test_pretrained_weights_given_by_path_are_bounded_too(good, tmp_path):
    """``--weights PATH`` (a torch file) gets the same bounds before torch.load inflates it."""
    weights = tmp_path / "resnet18.pth"
    weights.write_bytes(members_of(inner_bomb_model(good, tmp_path / "bomb.pt"))["weights.pt"])
    assert "(a zip bomb); refused before inflating" in one_line_error(
        lambda: create_encoder("resnet18", weights=weights))


def test_a_zip_bomb_model_is_refused_in_bounded_memory(good, tmp_path):
    """The done-when of finding 6: the worker's and the server's way to load a model, in a
    process of its own, refuses the 1.5 GB-inflating file with a peak under 900 MB, torch
    included (about 750 MB of it is torch's import); it used to inflate it all first (3.9 GB).
    The peak is the process's own high-water mark (VmHWM): ru_maxrss of a child started by
    vfork also counts the parent's pages."""
    bomb = bomb_model(good, tmp_path / "bomb.pt")
    probe = ("import re\nfrom es_metric.errors import ModelError\n"
             "from es_metric.model.modelfile import load_model\n"
             "kb = lambda k: int(re.search(k + r':\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
             "base = kb('VmRSS')\n"
             f"try:\n    load_model({str(bomb)!r})\nexcept ModelError as e:\n    print('REFUSED', e)\n"
             "print('KB', base, kb('VmHWM'))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("REFUSED") and "zip bomb" in out.stdout, out
    base_kb, peak_kb = map(int, out.stdout.split("KB ")[1].split())
    assert peak_kb - base_kb < 100 * 1024, f"refusing took {(peak_kb - base_kb) // 1024} MB"
    assert peak_kb < 900 * 1024, f"peak {peak_kb // 1024} MB (after imports: {base_kb // 1024} MB)"


@pytest.mark.parametrize("changes, named", [
    ({"dims": 64}, "the card says 64 dims but the weights make 32-d vectors"),
    ({"backbone": "resnet18"}, "the card says backbone resnet18 but the weights are a small-cnn"),
    ({"head": "mlp"}, "the card says head 'mlp' but the weights hold no such head"),
    ({"head": "none", "dims": 128}, "the card says head 'none' but the weights hold no such head"),
    ({"feat_dim": 512}, "the card says feat_dim 512"),
    ({"backbone": "vit-huge"}, "backbone 'vit-huge', which es-metric does not know"),
    ({"dims": "32"}, "the card's dims '32' is not a whole number"),
    ({"similarity": "hamming"}, "the card's similarity 'hamming' is not one of"),
    ({"model_id": "../../etc"}, "the card's model_id '../../etc' is not lowercase"),
    # the preprocessing: a size the worker would allocate gigabytes for, or normalisation that is none
    ({"preprocess": {"size": 100000, "mean": [0.5] * 3, "std": [0.5] * 3}},
     "the card's image size 100000 is not a whole number of pixels from 16 to 1024"),
    ({"preprocess": {"size": 0, "mean": [0.5] * 3, "std": [0.5] * 3}}, "the card's image size 0 is not"),
    ({"preprocess": {"size": "64", "mean": [0.5] * 3, "std": [0.5] * 3}}, "the card's image size '64' is not"),
    ({"preprocess": {"size": 64.5, "mean": [0.5] * 3, "std": [0.5] * 3}}, "the card's image size 64.5 is not"),
    ({"preprocess": {"size": True, "mean": [0.5] * 3, "std": [0.5] * 3}}, "the card's image size True is not"),
    ({"preprocess": {"size": 64, "mean": [0.5] * 3, "std": [0.5, 0.0, 0.5]}},
     "the card's normalisation std [0.5, 0.0, 0.5] is not three numbers above 0"),
    ({"preprocess": {"size": 64, "mean": [0.5] * 3, "std": [0.5, -1.0, 0.5]}}, "normalisation std"),
    ({"preprocess": {"size": 64, "mean": [0.5, float("nan"), 0.5], "std": [0.5] * 3}},
     "the card's normalisation mean [0.5, nan, 0.5] is not three numbers"),
    ({"preprocess": {"size": 64, "mean": [0.5] * 3, "std": [0.5, float("inf"), 0.5]}}, "normalisation std"),
    ({"preprocess": {"size": 64, "mean": [0.5, 0.5], "std": [0.5] * 3}}, "normalisation mean"),
    ({"preprocess": {"size": 64, "mean": "0.5", "std": [0.5] * 3}}, "normalisation mean"),
    ({"preprocess": [64]}, "the card has no preprocessing (size, mean, std)"),
    ({"preprocess": None}, "the card has no preprocessing"),
])
def test_a_card_that_lies_about_its_weights_is_refused_in_one_line(good, tmp_path, changes, named):
    liar = lying_model(good, tmp_path / "liar.pt", **changes)
    assert named in one_line_error(read_card, liar)
    assert named in one_line_error(load_model, liar)   # the worker's and the server's path


def test_a_pickle_that_runs_code_is_refused_and_never_run(good, tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    records = members_of(good)
    with zipfile.ZipFile(io.BytesIO(records["weights.pt"])) as inner:
        parts = {n: inner.read(n) for n in inner.namelist()}
    name = next(n for n in parts if n.endswith("/data.pkl"))
    parts[name] = pickle.dumps({"head.weight": Boom()})
    weights = io.BytesIO()
    write_zip(weights, [stored(n, d) for n, d in parts.items()])
    evil = tmp_path / "evil.pt"
    write_zip(evil, [stored("card.json", records["card.json"]), stored("weights.pt", weights.getvalue())])
    assert "is not part of a state dict" in one_line_error(read_card, evil)
    assert "not part of a state dict" in one_line_error(load_model, evil)
    assert not (tmp_path / "ran").exists()


def test_a_tensor_larger_than_its_record_is_refused(good, tmp_path):
    records = members_of(good)
    with zipfile.ZipFile(io.BytesIO(records["weights.pt"])) as inner:
        parts = {n: inner.read(n) for n in inner.namelist()}
    name = next(n for n in parts if n.endswith("/data/0"))
    parts[name] = parts[name][:16]   # the pickle still says 9600 bytes of floats
    weights = io.BytesIO()
    write_zip(weights, [stored(n, d) for n, d in parts.items()])
    short = tmp_path / "short.pt"
    write_zip(short, [stored("card.json", records["card.json"]), stored("weights.pt", weights.getvalue())])
    assert "is larger than its record" in one_line_error(read_card, short)


def test_a_good_model_still_reads_and_loads(good):
    card = read_card(good)
    assert card["dims"] == 32 and load_model(good).encoder.dim == 32
    assert json.loads(members_of(good)["card.json"])["model_id"] == card["model_id"]
