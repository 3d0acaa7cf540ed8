"""Early stopping, shared by the three training regimes (the head on cached features, the last
blocks on cached activations, the whole network): keep the state of the best epoch by the
validation's score, stop after ``patience`` epochs without a better one.

Higher is better. A score of None means the validation cannot measure (too few queries): then
every epoch counts as the best so far, and the last one is kept.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

from .config import EpochCallback

__all__ = ["EarlyStopping"]


@dataclass
class EarlyStopping:
    patience: int
    best: float | None               # the best epoch's score (epoch 0: the start's)
    best_state: dict                 # a copy of the state that scored it
    best_epoch: int = 0
    bad: int = 0                     # epochs since the best one

    @classmethod
    def start(cls, patience: int, score: float | None, state: dict) -> EarlyStopping:
        """Epoch 0: the start itself, scored before any training."""
        return cls(patience, score, copy.deepcopy(state))

    def after_epoch(self, history: list[dict], on_epoch: EpochCallback | None, *, epoch: int,
                    loss: float | None, value: float | None, started: float,
                    state: Callable[[], dict]) -> None:
        """Record the epoch in ``history`` (and tell ``on_epoch``); keep ``state()`` when it is
        the best so far. ``started``: the epoch's ``time.monotonic()`` at its start."""
        row = {"epoch": epoch, "loss": loss, "val_map_at_r": value,
               "seconds": round(time.monotonic() - started, 3)}
        history.append(row)
        if on_epoch:
            on_epoch(row)
        if value is None or self.best is None or value > self.best:
            self.best, self.best_state, self.best_epoch, self.bad = value, copy.deepcopy(state()), epoch, 0
        else:
            self.bad += 1

    @property
    def exhausted(self) -> bool:
        """``patience`` epochs in a row without a better score."""
        return self.bad >= self.patience
