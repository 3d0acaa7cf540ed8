"""The public face: ``import es_metric`` is light and its names load on use; public modules
declare ``__all__``; the package is typed; the dicts that cross Celery and the model file match
their TypedDicts in es_metric.types."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import es_metric
from es_metric import types

PACKAGE = Path(es_metric.__file__).parent
PUBLIC = ["es_metric", "es_metric.config", "es_metric.errors", "es_metric.types", "es_metric.similarity",
          "es_metric.version", "es_metric.images", "es_metric.paths", "es_metric.redact",
          "es_metric.progressbar", "es_metric.model.card", "es_metric.model.modelfile",
          "es_metric.model.encoder", "es_metric.model.embed", "es_metric.training.config",
          "es_metric.training.train", "es_metric.training.evaluate", "es_metric.cli"]


def test_import_es_metric_is_light_and_names_load_on_use():
    probe = ("import json, sys, es_metric; before = sorted(m for m in ('torch', 'elasticsearch', "
             "'fastapi', 'numpy') if m in sys.modules); es_metric.Settings; es_metric.read_card; "
             "print(json.dumps([before, 'torch' in sys.modules, 'es_metric.config' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [[], False, True]


def test_every_public_name_of_the_package_resolves():
    for name in es_metric.__all__:
        assert getattr(es_metric, name) is not None, name
        assert name in dir(es_metric)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        es_metric.nope  # noqa: B018


@pytest.mark.parametrize("module", PUBLIC)
def test_public_modules_declare_all(module):
    mod = importlib.import_module(module)
    assert isinstance(getattr(mod, "__all__", None), list), f"{module} has no __all__"
    missing = [n for n in mod.__all__ if not hasattr(mod, n) and n not in getattr(mod, "_LAZY", {})]
    assert not missing, f"{module}.__all__ names what it does not define: {missing}"


def test_the_package_is_typed():
    assert (PACKAGE / "py.typed").is_file()


def test_a_job_spec_is_a_job_spec():
    from es_metric.index.indices import IndexInfo
    from es_metric.ingest.enqueue import job_spec

    info = IndexInfo(name="shop", concrete="shop-m1", model_id="m1", model_path="/models/m.pt",
                     vector_field="image_vector", dims=32, similarity="cosine")
    spec = job_spec(info, "shop", "j1", "index", roots=("/srv/photos",))
    assert set(spec) == types.JobSpec.__required_keys__
    assert json.loads(json.dumps(spec)) == spec  # crosses Celery as JSON


def test_folder_items_are_image_items(tmp_path):
    from es_metric.ingest.sources import local_source
    from tests.imagegen import make_dataset

    folder = make_dataset(tmp_path / "images", n_classes=1, per_class=2)
    items = local_source(folder).items
    assert items and all(types.ImageItem.__required_keys__ <= set(i) for i in items)
    assert all(set(i) <= types.ImageItem.__required_keys__ | types.ImageItem.__optional_keys__ for i in items)


def test_a_built_card_is_a_model_card(tmp_path):
    from es_metric.model.card import read_card
    from es_metric.model.encoder import create_encoder
    from es_metric.model.modelfile import build_card, save_model

    enc = create_encoder("small-cnn", dim=8, pretrained=False)
    card = {**build_card(enc, backbone="small-cnn", loss="triplet", training={}, data_fingerprint=None),
            "rerank": types.ReRank(qe_k=3).as_dict()}  # as esm train writes it
    back = read_card(save_model(tmp_path / "m.pt", enc, card))
    keys = types.ModelCard.__required_keys__ | types.ModelCard.__optional_keys__
    assert types.ModelCard.__required_keys__ <= set(back) and set(back) <= keys
    assert types.ReRank.from_dict(back["rerank"]) == types.ReRank(qe_k=3)
