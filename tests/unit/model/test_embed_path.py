"""The worker's embedding path (decode threads ahead of the model) against the plain path that
search and evaluation use: same vectors, same order, failures kept apart. No services."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from es_metric.images import DecodeLimits, load_image
from es_metric.ingest.pipeline import decode_and_embed
from es_metric.model.embed import embed_images, to_pixels, to_tensor
from es_metric.model.encoder import Preprocess, create_encoder
from es_metric.model.modelfile import build_card, load_model, save_model
from es_metric.model.runtime import TorchEmbedder
from tests.imagegen import make_image


@pytest.mark.parametrize("size", [(120, 80), (80, 120), (64, 64), (30, 50), (348, 348)])
def test_to_pixels_is_short_side_resize_then_centre_crop(size):
    """Crop + resize with torch's uint8 kernel gives the pixels of Pillow's two-step recipe
    (resize the short side, centre-crop) up to rounding: same filter, same geometry."""
    img = make_image(2, random.Random(3), size=200).resize(size)
    w, h = img.size
    scale = 48 / min(w, h)
    two_step = img.resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR)
    left, top = (two_step.width - 48) // 2, (two_step.height - 48) // 2
    two_step = np.asarray(two_step.crop((left, top, left + 48, top + 48)), np.float32)
    pixels = to_pixels(img, 48)
    assert pixels.shape == (3, 48, 48) and pixels.dtype == torch.uint8
    diff = np.abs(pixels.permute(1, 2, 0).numpy().astype(np.float32) - two_step)
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4


def test_to_tensor_normalises_per_channel():
    pre = Preprocess(size=8, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    t = to_tensor(Image.new("RGB", (16, 12), (255, 0, 51)), pre)
    assert t.shape == (3, 8, 8)
    assert torch.allclose(t[:, 0, 0], torch.tensor([1.0, -1.0, 0.2]), atol=1e-5)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    torch.manual_seed(0)
    enc = create_encoder("small-cnn", dim=12, pretrained=False).eval()
    card = build_card(enc, backbone="small-cnn", loss="test", training={}, data_fingerprint=None)
    return load_model(save_model(tmp_path_factory.mktemp("m") / "m.pt", enc, card))


@pytest.mark.parametrize("sub_batch", [1, 3, 16])
def test_worker_path_matches_search_path_in_order(small_model, tmp_path, sub_batch):
    rng = random.Random(5)
    items = []
    for i in range(7):
        path = tmp_path / f"{i}.jpg"
        make_image(i, rng, size=70 + 9 * i).save(path, quality=92)
        items.append({"ref": str(path), "id": None, "fields": {}})
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    items.insert(2, {"ref": str(tmp_path / "bad.jpg"), "id": None, "fields": {}})
    items.append({"ref": str(tmp_path / "empty.png"), "id": None, "fields": {}})
    items.append({"ref": str(tmp_path / "missing.jpg"), "id": None, "fields": {}})

    good, failures, vectors = decode_and_embed(items, TorchEmbedder(small_model), DecodeLimits(),
                                               (tmp_path,), sub_batch=sub_batch)

    assert [item["ref"] for item, _ in good] == [it["ref"] for it in items
                                                 if "bad" not in it["ref"] and "empty" not in it["ref"]
                                                 and "missing" not in it["ref"]]
    assert {f["ref"].rsplit("/", 1)[1]: f["reason"] for f in failures} == {
        "bad.jpg": "corrupt_image", "empty.png": "empty_file", "missing.jpg": "missing_file"}
    pre = small_model.preprocess
    images = [load_image(item["ref"], draft=pre.size)[0] for item, _ in good]
    expected = embed_images(small_model.encoder, images, pre)
    assert vectors.shape == (7, 12)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    assert [sha for _, sha in good] == [load_image(item["ref"])[1] for item, _ in good]


def test_worker_path_with_nothing_decodable(small_model, tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    good, failures, vectors = decode_and_embed([{"ref": str(tmp_path / "x.txt")}],
                                               TorchEmbedder(small_model), DecodeLimits(), (tmp_path,))
    assert good == [] and vectors.shape == (0, 12)
    assert failures[0]["reason"] == "not_an_image"


@pytest.mark.parametrize("size,mode,draft", [((348, 348), "RGB", 224), ((348, 348), "RGB", 64),
                                             ((200, 131), "RGB", None), ((90, 120), "L", 32),
                                             ((348, 348), "RGB", 500)])
def test_plain_jpeg_fast_path_gives_pillows_pixels(size, mode, draft):
    """The libjpeg-turbo one-call path and Pillow's own path agree pixel for pixel, including
    Pillow's draft scale, so training, search and the workers may take either."""
    import io

    from es_metric import images

    buf = io.BytesIO()
    make_image(1, random.Random(7), size=400).resize(size).convert(mode).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    fast = images._plain_jpeg(data, DecodeLimits(), draft)
    assert fast is not None, "a plain JPEG should take the fast path"
    pil = Image.open(io.BytesIO(data))
    if draft:
        pil.draft("RGB", (draft, draft))
    pil = pil.convert("RGB")
    assert fast.size == pil.size and fast.mode == "RGB"
    assert np.array_equal(np.asarray(fast), np.asarray(pil))


def test_fast_path_leaves_exif_cmyk_and_big_images_to_pillow():
    import io

    from es_metric import images

    img = make_image(0, random.Random(1), size=64)
    with_exif = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: Pillow must apply it
    img.save(with_exif, "JPEG", exif=exif)
    cmyk = io.BytesIO()
    img.convert("CMYK").save(cmyk, "JPEG")
    plain = io.BytesIO()
    img.save(plain, "JPEG")
    assert images._plain_jpeg(with_exif.getvalue(), DecodeLimits(), None) is None
    assert images._plain_jpeg(cmyk.getvalue(), DecodeLimits(), None) is None
    assert images._plain_jpeg(plain.getvalue(), DecodeLimits(max_pixels=64 * 63), None) is None
    assert images._plain_jpeg(plain.getvalue()[:200], DecodeLimits(), None) is None  # truncated
    assert images._plain_jpeg(plain.getvalue(), DecodeLimits(), None) is not None


def test_a_lite0_file_written_at_224_px_still_embeds_at_224_and_a_new_one_at_288(tmp_path):
    """Lite0 now embeds at 288 px. The size travels in the model card, so the worker's path embeds
    a file trained before at the 224 px it was trained (and indexed) at, and a new file at 288."""
    torch.manual_seed(0)
    enc = create_encoder("efficientnet-lite0", dim=8).eval()  # ImageNet weights: a random net pools to a constant
    new = build_card(enc, backbone="efficientnet-lite0", loss="test", training={}, data_fingerprint=None)
    old = {**new, "preprocess": {**new["preprocess"], "size": 224}}
    photo = tmp_path / "p.jpg"
    make_image(4, random.Random(4), size=400).save(photo, quality=92)
    image = load_image(str(photo))[0]
    at = {s: embed_images(enc, [image], Preprocess.from_dict(c["preprocess"]))[0] for s, c in ((288, new), (224, old))}
    for card, size, other in ((new, 288, 224), (old, 224, 288)):
        model = load_model(save_model(tmp_path / f"m{size}.pt", enc, card))
        assert model.preprocess.size == size
        _, _, vectors = decode_and_embed([{"ref": str(photo), "id": None, "fields": {}}], TorchEmbedder(model),
                                         DecodeLimits(), (tmp_path,))
        np.testing.assert_allclose(vectors[0], at[size], atol=1e-4)
        assert not np.allclose(vectors[0], at[other], atol=1e-3)
