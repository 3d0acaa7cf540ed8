"""Cached feature maps give the same descriptors as the encoder's own pooling."""
import pytest
import torch

from es_metric.training.data import scan_folder


def test_pooled_cached_maps_equal_the_backbone_features(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("ESM_CACHE_DIR", str(tmp_path))
    from es_metric.training.features import backbone_features
    from es_metric.training.features import descriptors, feature_maps, pooled

    samples = scan_folder(tiny_data)[:6]
    maps = feature_maps("efficientnet-lite0", samples)
    assert maps.dtype == torch.float16 and maps.shape == (6, 1280, 9, 9)  # 288 px in, stride 32
    assert torch.equal(feature_maps("efficientnet-lite0", samples), maps)  # from the disk cache
    for pool in ("avg", "gem"):
        direct = backbone_features("efficientnet-lite0", samples, pretrained=True, pool=pool)
        assert torch.allclose(pooled(maps, pool), direct, rtol=2e-2, atol=2e-2)  # float16 maps
    both = descriptors("efficientnet-lite0", samples, flip=True)
    assert torch.allclose(both.norm(dim=1), torch.ones(6), atol=0.02) and both.shape == (6, 1280)
    mirrored = feature_maps("efficientnet-lite0", samples, flip=True)
    assert not torch.equal(mirrored, maps)
    with pytest.raises(Exception, match="pooling"):
        pooled(maps, "max")
