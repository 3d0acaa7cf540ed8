"""Encoders from the registry, weights handling, and model files that round-trip."""
import numpy as np
import pytest
import torch

from es_metric.errors import ConfigError, ModelError
from es_metric.model.embed import embed_images
from es_metric.model.encoder import BACKBONES, create_encoder
from es_metric.model.modelfile import build_card, load_model, read_card, save_model
from tests.imagegen import make_image


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        create_encoder("vgg99")
    assert "small-cnn" in str(info.value) and "efficientnet-lite0" in str(info.value)


@pytest.mark.parametrize("name", ["small-cnn", "resnet18", "mobilenet_v3_large", "efficientnet_b0"])
def test_backbones_build_with_head_and_normalisation(name):
    enc = create_encoder(name, dim=16, pretrained=False).eval()
    size = BACKBONES[name].preprocess.size
    with torch.no_grad():
        out = enc(torch.randn(2, 3, size, size))
    assert out.shape == (2, 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_missing_torchvision_weights_say_where_to_put_them(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelError) as info:
        create_encoder("resnet18", pretrained=True)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in str(info.value)


def test_local_weights_file_loads(tmp_path):
    src = create_encoder("small-cnn", pretrained=False)
    path = tmp_path / "w.pt"
    torch.save(src.backbone.state_dict(), path)
    enc = create_encoder("small-cnn", weights=path)
    assert torch.equal(enc.backbone.features[0].weight, src.backbone.features[0].weight)


@pytest.mark.parametrize("variant,size", [(0, 288), (1, 240), (2, 260)])
def test_efficientnet_lite_is_pretrained_offline_and_embeds_at_its_retrieval_size(variant, size):
    """Lite0 embeds at 288 px, 1.29 x its training size (a CNN trained on random-resized crops ranks
    better a little larger, BENCHMARKS.md §12b); Lite1 and Lite2 at their native sizes."""
    name = f"efficientnet-lite{variant}"
    enc = create_encoder(name).eval()
    assert enc.dim == 1280 and BACKBONES[name].preprocess.size == size
    bn = enc.backbone.net._bn0
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))  # real ImageNet stats


def test_gem_pooling_by_hand():
    from es_metric.model.encoder import gem, pool_maps
    maps = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # 1 image, 1 channel, 2 x 2
    assert gem(maps, p=3.0).item() == pytest.approx((100 / 4) ** (1 / 3))  # (1+8+27+64)/4
    assert gem(maps, p=1.0).item() == pytest.approx(2.5) == pool_maps(maps, "avg").item()
    assert gem(maps, p=50.0).item() == pytest.approx(4.0, rel=0.05)  # large p: max pooling


def test_gem_backbone_round_trips_through_the_model_file(tmp_path):
    enc = create_encoder("efficientnet-lite0", dim=8, pretrained=False, pool="gem").eval()
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        maps = enc.backbone.maps(x)
        assert torch.allclose(enc.backbone(x), maps.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3))
    card = build_card(enc, backbone="efficientnet-lite0", loss="triplet", training={}, data_fingerprint=None)
    assert card["pool"] == "gem"
    loaded = load_model(save_model(tmp_path / "g.pt", enc, card))
    assert loaded.encoder.backbone.pool == "gem"
    with pytest.raises(ConfigError, match="gem and stages pooling need an efficientnet-lite"):
        create_encoder("small-cnn", pretrained=False, pool="gem")


def test_model_file_round_trip_gives_same_embeddings(tmp_path):
    import random
    torch.manual_seed(0)
    enc = create_encoder("small-cnn", dim=8, metric="l2_norm", pretrained=False, feature_norm=True).eval()
    card = build_card(enc, backbone="small-cnn", loss="mahalanobis", training={"epochs": 0},
                      data_fingerprint="abc")
    path = save_model(tmp_path / "m.pt", enc, card)
    loaded = load_model(path)
    imgs = [make_image(i, random.Random(i)) for i in range(3)]
    a = embed_images(enc, imgs, loaded.preprocess)
    b = embed_images(loaded.encoder, imgs, loaded.preprocess)
    np.testing.assert_array_equal(a, b)
    assert read_card(path)["model_id"] == card["model_id"] == loaded.model_id
    assert card["similarity"] == "l2_norm" and card["dims"] == 8


def test_not_a_model_file_is_refused(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"junk")
    with pytest.raises(ModelError, match="not a readable es-metric model"):
        load_model(bad)
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "none.pt")
