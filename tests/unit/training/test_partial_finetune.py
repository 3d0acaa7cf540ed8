"""Fine-tuning the last EfficientNet-Lite blocks on cached early activations: the split is exact,
training changes only the tail, checkpoints resume, and the model file serves the tuned tail.
The two training tests are ``slow`` (they fine-tune EfficientNet-Lite0 at 288 px): ``make test``
runs them, ``make test-unit`` does not."""
import shutil

import numpy as np
import pytest
import torch

from es_metric.model.encoder import create_encoder
from tests.imagegen import make_dataset


def test_early_then_tail_equals_the_whole_backbone():
    enc = create_encoder("efficientnet-lite0", pretrained=False).eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        whole = enc.backbone(x)
        for start in (11, 14, 16):
            assert torch.allclose(enc.backbone.tail(enc.backbone.early(x, start), start), whole, atol=1e-5)


CFG = dict(loss="multi-similarity", backbone="efficientnet-lite0", train_blocks=2, views=2, dim=16,
           batch_size=32, seed=0, patience=10, protocol="class-disjoint")


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory):
    """One epoch of tail fine-tuning on 24 generated images (4 products), trained once for the
    module (the cache of early activations too): (the model file, the training's result)."""
    from es_metric.training.train import TrainConfig, train

    root = tmp_path_factory.mktemp("tail")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ESM_CACHE_DIR", str(root / "cache"))
        data = make_dataset(root / "images", n_classes=4, per_class=6)
        out = root / "ft.pt"
        yield data, out, train(data, out, TrainConfig(epochs=1, **CFG))


@pytest.mark.slow
def test_tail_fine_tune_trains_the_last_blocks_only_and_resumes(fine_tuned, tmp_path):
    from es_metric.model.modelfile import load_model
    from es_metric.training.train import TrainConfig, train

    data, trained, first = fine_tuned
    out = tmp_path / "ft.pt"  # a copy: resuming rewrites the model and its checkpoint
    for suffix in ("", ".ckpt"):
        shutil.copy(str(trained) + suffix, str(out) + suffix)
    assert [r["epoch"] for r in first.history] == [0, 1]
    assert first.card["training"]["freeze_backbone"] is False and first.card["training"]["train_blocks"] == 2
    resumed = train(data, out, TrainConfig(epochs=2, **CFG), resume=True)
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2]
    assert resumed.history[1] == first.history[1]  # carried over from the checkpoint, not retrained

    pretrained = create_encoder("efficientnet-lite0").state_dict()
    tuned = torch.load(str(out) + ".ckpt", weights_only=False)["encoder"]  # after the last epoch
    changed = set()
    for key in pretrained:
        if key.startswith("backbone.net.") and not torch.equal(pretrained[key], tuned[key]):
            parts = key[len("backbone.net."):].split(".")
            changed.add(".".join(parts[:2]) if parts[0] == "_blocks" else parts[0])
    # only the last two blocks (14, 15) and the head convolution (+ its BatchNorm affine) move
    assert "_blocks.15" in changed and changed <= {"_blocks.14", "_blocks.15", "_conv_head", "_bn1"}
    assert all(torch.equal(pretrained[k], tuned[k]) for k in pretrained if "running" in k)  # BN frozen
    assert load_model(out).card["training"]["train_blocks"] == 2


@pytest.mark.slow
def test_tail_fine_tune_model_embeds_like_the_cached_path(fine_tuned):
    from es_metric.training.data import scan_folder
    from es_metric.training.evaluate import model_embeddings
    from es_metric.model.modelfile import load_model
    from es_metric.training.partial import early_activations, tail_vectors

    data, out, _ = fine_tuned
    model = load_model(out)
    samples = scan_folder(data)[:8]
    via_model = model_embeddings(model, samples).vectors
    acts = early_activations(model.encoder, "efficientnet-lite0", samples, 14, augment=False)
    np.testing.assert_allclose(tail_vectors(model.encoder, acts, 14).numpy(), via_model, atol=2e-2)
