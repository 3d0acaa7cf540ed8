"""Augmented views of at most ``max_view_photos`` photos: a large catalogue's views (a backbone
pass per photo and view) stop growing with it; one-photo products keep theirs first."""
from __future__ import annotations

import pytest

from es_metric.training.config import VIEW_PHOTOS, TrainConfig
from es_metric.training.data import Sample
from es_metric.training.frozen import view_photos


def catalogue() -> list[Sample]:
    """3 one-photo products between 5 products of 4 photos (23 photos)."""
    out = []
    for p in range(8):
        n = 1 if p in (1, 4, 6) else 4
        out += [Sample(f"p{p}/{i}.jpg", p, f"p{p}") for i in range(n)]
    return out


def picked(max_view_photos: int, seed: int = 0, which: str = "all") -> tuple[list[str], int]:
    chosen, of = view_photos(catalogue(), TrainConfig(max_view_photos=max_view_photos, seed=seed, view_photos=which))
    return [s.path for s in chosen], of


def test_under_the_bound_every_photo_has_its_views():
    every = [s.path for s in catalogue()]
    assert picked(0) == (every, 23) and picked(23) == (every, 23) and picked(VIEW_PHOTOS) == (every, 23)
    # --view-photos single: products of at most two photos, as before
    assert picked(0, which="single") == (["p1/0.jpg", "p4/0.jpg", "p6/0.jpg"], 3)


def test_beyond_the_bound_one_photo_products_first_then_whole_products_in_a_seeded_order():
    chosen, of = picked(10)
    assert of == 23 and len(chosen) == 7                                # 3 + one product of 4 fits in 10
    assert {"p1/0.jpg", "p4/0.jpg", "p6/0.jpg"} <= set(chosen)          # their only positives
    (product,) = {p.split("/")[0] for p in chosen} - {"p1", "p4", "p6"}
    assert sum(p.startswith(product + "/") for p in chosen) == 4         # a whole product
    order = [s.path for s in catalogue()]
    assert chosen == sorted(chosen, key=order.index)                    # catalogue order
    assert picked(10) == (chosen, 23)                                   # seeded
    assert {picked(15, seed=s)[0][3] for s in range(6)} != {picked(15)[0][3]}  # by the run's seed
    assert len(picked(15)[0]) == 15                                     # 3 products of 4 fill 12
    assert picked(2) == (["p1/0.jpg", "p4/0.jpg"], 23)                 # fewer than the one-photo products


@pytest.mark.parametrize("bound, note", [(40, True), (0, False)])
def test_training_says_when_views_were_sampled(tiny_data, tmp_path, bound, note):
    from es_metric.cli.cards import card_lines
    from es_metric.training.train import train

    cfg = TrainConfig(loss="multi-similarity", backbone="small-cnn", pretrained=False, freeze_backbone=True,
                      dim=8, epochs=1, batch_size=48, seed=0, max_view_photos=bound)
    card = train(tiny_data, tmp_path / "m.pt", cfg).card
    n_photos = card["training"]["n_photos"]
    assert n_photos > 40
    sampled = card["metrics"].get("views_sampled")
    if note:
        assert sampled.startswith(f"augmented views of 32 of {n_photos} photos")  # 2 products of 16
        assert f"note: {sampled}" in card_lines(card, "m.pt")
    else:
        assert sampled is None
        assert not any("augmented views" in line for line in card_lines(card, "m.pt"))


def test_the_option_refuses_what_is_not_a_count():
    from click.testing import CliRunner

    from es_metric.cli import main
    for bad in ("-1", "ten", "1e9", "$(reboot)"):
        result = CliRunner().invoke(main, ["train", "x", "--out", "m.pt", "--max-view-photos", bad])
        assert result.exit_code == 2 and "--max-view-photos" in result.output, bad
