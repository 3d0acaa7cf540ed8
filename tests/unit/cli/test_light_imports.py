"""The CLI's light commands import no torch (and ``esm --help`` no Elasticsearch client or
FastAPI either): each runs in a fresh interpreter and its sys.modules is read afterwards.
The commands that talk to the stack are in tests/integration/test_light_imports.py."""
from __future__ import annotations

import pytest

from tests.imports import run_esm


def test_help_imports_no_torch_no_elasticsearch_no_fastapi():
    run = run_esm("--help")
    assert run.code == 0 and "mapping" in run.output and "train" in run.output
    assert run.heavy() == set(), run.heavy()
    assert "es_metric.cli.training" in run.modules  # the check would mean nothing otherwise


@pytest.mark.parametrize("args", [("stack", "--help"), ("mapping", "create", "--help"),
                                  ("ingest", "--help"), ("failures", "--help"),
                                  ("reindex", "--help"), ("search", "--help")])
def test_light_command_help_imports_no_torch(args):
    run = run_esm(*args)
    assert run.code == 0 and "Usage:" in run.output
    assert "torch" not in run.modules


def test_model_show_reads_the_card_without_torch(tmp_path):
    import json

    from es_metric.model.encoder import create_encoder
    from es_metric.model.modelfile import build_card, save_model

    enc = create_encoder("small-cnn", dim=8, metric="cosine", pretrained=False)
    path = save_model(tmp_path / "m.pt", enc, build_card(enc, backbone="small-cnn", loss="triplet",
                                                          training={}, data_fingerprint=None))
    run = run_esm("model", "show", path)
    assert run.code == 0 and json.loads(run.stdout)["dims"] == 8
    assert "torch" not in run.modules


def test_heavy_commands_still_see_their_choices():
    """The registries behind --backbone and --loss load when the command's own help is shown."""
    run = run_esm("train", "--help")
    assert run.code == 0 and "efficientnet-lite0" in run.output and "multi-similarity" in run.output
    assert "torch" in run.modules  # the probe sees torch when it is there
