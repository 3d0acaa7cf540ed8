"""Augmented views are seeded by the photo's content: the same crops however its path is spelt."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from es_metric.errors import ConfigError
from es_metric.training.data import Sample
from es_metric.training.views import SeededViews, view_transform


def a_photo(tiny_data: Path) -> Path:
    folder = sorted(p for p in tiny_data.iterdir() if p.is_dir())[0]
    return sorted(folder.iterdir())[0]


def view(path: str, v: int = 0, seed: int = 0) -> torch.Tensor:
    transform = view_transform("crop", 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return SeededViews([Sample(path, 0, "p")], transform, v, seed, draft=64)[0][0]


def test_a_photo_gets_the_same_views_by_a_relative_path_an_absolute_one_and_a_copy(tiny_data, tmp_path,
                                                                                   monkeypatch):
    photo = a_photo(tiny_data)
    copy = tmp_path / "elsewhere" / "renamed.png"
    copy.parent.mkdir()
    shutil.copy(photo, copy)
    monkeypatch.chdir(photo.parent)
    first = view(photo.name)
    for spelling in (f"./{photo.name}", str(photo), str(copy)):
        assert torch.equal(view(spelling), first), spelling
    # the view index and the run's seed still choose the crop
    assert not torch.equal(view(str(photo), v=1), first)
    assert not torch.equal(view(str(photo), seed=1), first)


def test_a_missing_photo_says_which_one(tmp_path):
    with pytest.raises(ConfigError, match="gone.png"):
        view(str(tmp_path / "gone.png"))


def test_a_pipe_in_place_of_a_photo_is_refused_not_waited_on(tmp_path):
    import os
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)  # reading it would block forever: the safe read refuses it before opening
    with pytest.raises(ConfigError, match="not a regular file"):
        view(str(fifo))
