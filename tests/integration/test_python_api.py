"""The Python API for applications, on the real stack: the example of docs/python-api.md runs as written,
and the enqueue path loads neither torch nor the web stack."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import esm, esm_json

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def docs_example() -> str:
    text = (REPO / "docs" / "python-api.md").read_text()
    match = re.search(r"<!-- python-api-example -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match, "docs/python-api.md has no Python API example"
    return match.group(1)


def run_python(code: str, settings, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, **{k: v for k, v in settings.as_env().items() if v},
            "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full,
                          timeout=300, cwd=REPO)


def test_docs_example_runs_and_updates_only_the_vectors(stack, es, index_name, tiny_model, tiny_data):
    esm("mapping", "create", index_name, "--model", tiny_model, "--multi-photo")
    done = run_python(docs_example(), stack,
                      SHOP_INDEX=index_name, SHOP_PHOTOS=str(tiny_data), ESM_IMAGE_ROOTS=str(tiny_data))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("sku-1 ") and "red mug" in lines[0]
    assert lines[0].endswith("class_0/img_000.jpg") or lines[0].endswith("class_0/img_001.jpg")
    doc = es.get(index=index_name, id="sku-1")["_source"]
    assert doc["title"] == "red mug" and doc["price"] == 12 and len(doc["photos"]) == 2


ENQUEUE_ONLY = """
import json, sys
from es_metric.api import EsMetric
with EsMetric() as api:
    job = api.enqueue(INDEX, DOCS, mode="index")
    done = api.wait(job, timeout=120)
print(json.dumps({"done": done, "refused": job.refused,
                  "loaded": sorted(m for m in ("torch", "torchvision", "fastapi", "uvicorn", "PIL")
                                   if m in sys.modules)}))
"""


def test_enqueue_path_imports_neither_torch_nor_the_web_stack(stack, es, index_name, tiny_model, tiny_data):
    esm("mapping", "create", index_name, "--model", tiny_model)
    files = sorted(str(p) for p in (tiny_data / "class_2").iterdir())[:3]
    docs = [{"id": f"d{i}", "image": f, "fields": {"n": i}} for i, f in enumerate(files)]
    docs += [{"id": "outside", "image": "/etc/passwd"}, {"image": files[0], "fields": {"_id": "x"}}]
    code = f"INDEX = {index_name!r}\nDOCS = {json.dumps(docs)}\n" + ENQUEUE_ONLY
    done = run_python(code, stack, ESM_IMAGE_ROOTS=str(tiny_data))
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["loaded"] == [] and out["refused"] == 2 and out["done"] == [3, 2]
    assert es.get(index=index_name, id="d1")["_source"]["n"] == 1


def test_ingest_and_wait_applies_the_dba_pass_as_esm_ingest_does(stack, es, index_name, tiny_model,
                                                                  tiny_data, tmp_path):
    """One service behind both shells: the Python API's ingest-and-wait augments what it wrote
    (the DBA pass the index records for ingests) and reports it as `esm ingest --wait` does."""
    from es_metric.api import EsMetric
    from es_metric.index.dbafields import DbaFields
    from es_metric.index.indices import index_info
    from es_metric.model.modelfile import load_model, save_model

    model = load_model(tiny_model)
    card = dict(model.card, rerank={"qe_k": 0, "qe_alpha": 3.0, "dba_k": 3, "dba_alpha": 3.0})
    dba_model = save_model(tmp_path / "dba.pt", model.encoder, card)
    esm("mapping", "create", index_name, "--model", dba_model)
    files = [f for c in (0, 1, 2) for f in sorted((tiny_data / f"class_{c}").iterdir())[:4]]
    manifest = tiny_data.parent / f"{index_name}.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"cli{i}", "image": str(f)}) + "\n"
                                for i, f in enumerate(files[:8])))
    cli = esm_json("ingest", index_name, manifest)
    with EsMetric(stack) as api:
        out = api.ingest_and_wait(index_name, [{"id": f"api{i}", "image": str(f)} for i, f in enumerate(files[8:])],
                                  mode="index", timeout=300)
    assert (cli["indexed"], cli["dba"]["documents"]) == (8, 8)
    assert (out.indexed, out.failed) == (4, 0) and out.dba is not None and out.dba["documents"] == 4
    assert set(out.summary()) == set(cli) - {"job_id", "queued", "refused", "index"}
    assert set(out.dba) == set(cli["dba"]) and out.dba["failed"] == 0
    marker = DbaFields.of(index_info(es, index_name).fields).marker
    es.indices.refresh(index=index_name)
    mine = {"ids": {"values": [f"api{i}" for i in range(4)]}}
    augmented = es.count(index=index_name, query={"bool": {"filter": [{"exists": {"field": f"{marker}.run"}},
                                                                      mine]}})
    assert augmented["count"] == 4
