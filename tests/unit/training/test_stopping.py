"""Early stopping shared by the head, the last-blocks and the full fine-tuning loops."""
from __future__ import annotations

import torch

from es_metric.training.stopping import EarlyStopping


def _run(scores, patience=2):
    w = torch.zeros(1)
    stop = EarlyStopping.start(patience, scores[0], {"w": w})
    history, told = [], []
    for epoch, value in enumerate(scores[1:], start=1):
        w += 1                                        # the live state moves on every epoch
        stop.after_epoch(history, told.append, epoch=epoch, loss=0.5, value=value, started=0.0,
                         state=lambda w=w: {"w": w})
        if stop.exhausted:
            break
    return stop, history, told


def test_the_best_epochs_state_is_kept_and_patience_stops():
    stop, history, told = _run([0.5, 0.6, 0.7, 0.65, 0.69, 0.9])
    assert (stop.best, stop.best_epoch) == (0.7, 2)
    assert stop.best_state["w"].item() == 2.0          # a copy: later epochs did not change it
    assert [r["epoch"] for r in history] == [1, 2, 3, 4] and told == history  # stopped before 0.9
    assert set(history[0]) == {"epoch", "loss", "val_map_at_r", "seconds"}


def test_no_epoch_better_than_the_start_keeps_the_start():
    stop, history, _ = _run([0.8, 0.7, 0.8])
    assert (stop.best, stop.best_epoch, stop.best_state["w"].item()) == (0.8, 0, 0.0)
    assert stop.exhausted and len(history) == 2        # equal is not better


def test_a_validation_that_cannot_measure_keeps_the_last_epoch():
    stop, history, _ = _run([None, None, None, None], patience=1)
    assert (stop.best, stop.best_epoch, stop.best_state["w"].item()) == (None, 3, 3.0)
    assert not stop.exhausted and len(history) == 3
