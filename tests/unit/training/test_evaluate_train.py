"""Retrieval metrics by hand, and training that measurably improves retrieval."""
import io

import numpy as np
import pytest

from es_metric.similarity import Metric
from es_metric.training.data import scan_folder, split
from es_metric.training.evaluate import Embedded, neighbours, recall_at_k, retrieval_metrics


def test_recall_at_k_by_hand():
    labels = np.array([0, 0, 1, 1])
    nn_labels = np.array([[1, 0], [0, 1], [0, 0], [1, 0]])
    # query0: first hit at rank 2 ; query1: rank 1 ; query2: never ; query3: rank 1
    assert recall_at_k(nn_labels, labels, ks=(1, 2)) == {1: 0.5, 2: 0.75}


def test_map_at_r_of_a_ranked_list_by_hand():
    from es_metric.training.evaluate import map_at_r
    # R = 3 relevant; first 3 ranks: hit, miss, hit -> (1/1 + 2/3) / 3
    assert map_at_r(["a", "b", "a", "a"], "a", 3) == pytest.approx((1 + 2 / 3) / 3)
    assert map_at_r(["b", "b"], "a", 2) == 0.0 and map_at_r([], "a", 0) == 0.0


def test_metrics_on_hand_made_vectors():
    # 1-D: class 0 at 0, 0.1 ; class 1 at 5, 5.2 ; class 2 at 0.04 (a lone distractor, no query)
    vecs = np.array([[0.0], [0.1], [5.0], [5.2], [0.04]], np.float32)
    emb = Embedded(vecs, np.array([0, 0, 1, 1, 2]), [], Metric.L2, "hand")
    assert neighbours(vecs, Metric.L2, 1)[:, 0].tolist() == [4, 4, 3, 2, 0]
    m = retrieval_metrics(emb)
    # the lone item is dropped as a query and as a distractor: perfect retrieval remains
    assert m["n_queries"] == 4 and m["map_at_r"] == pytest.approx(1.0) and m["recall_at_1"] == 1.0
    emb.vectors = np.array([[0.0], [5.1], [5.0], [0.1], [9.0]], np.float32)
    m = retrieval_metrics(emb)  # every nearest neighbour is now of the other class
    # the one relevant item sits at rank 3, 3, 2, 2: AP = 1/3, 1/3, 1/2, 1/2
    assert m["recall_at_1"] == 0.0 and m["map_at_r"] == 0.0
    assert m["map"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2 + 1 / 2) / 4)


def test_splits_follow_their_protocol(tiny_data):
    samples = scan_folder(tiny_data)
    train, test = split(samples, "in-domain", 0.25, seed=3)
    assert {s.cls for s in train} == {s.cls for s in test} and len(test) == 6 * 4
    train, test = split(samples, "class-disjoint", 0.5, seed=3)
    assert not {s.cls for s in train} & {s.cls for s in test}
    assert split(samples, "class-disjoint", 0.5, seed=3) == (train, test)  # deterministic


def test_training_improves_map_at_r_over_untrained(tiny_data, tiny_model):
    """The small-cnn trained by the fixture beats the untrained encoder on held-out images."""
    from es_metric.model.modelfile import read_card
    card = read_card(tiny_model)
    gate = card["metrics"]["gate"]
    assert gate["against"] == "untrained-cosine small-cnn"
    assert gate["model_map_at_r"] > gate["baseline_map_at_r"] + 0.05
    assert gate["passed"] is True
    history = card["training"]["history"]
    assert history[0]["epoch"] == 0 and len(history) >= 2


MAHA = dict(loss="mahalanobis", backbone="small-cnn", pretrained=False, dim=16, epochs=15, batch_size=48,
            seed=0, patience=15)


@pytest.fixture(scope="module")
def maha(tiny_data, tmp_path_factory):
    """A learned Mahalanobis head on frozen (untrained small-cnn) features, without the refit
    (the head that early stopping chose ships as measured), from the PCA start (the learned
    whitening start is tested in test_whiten.py)."""
    from es_metric.training.train import TrainConfig, train
    return train(tiny_data, tmp_path_factory.mktemp("maha") / "maha.pt", TrainConfig(**MAHA, refit=False, init="pca"))


def _fresh_validation(path, tiny_data, cfg) -> tuple[dict, object, object]:
    """The model file as shipped, scored afresh on the validation queries its training drew:
    (the gate protocol's figures, the validator, the embedder)."""
    from es_metric.config import Settings
    from es_metric.model.modelfile import load_model
    from es_metric.training.catalogue import read_catalogue
    from es_metric.training.evaluate import model_embeddings
    from es_metric.training.protocols import catalogue_split
    from es_metric.training.scoring import summary_of
    from es_metric.training.validate import Validator
    cat = read_catalogue(tiny_data, Settings.from_env())
    validator = Validator(catalogue_split(cat.samples, cfg["val_fraction"], cfg["seed"]), {}, cfg["protocol"])
    model = load_model(path)

    def embed(samples):
        return model_embeddings(model, samples).vectors

    return summary_of(validator.scores(embed, model.metric)[cfg["protocol"]]), validator, embed


def test_mahalanobis_head_learns_on_frozen_features(maha):
    """Early stopping picks an epoch after 0 (the PCA start, i.e. the baseline's geometry), and
    that epoch is clearly better than the start: training learned, not just kept epoch 0."""
    card, history = maha.card, maha.history
    assert card["similarity"] == "l2_norm" and card["feature_norm"] is True
    assert card["training"]["freeze_backbone"] is True
    best = max(history, key=lambda row: row["val_map_at_r"])
    assert best["epoch"] >= 1 and best["val_map_at_r"] > history[0]["val_map_at_r"] + 0.05
    assert card["metrics"]["val"]["map_at_r"] == pytest.approx(best["val_map_at_r"], abs=1e-4)
    assert card["metrics"]["near_duplicate_threshold"] is not None


def test_card_metrics_are_a_fresh_evaluation_of_the_shipped_model(maha, tiny_data):
    """Without the refit, what the card says is what ships: the model file, evaluated afresh
    on the validation split, gives the card's metrics and its near-duplicate threshold."""
    from es_metric.training.verdict import calibration_threshold
    card = maha.card
    assert card["training"]["refit"] is False and card["training"]["refit_epochs"] == 0
    assert card["metrics"]["measured_head"] == "shipped"
    fresh, validator, embed = _fresh_validation(maha.path, tiny_data, card["training"])
    for key in ("map_at_r", "mrr", "recall_at_1", "recall_at_10", "n_queries"):
        assert card["metrics"]["val"][key] == pytest.approx(fresh[key], abs=1e-4), key
    threshold = calibration_threshold(validator, embed, Metric.L2)
    assert card["metrics"]["near_duplicate_threshold"] == pytest.approx(threshold, abs=1e-5)


def test_card_metrics_of_a_fine_tuned_model_are_the_shipped_ones(tiny_model, tiny_data):
    from es_metric.model.modelfile import read_card
    card = read_card(tiny_model)
    assert card["training"]["freeze_backbone"] is False and card["metrics"]["measured_head"] == "shipped"
    fresh, _, _ = _fresh_validation(tiny_model, tiny_data, card["training"])
    assert card["metrics"]["val"]["map_at_r"] == pytest.approx(fresh["map_at_r"], abs=1e-4)


@pytest.mark.slow  # a whole training run (make test runs it; make test-unit leaves it out)
def test_refit_card_says_which_head_was_measured(tiny_data, tmp_path):
    """--refit ships a head retrained on train + validation: the card says its metrics are the
    early-stopped head's, and the threshold is recalibrated in the shipped head's own space."""
    from es_metric.training.train import TrainConfig, train
    from es_metric.training.verdict import calibration_threshold
    res = train(tiny_data, tmp_path / "refit.pt", TrainConfig(**MAHA, init="pca"))  # refit: the default
    metrics, training = res.card["metrics"], res.card["training"]
    assert training["refit_epochs"] >= 1
    assert metrics["measured_head"].startswith(f"early-stopped head (epoch {training['refit_epochs']})")
    assert "optimistic" in metrics["near_duplicate_threshold_from"]
    _, validator, embed = _fresh_validation(res.path, tiny_data, training)
    threshold = calibration_threshold(validator, embed, Metric.L2)  # in the shipped head's space
    assert metrics["near_duplicate_threshold"] == pytest.approx(threshold, abs=1e-5)


@pytest.mark.slow  # two whole training runs (make test runs it; make test-unit leaves it out)
def test_a_whitening_kept_at_epoch_0_is_recomputed_on_every_photo(tiny_data, tmp_path):
    """No epoch beat the learned-whitening start: the refit still recomputes the whitening on
    every photo (train + validation) instead of shipping the one of the training split (which
    lacks each product's validation photo: at 3 photos per product, a third of them)."""
    import torch
    from es_metric.training.train import TrainConfig, train
    cfg = dict(loss="multi-similarity", backbone="small-cnn", pretrained=False, freeze_backbone=True,
               dim=8, epochs=0, batch_size=48, seed=2)
    refit = train(tiny_data, tmp_path / "refit.pt", TrainConfig(**cfg)).card
    kept = train(tiny_data, tmp_path / "kept.pt", TrainConfig(**cfg, refit=False)).card
    assert refit["metrics"]["measured_head"].startswith("learned whitening of the training photos")
    assert refit["training"]["history"][0]["start"] == "whiten"
    assert kept["metrics"]["measured_head"] == "shipped"
    # an MLP head has no whitening start: its epoch 0 is not refit, nor called a whitening
    mlp = train(tiny_data, tmp_path / "mlp.pt", TrainConfig(**cfg, head="mlp")).card
    assert mlp["metrics"]["measured_head"] == "shipped" and mlp["training"]["history"][0]["start"] is None
    shipped, measured = (torch.load(io.BytesIO(_member(tmp_path / f, "weights.pt")), weights_only=True)
                         for f in ("refit.pt", "kept.pt"))
    assert not torch.allclose(shipped["head.weight"], measured["head.weight"])


def _member(path, name: str) -> bytes:
    import zipfile
    with zipfile.ZipFile(path) as z:
        return z.read(name)


FULL = dict(loss="contrastive", backbone="small-cnn", pretrained=False, freeze_backbone=False,
            dim=8, batch_size=48, seed=4, patience=10)


@pytest.mark.slow  # a whole training run (make test runs it; make test-unit leaves it out)
def test_full_training_resumes_from_its_checkpoint(tiny_data, tmp_path):
    """An interrupted fine-tune (here: stopped after epoch 1) continues at epoch 2 with the
    history, optimiser and best state of the checkpoint instead of starting over. The
    checkpoint holds only tensors and plain values (it loads with weights_only=True)."""
    import torch

    from es_metric.training.train import TrainConfig, train
    out = tmp_path / "ft.pt"
    first = train(tiny_data, out, TrainConfig(epochs=1, **FULL))
    ckpt = torch.load(str(out) + ".ckpt", weights_only=True)
    assert ckpt["epoch"] == 1 and [r["epoch"] for r in first.history] == [0, 1]
    assert ckpt["config"]["dim"] == 8 and isinstance(ckpt["config"], dict)

    resumed = train(tiny_data, out, TrainConfig(epochs=2, **FULL), resume=True)
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2]
    assert resumed.history[1] == first.history[1]  # carried over, not retrained
    assert torch.load(str(out) + ".ckpt", weights_only=True)["epoch"] == 2

    restarted = train(tiny_data, out, TrainConfig(epochs=1, **FULL))  # no --resume: from scratch
    assert [r["epoch"] for r in restarted.history] == [0, 1]


class _Payload:
    """What a hostile checkpoint carries: unpickling it would create a file (it could run anything)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path
        return (Path.touch, (Path(self.marker),))


def test_resume_refuses_a_checkpoint_holding_a_pickled_object(tiny_data, tmp_path):
    import torch
    from click.testing import CliRunner

    from es_metric.cli import main
    from es_metric.training.train import TrainConfig, train
    out = tmp_path / "ft.pt"
    train(tiny_data, out, TrainConfig(epochs=1, **FULL))
    ckpt = torch.load(str(out) + ".ckpt", weights_only=True)
    marker = tmp_path / "code-ran"
    ckpt["history"].append({"epoch": 1, "note": _Payload(marker)})
    torch.save(ckpt, str(out) + ".ckpt")
    args = ["train", tiny_data, "--out", out, "--loss", "contrastive", "--backbone", "small-cnn",
            "--no-pretrained", "--train-backbone", "--dim", "8", "--epochs", "2", "--batch-size", "48",
            "--seed", "4", "--resume"]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 1 and not marker.exists()
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"error: checkpoint {out}.ckpt holds more than tensors and plain values")
    assert "refused" in line and "Traceback" not in result.output


def test_resume_refuses_a_checkpoint_of_another_shape(tiny_data, tmp_path):
    from es_metric.errors import ModelError
    from es_metric.training.train import TrainConfig, train
    out = tmp_path / "ft.pt"
    train(tiny_data, out, TrainConfig(epochs=1, **FULL))
    with pytest.raises(ModelError, match=r"other settings: dim=8 \(now 12\)"):
        train(tiny_data, out, TrainConfig(epochs=2, **{**FULL, "dim": 12}), resume=True)
def test_class_folds_hold_out_every_class_exactly_once(tiny_data):
    from es_metric.training.data import class_folds
    samples = scan_folder(tiny_data)
    folds = class_folds(samples, 3, seed=1)
    held_out = [{s.cls for s in test} for _, test in folds]
    assert sorted(c for h in held_out for c in h) == sorted({s.cls for s in samples})
    for train, test in folds:
        assert not {s.cls for s in train} & {s.cls for s in test}
        assert len(train) + len(test) == len(samples)
        assert {s.label for s in test} == set(range(len({s.cls for s in test})))  # relabelled
    assert class_folds(samples, 3, seed=1) == folds
    with pytest.raises(Exception, match="class folds"):
        class_folds(samples, 7)


def _feature_samples(n_classes=6, per_class=12, dim=128, seed=0):
    """Synthetic backbone features: class centres plus noise, as Samples with fake paths."""
    import torch
    from es_metric.training.data import Sample
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, dim, generator=g)
    feats = torch.cat([c + 0.8 * torch.randn(per_class, dim, generator=g) for c in centres]).abs()
    samples = [Sample(f"img{i}.jpg", i // per_class, f"c{i // per_class}") for i in range(len(feats))]
    return samples, feats


@pytest.mark.parametrize("reg", [0.0, 1e4])
def test_head_reg_keeps_the_linear_head_near_its_pca_start(reg):
    import torch
    from es_metric.model.encoder import create_encoder
    from es_metric.training.head import anchor_penalty, fit_head, pca_init
    from es_metric.training.headdata import head_data
    from es_metric.training.losses import objective
    from es_metric.training.train import TrainConfig
    samples, feats = _feature_samples()
    cfg = TrainConfig(backbone="small-cnn", pretrained=False, dim=8, epochs=8, patience=8, lr=1e-2,
                      batch_size=24, head_reg=reg, refit=False, init="pca").resolved()
    enc = create_encoder("small-cnn", dim=8, pretrained=False)
    start = torch.nn.Linear(128, 8)  # small-cnn features are 128-d
    pca_init(start, feats)
    history, best = fit_head(enc, objective("multi-similarity"), cfg, head_data(samples, feats), lambda e: None)
    moved = anchor_penalty(enc.head.weight.detach(), start.weight.detach()).item()
    if reg:
        assert moved < 1e-3   # held at the pretrained geometry
    else:
        assert moved > 1e-2   # free to move
    assert best == 8 and len(history) == 9  # nothing to measure: every epoch kept


def test_anchor_penalty_by_hand():
    import torch
    from es_metric.training.head import anchor_penalty
    w0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert anchor_penalty(w0 + torch.tensor([[0.5, 0.0], [0.0, 0.0]]), w0).item() == pytest.approx(0.25 / 2)


@pytest.mark.slow  # a whole training run (make test runs it; make test-unit leaves it out)
def test_card_reports_both_protocols_where_measurable(tiny_model, tiny_data, tmp_path):
    from es_metric.model.modelfile import read_card
    from es_metric.training.train import TrainConfig, train
    m = read_card(tiny_model)["metrics"]  # 6 products: one held out gives too few queries
    assert "cannot measure" in m["validation"]["class-disjoint"]["note"]
    assert m["transfers_to_new_products"] is None and "not measured on new products" in m["intended_for"]
    card = train(tiny_data, tmp_path / "cd.pt", TrainConfig(
        loss="triplet", backbone="small-cnn", dim=16, epochs=2, batch_size=48, seed=1,
        protocol="class-disjoint", val_fraction=0.34)).card
    m = card["metrics"]
    assert m["gate"]["protocol"] == "class-disjoint"
    for protocol in ("in-domain", "class-disjoint"):
        fig = m["validation"][protocol]
        assert fig["n_queries"] >= 10 and set(fig["model"]) >= {"recall_at_1", "mrr", "map_at_r"}
        assert fig["difference"]["map_at_r"]["difference"] == pytest.approx(
            fig["model"]["map_at_r"] - fig["baseline"]["map_at_r"], abs=1e-3)
    assert m["transfers_to_new_products"] is m["validation"]["class-disjoint"]["difference"]["map_at_r"]["better"]


def test_esm_split_writes_one_class_fold(tiny_data, tmp_path):
    from click.testing import CliRunner
    from es_metric.cli import main
    from es_metric.training.data import class_folds
    res = CliRunner().invoke(main, ["split", str(tiny_data), "--out", str(tmp_path / "f1"),
                                    "--protocol", "class-disjoint", "--folds", "3", "--fold", "1"])
    assert res.exit_code == 0, res.output
    _, test = class_folds(scan_folder(tiny_data), 3, 0)[1]
    assert sorted(p.name for p in (tmp_path / "f1" / "test").iterdir()) == sorted({s.cls for s in test})
    bad = CliRunner().invoke(main, ["split", str(tiny_data), "--out", str(tmp_path / "x"), "--folds", "3"])
    assert bad.exit_code != 0 and "class-disjoint" in bad.output


def test_the_cutoffs_precision_target_is_chosen_at_training_and_said(tiny_data, tmp_path):
    """`esm train --cutoff-precision P`: the card's cut-off is calibrated for P, and the run says
    where `--min-similarity auto` will cut; a target outside (0.5, 1] is refused in one line."""
    from click.testing import CliRunner

    from es_metric.cli import main
    from es_metric.model.card import read_card
    base = ["train", str(tiny_data), "--backbone", "small-cnn", "--no-pretrained", "--train-backbone",
            "--dim", "8", "--epochs", "1", "--batch-size", "48", "--seed", "4", "--qe-k", "0", "--dba-k", "0",
            "--no-export"]
    cutoffs = {}
    for precision in ("0.6", "1"):
        out = tmp_path / f"p{precision}.pt"
        result = CliRunner().invoke(main, base + ["--out", str(out), "--cutoff-precision", precision])
        assert result.exit_code == 0, result.output
        cutoffs[precision] = cut = read_card(out)["metrics"]["cutoff"]
        if cut is None:
            assert "cut-off: none" in result.output and "--cutoff-precision" in result.output
        else:
            assert cut["precision"] == float(precision)
            assert f"similarity at least {cut['similarity']:.4f}" in result.output
            assert f"with precision {float(precision):g}" in result.output
    assert cutoffs["0.6"] is not None  # the first hit of some query is its own class: 0.6 is reachable
    if cutoffs["1"] is not None:  # a stricter target never cuts looser
        assert cutoffs["1"]["similarity"] >= cutoffs["0.6"]["similarity"]
    for bad in ("0.3", "1.5", "nan", "inf", "high"):
        result = CliRunner().invoke(main, base + ["--out", str(tmp_path / "bad.pt"), "--cutoff-precision", bad])
        assert result.exit_code == 2 and "--cutoff-precision" in result.output, bad
        assert not (tmp_path / "bad.pt").exists()
    from es_metric.errors import ConfigError
    from es_metric.training.train import TrainConfig
    for bad in (0.3, 1.5, float("nan"), "0.9", True):  # the Python API is checked the same
        with pytest.raises(ConfigError, match="cutoff precision .* from 0.5 to 1"):
            TrainConfig(cutoff_precision=bad).resolved()  # type: ignore[arg-type]
