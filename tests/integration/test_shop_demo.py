"""A small version of scripts/shop_demo.py on the real stack: the shop's plain index gets
vectors beside its own fields, new products and a changed photo are followed, and search by
photo + text + filter answers from it."""
from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "shop_demo.py"


def load_demo():
    spec = importlib.util.spec_from_file_location("shop_demo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shop_demo_small(es, stack, tiny_model, redis_cleanup):
    demo = load_demo()
    index = f"t-shop-{uuid.uuid4().hex[:8]}"
    redis_cleanup(index)
    out = demo.run(str(tiny_model), index, n_start=3, n_new=2)
    assert len(out["lags_s"]) == 3                           # 2 new products + 1 changed photo
    st = out["status"]
    assert st["without_vector"] == 0 and st["documents"] == 5 and st["follower"]["state"] == "running"
    assert st["follower"]["queued"] == 6                     # 3 + 2 new + 1 changed, nothing twice
    photo_only, with_text, filtered = out["searches"]
    assert len(photo_only["hits"]) == 3
    category = filtered["args"][-1].split("=", 1)[1]
    assert filtered["hits"] and all(h["source"]["category"] == category for h in filtered["hits"])
    assert all("image_vector" not in h["source"] for h in photo_only["hits"])
    assert not es.indices.exists(index=index)                # the demo cleans up
