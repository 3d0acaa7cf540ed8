"""Fixtures of the model tests."""
import shutil

import pytest


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    """A copy of the session's small-cnn model, exported to ONNX (the shared file stays
    torch-only, as the other tests expect)."""
    from es_metric.model.export import export_model

    path = tmp_path_factory.mktemp("exported") / "small.pt"
    shutil.copy(tiny_model, path)
    export_model(path)
    return path
