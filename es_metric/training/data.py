"""Labelled image folders, the two evaluation protocols, and cached backbone features.

Protocols: ``in-domain`` (every class in train and test, unseen images: a shop that trains on its
catalogue and searches new photos) and ``class-disjoint`` (train on some classes, retrieve among
unseen ones: the metric-learning literature's protocol).
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..config import cache_dir_from_env
from ..errors import ConfigError, ImageError
from ..images import IMAGE_SUFFIXES, load_image
from .config import PROTOCOLS
from .imagecheck import Unusable, check_images, summary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    path: str
    label: int
    cls: str


@dataclass
class Folder:
    """A labelled image folder: the usable samples, and the files left out with their reasons."""

    root: Path
    samples: list[Sample]
    skipped: list[Unusable]

    def skipped_records(self) -> list[dict]:
        return [u.as_dict(self.root) for u in self.skipped]


def cache_dir(kind: str = "features") -> Path:
    """``$ESM_CACHE_DIR/<kind>`` (default ``~/.cache/es-metric/<kind>``), created."""
    path = cache_dir_from_env() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_folder(root: str | Path, min_per_class: int = 2, exclude: tuple[str, ...] = ()) -> Folder:
    """One sample per usable image file in ``root/<class>/``.

    Every file is checked first (``imagecheck``): unusable ones (empty, truncated, not an
    image...) are skipped with one warning that lists them and why, instead of failing later
    inside a DataLoader. Classes with < ``min_per_class`` usable images are dropped, folders
    named in ``exclude`` skipped."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder", hint="DATA_DIR holds one sub-folder per class")
    classes = sorted(d.name for d in root.iterdir()
                     if d.is_dir() and not d.name.startswith(".") and d.name not in exclude)
    files = {cls: sorted(str(p) for p in (root / cls).rglob("*")
                         if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) for cls in classes}
    everything = [p for cls in classes for p in files[cls]]
    skipped = check_images(everything, cache_dir("checks") / "images.json")
    if skipped:
        log.warning(summary(skipped, len(everything), root))
    bad = {u.path for u in skipped}
    samples: list[Sample] = []
    kept = 0
    for cls in classes:
        usable = [p for p in files[cls] if p not in bad]
        if len(usable) < min_per_class:
            continue
        samples += [Sample(p, kept, cls) for p in usable]
        kept += 1
    if kept < 2:
        raise ConfigError(f"{root} has {kept} class folder(s) with ≥{min_per_class} usable images",
                          hint="retrieval needs at least two classes")
    return Folder(root, samples, skipped)


def scan_folder(root: str | Path, min_per_class: int = 2, exclude: tuple[str, ...] = ()) -> list[Sample]:
    """The usable samples of ``read_folder``."""
    return read_folder(root, min_per_class, exclude).samples


def fingerprint(samples: Sequence[Sample]) -> str:
    """Dataset identity: class, file name and size of every sample."""
    h = hashlib.sha256()
    for s in samples:
        h.update(f"{s.cls}/{os.path.basename(s.path)}:{os.path.getsize(s.path)}\n".encode())
    return h.hexdigest()[:16]


def relabel(samples: Sequence[Sample]) -> list[Sample]:
    """Labels 0..C-1 in order of first appearance (after a split)."""
    ids: dict[str, int] = {}
    return [Sample(s.path, ids.setdefault(s.cls, len(ids)), s.cls) for s in samples]


def split(samples: Sequence[Sample], protocol: str, test_fraction: float = 0.5,
          seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """(train, test) under a protocol; deterministic for a seed."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}", hint="valid: " + ", ".join(PROTOCOLS))
    rng = random.Random(seed)
    by_class: dict[str, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.cls, []).append(s)
    train, test = [], []
    if protocol == "class-disjoint":
        classes = sorted(by_class)
        rng.shuffle(classes)
        n_test = max(1, min(len(classes) - 1, round(len(classes) * test_fraction)))
        test_classes = set(classes[:n_test])
        for cls in sorted(by_class):
            (test if cls in test_classes else train).extend(by_class[cls])
    else:
        for cls in sorted(by_class):
            items = list(by_class[cls])
            rng.shuffle(items)
            n_test = min(len(items) - 1, max(1, math.ceil(len(items) * test_fraction)))
            test += items[:n_test]
            train += items[n_test:]
    return relabel(train), relabel(test)


def class_folds(samples: Sequence[Sample], k: int, seed: int = 0) -> list[tuple[list[Sample], list[Sample]]]:
    """``k`` class-disjoint (train, test) splits whose test classes partition the classes: each
    class is held out exactly once (k-fold cross-validation over classes)."""
    classes = sorted({s.cls for s in samples})
    if not 2 <= k <= len(classes):
        raise ConfigError(f"cannot make {k} class folds of {len(classes)} classes",
                          hint="use between 2 and the number of classes")
    random.Random(seed).shuffle(classes)
    folds = []
    for i in range(k):
        held_out = set(classes[i::k])
        folds.append((relabel([s for s in samples if s.cls not in held_out]),
                      relabel([s for s in samples if s.cls in held_out])))
    return folds


def materialize(samples: Sequence[Sample], out: Path) -> int:
    """Write ``out/<class>/<file>`` symlinks (an image folder other commands accept)."""
    n = 0
    for s in samples:
        dest = out / s.cls / os.path.basename(s.path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            dest.symlink_to(os.path.abspath(s.path))
        n += 1
    return n


class ImageDataset(Dataset):
    """Decoded images through ``transform``; undecodable files raise (training data must be clean)."""

    def __init__(self, samples: Sequence[Sample], transform: Callable, draft: int | None = None) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.draft = draft

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> tuple[Image.Image, str]:
        """(the decoded photo, the SHA-256 of its bytes), read once and safely."""
        s = self.samples[i]
        try:
            return load_image(s.path, draft=self.draft)
        except ImageError as exc:
            raise ConfigError(f"training image {s.path} is unusable: {exc}",
                              hint="remove it from DATA_DIR") from None

    def __getitem__(self, i: int):
        return self.transform(self.load(i)[0]), self.samples[i].label


SMALL_DATASET = 512  # images: below this a loader decodes in-process


def loader(dataset: Dataset, batch_size: int, *, sampler=None, shuffle: bool = False,
           workers: int | None = None) -> DataLoader:
    """Decode in worker processes for real datasets; in-process for small ones, where forking
    buys nothing and a fork taken while another thread of the parent holds a lock (a library's
    pool, a server in the same process) can leave the child waiting forever."""
    if workers is None:
        workers = 0 if len(dataset) < SMALL_DATASET else min(2, os.cpu_count() or 1)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=shuffle,
                      num_workers=workers, persistent_workers=False, drop_last=sampler is not None)


def labels_tensor(samples: Sequence[Sample]) -> torch.Tensor:
    return torch.tensor([s.label for s in samples], dtype=torch.long)
