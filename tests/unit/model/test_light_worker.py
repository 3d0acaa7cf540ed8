"""A light worker node (no torch): the worker's task module imports, and its embedding path runs
the export with ONNX Runtime, within the parity tolerance of the torch worker's vectors.

The node is a subprocess whose import system refuses torch (a meta path finder), so nothing can
reach torch even indirectly; it prints its vectors and which heavy modules it loaded."""
import json
import subprocess
import sys
import textwrap

import numpy as np

from es_metric.images import DecodeLimits
from es_metric.ingest.pipeline import decode_and_embed
from es_metric.model.export import cosines
from es_metric.model.modelfile import load_model
from es_metric.model.runtime import PARITY_COSINE, TorchEmbedder
from tests.imagegen import make_grainy
from tests.imports import NO_TORCH

LIGHT_NODE = NO_TORCH + textwrap.dedent("""
    import json
    from pathlib import Path

    import es_metric.ingest.tasks  # the Celery worker's task module
    from es_metric.images import DecodeLimits
    from es_metric.ingest.pipeline import decode_and_embed
    from es_metric.model.runtime import load_embedder

    model_path, roots, refs = sys.argv[1], sys.argv[2], sys.argv[3:]
    embedder = load_embedder(model_path)
    good, failures, vectors = decode_and_embed([{"ref": r} for r in refs], embedder, DecodeLimits(),
                                               (Path(roots),))
    print(json.dumps({"runtime": embedder.runtime, "model_id": embedder.card["model_id"],
                      "failures": failures, "vectors": vectors.tolist(),
                      "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))}))
""")


def test_light_node_embeds_without_torch_within_parity(exported, tmp_path):
    images = make_grainy(tmp_path / "grainy", n=10)  # resized and cropped: Pillow vs torch
    refs = [str(p) for p in sorted(images.iterdir())]
    out = subprocess.run([sys.executable, "-c", LIGHT_NODE, str(exported), str(images), *refs],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    light = json.loads(out.stdout.strip().splitlines()[-1])
    assert light["loaded"] == [] and light["runtime"] == "onnxruntime" and light["failures"] == []

    model = load_model(exported)
    assert light["model_id"] == model.model_id
    _, _, reference = decode_and_embed([{"ref": r} for r in refs], TorchEmbedder(model), DecodeLimits(),
                                       (images,))
    got = np.asarray(light["vectors"], np.float32)
    assert got.shape == reference.shape == (10, model.card["dims"])
    assert cosines(got, reference).min() >= PARITY_COSINE
