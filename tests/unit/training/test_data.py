"""Unusable images in a training folder: found cheaply before any DataLoader sees them, skipped
with one warning that lists them and why, and recorded in the model card; never a traceback."""
from __future__ import annotations

import json
import logging
import os

import pytest
from click.testing import CliRunner

from es_metric.cli import main
from es_metric.errors import ConfigError
from es_metric.model.modelfile import read_card
from es_metric.training import imagecheck
from es_metric.training.data import read_folder
from es_metric.training.imagecheck import check_images
from tests.imagegen import make_dataset

BAD = {  # file -> the reason it must be skipped with
    "class_0/empty.jpg": "empty_file",
    "class_1/header_only.jpg": "corrupt_image",
    "class_2/half.jpg": "corrupt_image",
    "class_3/text.png": "not_an_image",
    "class_4/random.webp": "not_an_image",
}


@pytest.fixture
def dirty(tmp_path, monkeypatch):
    """Four generated classes of 8 good images plus the bad files of BAD."""
    monkeypatch.setenv("ESM_CACHE_DIR", str(tmp_path / "cache"))
    root = make_dataset(tmp_path / "data", n_classes=5, per_class=8, seed=5)
    good = (root / "class_1" / "img_000.jpg").read_bytes()
    (root / "class_0" / "empty.jpg").write_bytes(b"")
    (root / "class_1" / "header_only.jpg").write_bytes(good[:300])
    (root / "class_2" / "half.jpg").write_bytes(good[: len(good) * 6 // 10])
    (root / "class_3" / "text.png").write_text("this is not a picture\n")
    (root / "class_4" / "random.webp").write_bytes(os.urandom(2048))
    return root


def test_check_names_each_unusable_file_with_its_reason(dirty, tmp_path):
    paths = sorted(str(p) for p in dirty.rglob("*") if p.is_file())
    bad = check_images(paths, tmp_path / "verdicts.json")
    assert {os.path.relpath(u.path, dirty): u.reason for u in bad} == BAD
    assert all(u.message for u in bad)


def test_verdicts_are_cached_by_path_size_and_mtime(dirty, tmp_path, monkeypatch):
    paths = sorted(str(p) for p in dirty.rglob("*") if p.is_file())
    cache = tmp_path / "verdicts.json"
    first = check_images(paths, cache)
    decoded = []
    real = imagecheck._check_one
    monkeypatch.setattr(imagecheck, "_check_one", lambda p: decoded.append(p) or real(p))
    assert check_images(paths, cache) == first and decoded == []   # nothing decoded again
    fixed = dirty / "class_0" / "empty.jpg"
    fixed.write_bytes((dirty / "class_0" / "img_000.jpg").read_bytes())  # repaired: new size
    again = check_images(paths, cache)
    assert decoded == [str(fixed)] and len(again) == len(first) - 1


def test_read_folder_skips_with_one_warning(dirty, caplog):
    caplog.set_level(logging.WARNING)
    folder = read_folder(dirty)
    assert len(folder.samples) == 5 * 8 and {r["path"]: r["reason"] for r in folder.skipped_records()} == BAD
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    text = warning.getMessage()
    assert text.startswith(f"skipped 5 unusable image(s) of 45 in {dirty}: ") and "\n" not in text
    for path, reason in BAD.items():
        assert f"{path} ({reason}: " in text


def test_a_class_without_enough_usable_images_is_dropped(tmp_path, monkeypatch):
    monkeypatch.setenv("ESM_CACHE_DIR", str(tmp_path / "cache"))
    root = make_dataset(tmp_path / "data", n_classes=3, per_class=2, seed=1)
    (root / "class_2" / "img_001.jpg").write_bytes(b"GIF89a broken")
    assert {s.cls for s in read_folder(root).samples} == {"class_0", "class_1"}
    (root / "class_1" / "img_000.jpg").write_bytes(b"")
    with pytest.raises(ConfigError, match="1 class folder"):
        read_folder(root)


def _invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output and "DataLoader" not in result.output, result.output
    return result


def test_train_evaluate_split_on_a_dirty_folder(dirty, tmp_path, caplog):
    """The CLI path of finding 9: a folder with an empty .jpg, truncated JPEGs, a text file named
    .png trains (full fine-tuning, so the DataLoader reads the files), evaluates and splits."""
    caplog.set_level(logging.WARNING)
    model = tmp_path / "m.pt"
    trained = _invoke("train", dirty, "--out", model, "--backbone", "small-cnn", "--train-backbone",
                      "--epochs", "1", "--dim", "8", "--batch-size", "16")
    assert trained.exit_code == 0, trained.output
    card = read_card(model)
    assert {r["path"]: r["reason"] for r in card["training"]["skipped_images"]} == BAD
    assert card["training"]["n_photos"] == 40 and card["training"]["n_train"] < 40

    evaluated = _invoke("evaluate", dirty, "--model", model, "--json")
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert metrics["n_queries"] == 40 and {r["path"] for r in metrics["skipped"]} == set(BAD)

    split = _invoke("split", dirty, "--out", tmp_path / "split")
    assert split.exit_code == 0 and "5 unusable image(s) left out" in split.stdout
    linked = {str(p.relative_to(p.parents[2])) for p in (tmp_path / "split").glob("*/*/*")}
    assert len(linked) == 40 and not {n.split("/", 1)[1] for n in linked} & set(BAD)
    warnings = [r.getMessage() for r in caplog.records if "unusable image" in r.getMessage()]
    assert len(warnings) == 3  # one per command
