"""Relevance feedback, facets and the API key on the search page, in headless Chromium."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from es_metric.search.fusion import DEFAULT_IMAGE_WEIGHT
from tests.imagegen import make_manifest
from tests.integration.helpers import esm, esm_json
from tests.integration.server import running

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
KEY = "s3cret-page-key"


@pytest.fixture
def keyed_server(stack):
    """The app with ESM_API_KEY set: every API call needs X-API-Key."""
    from es_metric.web.app import create_app

    with running(create_app(dataclasses.replace(stack, api_key=KEY))) as base:
        yield base


@pytest.fixture
def shop(index_name, tiny_model, tiny_data):
    manifest = make_manifest(tiny_data, tiny_data.parent / "manifest.jsonl")
    esm("mapping", "create", index_name, "--model", tiny_model, "--text-field", "title",
        "--keyword-field", "category")
    esm_json("ingest", index_name, manifest)
    return index_name


def shot(page, tmp_path, name: str) -> None:
    page.screenshot(path=str(Path(os.environ.get("ESM_SCREENSHOT_DIR", tmp_path)) / name), full_page=True)


def hit_ids(page) -> list[str]:
    return page.locator(".hit").evaluate_all("els => els.map(e => e.dataset.id)")


def searches(page) -> int:
    return int(page.evaluate("() => document.body.dataset.searches || '0'"))


def wait_for_search(page, before: int) -> None:
    page.wait_for_function("n => Number(document.body.dataset.searches || 0) > n", arg=before, timeout=30_000)


def mean_rank(ids: list[str], members: list[str]) -> float:
    """Mean position of ``members`` in a result list, one that is not listed counting as just
    past its end."""
    return sum(ids.index(d) if d in ids else len(ids) for d in members) / len(members)


def open_page(browser, server, index):
    page = browser.new_page()
    page.goto(server + "/")
    page.fill("#apikey", KEY)
    page.fill("#index", index)
    return page


def test_not_like_this_sends_a_result_and_its_look_alikes_down(browser, keyed_server, shop,
                                                               tiny_data, tmp_path):
    page = open_page(browser, keyed_server, shop)
    page.set_input_files("#image", str(tiny_data / "class_2" / "img_002.jpg"))
    page.fill("#k", "24")
    page.click("#go")
    page.wait_for_selector(".hit", timeout=20_000)
    page.wait_for_function("() => [...document.querySelectorAll('.hit img')].every(i => i.naturalWidth > 0)")
    before = hit_ids(page)
    other = next(d for d in before if not d.startswith("class_2-"))   # the first look-alike
    cls = other.rsplit("-", 1)[0]
    status = searches(page)
    page.locator(f'.hit[data-id="{other}"] button.less').click()
    wait_for_search(page, status)
    after = hit_ids(page)
    shot(page, tmp_path, "feedback-not-like-this.png")
    assert other not in after
    look_alikes = [d for d in before if d.startswith(cls + "-")]
    assert mean_rank(after, look_alikes) > mean_rank(before, look_alikes)   # they went down (or out)
    assert page.locator(".part.unlike").inner_text().startswith(f"not like: {other}")
    # the search is built from the upload and the negative; removing the negative undoes it
    assert page.locator(".part.image").count() == 1
    status = searches(page)
    page.locator(".part.unlike button.remove").click()
    wait_for_search(page, status)
    assert hit_ids(page) == before


def test_clicking_a_facet_filters_the_results(browser, keyed_server, shop, tiny_data, tmp_path):
    page = open_page(browser, keyed_server, shop)
    page.set_input_files("#image", str(tiny_data / "class_2" / "img_002.jpg"))
    page.fill("#facets", "category")
    page.fill("#k", "40")
    page.click("#go")
    page.wait_for_selector(".facet-value", timeout=20_000)
    buckets = page.locator(".facet-value")
    assert buckets.count() >= 2                           # 40 results from several categories
    value = buckets.nth(buckets.count() - 1)              # the smallest bucket
    wanted = value.get_attribute("data-filter")           # e.g. category=cat1
    count = int(value.inner_text().rsplit("(", 1)[1].rstrip(")"))
    status = searches(page)
    value.click()
    wait_for_search(page, status)
    shot(page, tmp_path, "facet-clicked.png")
    ids = hit_ids(page)
    category = wanted.split("=", 1)[1]
    assert ids and all(f"cat{int(d.split('-')[0].split('_')[1]) % 3}" == category for d in ids)
    assert count <= len(ids) < 40     # at least what the facet counted among the 40, and fewer than all
    assert page.locator(".part.filter").inner_text().startswith(f"filter: {wanted}")


def test_without_the_key_the_page_says_so(browser, keyed_server, shop):
    page = open_page(browser, keyed_server, shop)
    page.fill("#apikey", "")
    page.fill("#text", "circle")
    page.click("#go")
    page.wait_for_function("() => document.getElementById('status').className === 'error'", timeout=20_000)
    assert "X-API-Key" in page.text_content("#status")


def test_explain_shows_each_legs_part_and_one_per_product(browser, keyed_server, shop, tiny_data, tmp_path):
    """Explain on: every card says what each leg gave it (raw score, rank, normalised x weight);
    "one per" category leaves one card per category."""
    page = open_page(browser, keyed_server, shop)
    page.set_input_files("#image", str(tiny_data / "class_2" / "img_002.jpg"))
    page.fill("#text", "triangle")
    page.check("#explain")
    page.fill("#k", "6")
    page.click("#go")
    page.wait_for_selector(".hit .explain", timeout=20_000)
    shot(page, tmp_path, "explain.png")
    cards = page.locator(".hit")
    assert cards.count() == 6 and page.locator(".hit .explain").count() == 6
    first = page.locator(".hit").first.locator(".explain").inner_text()
    weight = f"× {DEFAULT_IMAGE_WEIGHT}"         # the default (adaptive) fusion says its text weight
    assert first.startswith("image ") and "#1" in first and weight in first and "text " in first
    assert "legs agree" in first and "text weight" in first
    status = searches(page)
    page.fill("#collapse", "category")
    page.click("#go")
    wait_for_search(page, status)
    assert len(hit_ids(page)) == 3        # three categories in the shop: one card each
