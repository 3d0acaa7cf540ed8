"""The search page in headless Chromium (Debian's /usr/bin/chromium) against the real stack."""
from __future__ import annotations

import os

import pytest
from pathlib import Path

from tests.imagegen import make_manifest
from tests.integration.helpers import esm, esm_json
from tests.integration.server import running

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture
def server(stack):
    from es_metric.web.app import create_app

    with running(create_app(stack)) as base:
        yield base


def test_upload_an_image_see_results_and_click_for_more(browser, server, index_name, tiny_model,
                                                        tiny_data, tmp_path):
    manifest = make_manifest(tiny_data, tiny_data.parent / "manifest.jsonl")
    esm("mapping", "create", index_name, "--model", tiny_model, "--text-field", "title")
    esm_json("ingest", index_name, manifest)

    page = browser.new_page()
    page.goto(server + "/")
    page.fill("#index", index_name)
    page.set_input_files("#image", str(tiny_data / "class_3" / "img_004.jpg"))
    page.fill("#k", "6")
    page.click("#go")
    page.wait_for_selector(".hit", timeout=20_000)
    hits = page.locator(".hit")
    assert hits.count() == 6
    assert hits.first.get_attribute("data-id") == "class_3-img_004"
    assert "circle number 3" in hits.first.inner_text()
    page.wait_for_function("() => [...document.querySelectorAll('.hit img')].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(Path(os.environ.get("ESM_SCREENSHOT_DIR", tmp_path)) / "search-page.png"),
                    full_page=True)

    clicked = hits.nth(1).get_attribute("data-id")
    hits.nth(1).click()  # more like this
    page.wait_for_function(f"() => document.getElementById('status').textContent.includes('more like {clicked}')")
    ids = page.locator(".hit").evaluate_all("els => els.map(e => e.dataset.id)")
    assert len(ids) == 6 and clicked not in ids  # the document itself is excluded

    page.fill("#filters", "category=nothing-like-this")
    page.click("#go")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('fewer than k')")
    assert page.locator(".hit").count() == 0
