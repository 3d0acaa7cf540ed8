"""The learned-whitening start of a linear head (training/head.py whiten_init): a closed-form
Mahalanobis metric from the products' own photos."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def _products(n_products=40, per_product=3, dim=32, seed=0):
    """Features where products differ along low-variance directions and a product's own photos
    differ along a few loud ones (light, angle): PCA keeps the loud ones, whitening the quiet."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.zeros(n_products, dim)
    centres[:, 8:] = 1.5 * torch.randn(n_products, dim - 8, generator=g)   # identity: quieter dims
    rows, labels = [], []
    for p in range(n_products):
        for _ in range(per_product):
            noise = 0.05 * torch.randn(dim, generator=g)
            noise[:8] += 6.0 * torch.randn(8, generator=g)                   # nuisance: loud dims
            rows.append(centres[p] + noise)
            labels.append(p)
    return torch.stack(rows), torch.tensor(labels)


def _recall_at_1(head, feats, labels) -> float:
    with torch.no_grad():
        e = torch.nn.functional.normalize(head(feats), dim=-1)
    sims = e @ e.T
    sims.fill_diagonal_(-2)
    return (labels[sims.argmax(1)] == labels).float().mean().item()


def test_whitening_finds_what_tells_products_apart_where_pca_keeps_the_nuisance():
    from es_metric.training.head import pca_init, whiten_init
    feats, labels = _products()
    pca, white = torch.nn.Linear(32, 8), torch.nn.Linear(32, 8)
    pca_init(pca, feats)
    assert whiten_init(white, feats, labels) is True
    assert _recall_at_1(white, feats, labels) > 0.9
    assert _recall_at_1(pca, feats, labels) < 0.5


def test_whitening_is_deterministic_and_as_large_as_the_pca_start():
    from es_metric.training.head import pca_init, whiten_init
    feats, labels = _products(seed=3)
    a, b, pca = torch.nn.Linear(32, 16), torch.nn.Linear(32, 16), torch.nn.Linear(32, 16)
    whiten_init(a, feats, labels)
    whiten_init(b, feats, labels)
    pca_init(pca, feats)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    centred = feats - feats.mean(0)
    with torch.no_grad():
        white, start = a(feats).norm(dim=1).mean(), (centred @ pca.weight.T).norm(dim=1).mean()
    # the optimiser's steps mean the same from either start
    assert 0.5 < (white / start).item() < 2.0


def test_no_product_with_two_rows_leaves_the_head_untouched():
    """One photo per product and no views: nothing says how a product's photos differ; the caller
    falls back to the PCA start (head_optimizer)."""
    from es_metric.training.head import whiten_init
    feats, _ = _products(per_product=1)
    head = torch.nn.Linear(32, 8)
    before = head.weight.detach().clone()
    assert whiten_init(head, feats, torch.arange(len(feats))) is False
    assert torch.equal(head.weight, before)


def test_head_optimizer_starts_where_the_config_says():
    from es_metric.model.encoder import create_encoder
    from es_metric.training.config import TrainConfig
    from es_metric.training.head import head_optimizer, pca_init, whiten_init
    feats, labels = _products(dim=128)   # small-cnn features are 128-d
    for init, start in (("whiten", lambda h: whiten_init(h, feats, labels)), ("pca", lambda h: pca_init(h, feats))):
        enc = create_encoder("small-cnn", dim=8, pretrained=False)
        cfg = TrainConfig(backbone="small-cnn", pretrained=False, init=init).resolved()
        _, _, took = head_optimizer(enc, feats, cfg, labels)
        assert took == init
        expected = torch.nn.Linear(128, 8)
        start(expected)
        assert torch.allclose(enc.head.weight, expected.weight), init
    enc = create_encoder("small-cnn", dim=8, pretrained=False)   # no labels (partial fine-tuning): PCA
    assert head_optimizer(enc, feats, TrainConfig(backbone="small-cnn", pretrained=False).resolved())[2] == "pca"
    expected = torch.nn.Linear(128, 8)
    pca_init(expected, feats)
    assert torch.allclose(enc.head.weight, expected.weight)


def test_the_start_taken_is_the_one_reported_when_whitening_cannot_be_learned():
    """`--init whiten` on one photo per product without views falls back to PCA and says so (the
    card's measured_head must not call a PCA start a learned whitening); an MLP head has no
    closed-form start at all."""
    from es_metric.model.encoder import create_encoder
    from es_metric.training.config import TrainConfig
    from es_metric.training.head import head_optimizer, pca_init
    feats, _ = _products(per_product=1, dim=128)
    cfg = TrainConfig(backbone="small-cnn", pretrained=False).resolved()
    assert cfg.init == "whiten"
    enc = create_encoder("small-cnn", dim=8, pretrained=False)
    assert head_optimizer(enc, feats, cfg, torch.arange(len(feats)))[2] == "pca"
    expected = torch.nn.Linear(128, 8)
    pca_init(expected, feats)
    assert torch.allclose(enc.head.weight, expected.weight)
    mlp = create_encoder("small-cnn", dim=8, pretrained=False, head="mlp")
    before = [t.detach().clone() for t in mlp.head.parameters()]
    _, anchor, took = head_optimizer(mlp, feats, cfg, torch.arange(len(feats)))
    assert took is None and anchor is None
    assert all(torch.equal(a, b) for a, b in zip(before, mlp.head.parameters()))


@pytest.mark.parametrize("init", ["whitn", "PCA", "", "whiten; rm -rf /", "none"])
def test_an_unknown_head_start_is_one_clear_error_not_a_silent_pca_start(init):
    """The Python API takes any string: a typo must not train from the PCA start unnoticed."""
    from es_metric.errors import ConfigError
    from es_metric.training.config import TrainConfig
    with pytest.raises(ConfigError, match="unknown head start") as err:
        TrainConfig(backbone="small-cnn", pretrained=False, init=init).resolved()
    assert "whiten, pca" in str(err.value.hint)


def test_vectorised_within_product_scatter_matches_a_loop():
    """The per-product means come from one index_add (O(N·D), not a loop over products)."""
    from es_metric.training.head import whiten_init
    feats, labels = _products(n_products=10, per_product=4, dim=12, seed=5)
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]  # any order
    head = torch.nn.Linear(12, 4)
    whiten_init(head, feats, labels, shrink=0.1)
    x = feats.double()
    within = sum(((x[labels == p] - x[labels == p].mean(0)).T @ (x[labels == p] - x[labels == p].mean(0))
                  for p in labels.unique()), torch.zeros(12, 12, dtype=torch.float64)) / len(x)
    within += 0.1 * torch.trace(within) / 12 * torch.eye(12, dtype=torch.float64)
    ev, U = torch.linalg.eigh(within)
    inv_sqrt = (U / ev.sqrt()) @ U.T
    white = (x - x.mean(0)) @ inv_sqrt
    ev2, U2 = torch.linalg.eigh(white.T @ white)
    top = U2[:, torch.argsort(ev2, descending=True)[:4]]
    # the head's rows, taken back to the whitened space, span the top principal directions there
    proj = head.weight.double() @ torch.linalg.inv(inv_sqrt).T
    resid = proj - (proj @ top) @ top.T
    assert resid.norm() / proj.norm() < 1e-6
