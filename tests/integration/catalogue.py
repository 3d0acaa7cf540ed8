"""A small es-metric index with one field of every kind a filter meets (keyword, text with and
without a keyword sub-field, integer, float, date with the default and a custom format,
boolean, ip, an object and a nested field), written straight to Elasticsearch with stored
vectors, so filter and API tests need no worker."""
from __future__ import annotations

import uuid

import numpy as np
import pytest

from es_metric.index.client import make_client
from es_metric.index.indices import create_versioned_index, index_info
from es_metric.model.modelfile import read_card

PROPERTIES = {
    "sku": {"type": "keyword"}, "title": {"type": "text", "fields": {"keyword": {"type": "keyword"}}},
    "notes": {"type": "text"}, "stock": {"type": "integer"}, "price": {"type": "float"},
    "released": {"type": "date"}, "day": {"type": "date", "format": "dd/MM/yyyy"},
    "in_stock": {"type": "boolean"}, "host": {"type": "ip"},
    "dims": {"properties": {"width": {"type": "short"}, "unit": {"type": "keyword"}}},
    "variants": {"type": "nested", "properties": {"color": {"type": "keyword"}}},
}
SKUS = ["007", "7", "0070", "1_000", "nan", "inf"]
COLOURS = ["red", "green", "blue"]
N = 24


def doc(i: int) -> dict:
    return {"sku": SKUS[i % 6], "title": "nan" if i == 5 else f"{COLOURS[i % 3]} dress {i}",
            "notes": f"a {COLOURS[i % 3]} summer dress", "stock": i, "price": i * 1.5,
            "released": f"2024-01-{i + 1:02d}", "day": f"{i + 1:02d}/02/2024", "in_stock": i % 2 == 0,
            "host": f"10.0.0.{i}", "dims": {"width": i * 10, "unit": "cm" if i % 2 else "mm"},
            "variants": [{"color": COLOURS[i % 3]}, {"color": "white" if i < 12 else "black"}]}


def ids_where(pred) -> set[str]:
    return {f"d{i}" for i in range(N) if pred(doc(i))}


def build(settings, model_path) -> str:
    """Create the index (alias ``cat-<random>``) and write N documents; returns the alias."""
    client = make_client(settings)
    alias = f"cat-{uuid.uuid4().hex[:8]}"
    create_versioned_index(client, alias, read_card(model_path), str(model_path))
    info = index_info(client, alias)
    client.indices.put_mapping(index=info.concrete, properties=PROPERTIES)
    rng = np.random.default_rng(0)
    ops = []
    for i in range(N):
        vec = rng.normal(size=info.dims)
        ops += [{"index": {"_index": info.concrete, "_id": f"d{i}"}},
                {**doc(i), info.vector_field: (vec / np.linalg.norm(vec)).tolist(),
                 "model_id": info.model_id}]
    resp = client.bulk(operations=ops, refresh=True)
    assert not resp["errors"], resp
    return alias


@pytest.fixture(scope="module")
def catalogue(stack, tiny_model):
    alias = build(stack, tiny_model)
    yield alias
    make_client(stack).options(ignore_status=404).indices.delete(index=f"{alias}*", expand_wildcards="all")
