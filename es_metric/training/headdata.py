"""What a frozen-backbone head trains on: cached features of the photos (and of their augmented
views), each row's product and, for the two-level objective, its group.

A product with one photo has no other photo to be pulled toward: its augmented views are its
positives (the contrastive objective without labels), so every product takes part. Products of
one group (a category) are the coarse level: a second loss, weighted lower, keeps them nearer
each other than products of other groups, so learning products does not tear the shop's
categories apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .data import Sample

__all__ = ["HeadData", "head_data"]


@dataclass
class HeadData:
    feats: torch.Tensor                 # rows: photos, then augmented views
    labels: torch.Tensor                # product of each row (0..C-1)
    groups: torch.Tensor | None = None  # group of each row; a product without a group has its own

    def __len__(self) -> int:
        return len(self.labels)


def head_data(samples: Sequence[Sample], feats: torch.Tensor, groups: dict[str, str] | None = None,
              views: torch.Tensor | None = None, view_rows: Sequence[int] = ()) -> HeadData:
    """Rows for ``samples`` (features ``feats``, in order), plus augmented ``views`` (V x
    len(view_rows) rows, view v of ``samples[view_rows[i]]`` at row ``v * len(view_rows) + i``)."""
    products = {cls: i for i, cls in enumerate(dict.fromkeys(s.cls for s in samples))}
    owners = [samples[i] for i in view_rows] * (len(views) // max(len(view_rows), 1) if views is not None else 0)
    rows = list(samples) + owners
    labels = torch.tensor([products[s.cls] for s in rows], dtype=torch.long)
    x = feats if views is None or not len(views) else torch.cat([feats, views])
    if not groups:
        return HeadData(x.float(), labels)
    names = {g: i for i, g in enumerate(sorted(set(groups.values())))}
    own = len(names)
    group_of = {p: names[groups[p]] if groups.get(p) else own + i for p, i in products.items()}
    return HeadData(x.float(), labels, torch.tensor([group_of[s.cls] for s in rows], dtype=torch.long))
