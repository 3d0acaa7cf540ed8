"""``stages`` pooling: the last convolution's average beside the last three stages' (the default
features of a head on a frozen EfficientNet-Lite), through the model file and its checks."""
import pytest
import torch
import torch.nn.functional as F

from es_metric.errors import ConfigError, ModelError
from es_metric.model.encoder import backbone_own, create_encoder, pool_maps
from es_metric.model.modelfile import build_card, load_model, save_model
from es_metric.model.weights import check_card_against_weights, stages_dim


def _stage_outputs(lite, x):
    """Each block's output, by hand, to check what the backbone pools."""
    net, outs = lite.net, []
    x = net._swish(net._bn0(net._conv_stem(x)))
    for block in net._blocks:
        x = block(x)
        outs.append(x)
    return outs


def test_stages_features_are_the_last_convolution_beside_the_last_three_stages():
    torch.manual_seed(0)
    enc = create_encoder("efficientnet-lite0", dim=8, pretrained=False, pool="stages").eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        feats = enc.backbone(x)
        last = enc.backbone.maps(x).mean(dim=(2, 3))
        blocks = _stage_outputs(enc.backbone, x)
    assert enc.feat_dim == 1280 + 112 + 192 + 320 == feats.shape[1]
    # lite0's stages end at blocks 10 (112 channels), 14 (192) and 15 (320)
    expected = torch.cat([F.normalize(last, dim=-1)]
                         + [F.normalize(blocks[i].mean(dim=(2, 3)), dim=-1) for i in (10, 14, 15)], dim=1)
    assert torch.allclose(feats, expected, atol=1e-5)
    # the pretrained baseline inside them is the backbone's own (avg) features, normalised
    own = backbone_own(enc.backbone, feats)
    assert own.shape == (2, 1280)
    assert torch.allclose(own, F.normalize(last, dim=-1), atol=1e-5)
    avg = create_encoder("efficientnet-lite0", pretrained=False).backbone
    assert backbone_own(avg, last) is last


def test_a_stages_model_round_trips_and_its_card_is_checked_against_its_weights(tmp_path):
    torch.manual_seed(1)
    enc = create_encoder("efficientnet-lite0", dim=8, pretrained=False, pool="stages").eval()
    card = build_card(enc, backbone="efficientnet-lite0", loss="multi-similarity", training={},
                      data_fingerprint=None)
    assert card["pool"] == "stages" and card["feat_dim"] == 1904
    loaded = load_model(save_model(tmp_path / "s.pt", enc, card))
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(loaded.encoder(x), enc(x), atol=1e-6)
    shapes = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert stages_dim(shapes) == 624
    check_card_against_weights(card, shapes, "s.pt")   # agrees
    # a card that says avg pooling does not fit a head that reads 1904 features
    with pytest.raises(ModelError, match="no such head on 1280-d"):
        check_card_against_weights({**card, "pool": "avg", "feat_dim": 1280}, shapes, "s.pt")


def test_stages_pooling_refuses_what_it_cannot_do():
    with pytest.raises(ConfigError, match="stages pooling pools several stages"):
        pool_maps(torch.rand(1, 4, 2, 2), "stages")
    with pytest.raises(ConfigError, match="need an efficientnet-lite"):
        create_encoder("small-cnn", pretrained=False, pool="stages")
    enc = create_encoder("efficientnet-lite0", pretrained=False, pool="stages")
    with pytest.raises(ConfigError, match="--train-blocks"):
        enc.backbone.tail(torch.rand(1, 320, 7, 7), 15)


@pytest.mark.parametrize("overrides,pool", [
    ({}, "stages"),                                              # a head on a frozen Lite: the default
    ({"head": "none"}, "avg"),                                   # the pretrained model: the backbone's own
    ({"train_blocks": 2}, "avg"),                                # fine-tuning reads the last maps only
    ({"backbone": "small-cnn", "pretrained": False}, "avg"),     # no stages to read
    ({"freeze_backbone": False}, "avg"),                         # the whole backbone trains
    ({"pool": "gem"}, "gem"),                                    # asked for: kept
    ({"pool": "stages", "head": "mlp"}, "stages"),
])
def test_auto_pooling_is_stages_only_for_a_head_on_a_frozen_lite(overrides, pool):
    from es_metric.training.config import TrainConfig
    assert TrainConfig(**overrides).resolved().pool == pool


def test_an_unknown_pooling_is_one_clear_error():
    from es_metric.training.config import TrainConfig
    with pytest.raises(ConfigError, match="unknown pooling 'max'.*auto, avg, gem, stages"):
        TrainConfig(pool="max").resolved()


def test_stages_with_train_blocks_is_refused_before_any_work():
    """Not minutes later, after the early blocks' activations were cached."""
    from es_metric.training.config import TrainConfig
    with pytest.raises(ConfigError, match="--pool stages reads earlier stages than --train-blocks"):
        TrainConfig(pool="stages", train_blocks=2).resolved()


@pytest.mark.slow  # two training runs of EfficientNet-Lite0 at 288 px (make test runs it; make test-unit leaves it out)
def test_a_stages_model_is_gated_against_the_pretrained_model_itself(tmp_path):
    """The card's baseline is what `--head none` indexes (the last convolution's average), not
    a cosine on the stages features the head was trained on."""
    from es_metric.training.train import TrainConfig, train
    from tests.imagegen import make_dataset

    data = make_dataset(tmp_path / "images", n_classes=12, per_class=3)
    stages = train(data, tmp_path / "s.pt", TrainConfig(epochs=1, views=1, seed=0)).card
    plain = train(data, tmp_path / "p.pt", TrainConfig(head="none", seed=0)).card
    assert stages["pool"] == "stages" and stages["feat_dim"] == 1904
    assert plain["pool"] == "avg" and plain["feat_dim"] == 1280
    baseline = stages["metrics"]["validation"]["in-domain"]["baseline"]
    pretrained = plain["metrics"]["validation"]["in-domain"]["model"]
    assert baseline["n_queries"] == pretrained["n_queries"] >= 10
    for name in ("recall_at_1", "mrr", "map_at_r", "recall_at_k"):
        assert baseline[name] == pretrained[name], name


@pytest.mark.parametrize("pool,said", [
    ("x" * 3000, "names pooling 'xxxx"),                   # a hostile card: one short line, not 3,000 characters
    (["stages"], "names pooling ['stages']"),
    ("stages", "says stages pooling, which only an efficientnet-lite"),
    ("gem", "says gem pooling, which only an efficientnet-lite"),
])
def test_a_card_whose_pooling_its_backbone_cannot_have_is_refused_before_torch_loads_it(tmp_path, pool, said):
    enc = create_encoder("small-cnn", dim=8, pretrained=False)
    card = build_card(enc, backbone="small-cnn", loss="triplet", training={}, data_fingerprint=None)
    path = save_model(tmp_path / "h.pt", enc, {**card, "pool": pool})
    with pytest.raises(ModelError) as info:
        load_model(path)
    text = str(info.value)
    assert said in text and str(path) in text
    assert len(text) - len(str(path)) < 200 and "\n" not in text
