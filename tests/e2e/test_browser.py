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
    page.wait_for_function("() => [...document.querySelectorAll('.hit img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
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


def test_photos_on_an_image_host_without_cors_show_and_the_key_stays_home(browser, stack, index_name,
                                                                          tiny_model, tmp_path):
    """Issue 24, finding 2 on the page: photos whose refs are URLs on a host that sends no CORS
    headers. The image endpoint redirected there: the page's fetch (with X-API-Key) failed on
    CORS and the grid stayed grey, and a host that allowed it got the key. Now every photo shows
    and the host, which records every request's headers, never sees the key."""
    import json

    from click.testing import CliRunner

    from es_metric.cli import main
    from es_metric.web.app import create_app
    from tests.integration.helpers import url_worker
    from tests.urlserver import png_bytes

    colours = [(220, 20, 20), (20, 200, 30), (30, 40, 210), (200, 200, 20)]
    images = {f"/p{i}.png": png_bytes(c, (64, 64)) for i, c in enumerate(colours)}
    key = "page-key-24-stays-home"
    with url_worker(stack, images) as (s, hp, host):
        env = {k: v for k, v in s.as_env().items() if v}
        manifest = tmp_path / "urls.jsonl"
        manifest.write_text("".join(json.dumps({"id": f"p{i}", "image": f"http://{hp}/p{i}.png"}) + "\n"
                                    for i in range(len(colours))))
        for args in (["mapping", "create", index_name, "--model", str(tiny_model)],
                     ["ingest", index_name, str(manifest), "--timeout", "180"]):
            result = CliRunner().invoke(main, args, env=env)
            assert result.exit_code == 0, result.output
        query = tmp_path / "query.png"
        query.write_bytes(images["/p0.png"])
        host.headers_seen.clear()
        with running(create_app(s.with_(api_key=key))) as base:
            page = browser.new_page()
            page.goto(base + "/")
            page.fill("#apikey", key)
            page.fill("#index", index_name)
            page.set_input_files("#image", str(query))
            page.fill("#k", "4")
            page.click("#go")
            page.wait_for_selector(".hit", timeout=20_000)
            assert page.locator(".hit").count() == 4
            page.wait_for_function("() => [...document.querySelectorAll('.hit img')]"
                                   ".every(i => i.complete && i.naturalWidth === 64)", timeout=30_000)
    assert len(host.headers_seen) >= 4   # the server fetched the photos ...
    assert not [h for h in host.headers_seen if key in str(h)]   # ... and never passed the key on
