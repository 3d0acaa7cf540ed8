"""Property tests: random filter strings and HTTP parameters (odd unicode, huge numbers, wrong
types, repeated and unknown parameters) thrown at the real stack. The only outcomes allowed are
a result (200) or a clear 4xx with a JSON ``error``; in the CLI a result or one error line."""
from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings, strategies as st

from es_metric.cli import main
from tests.integration.catalogue import PROPERTIES, catalogue  # noqa: F401  (fixture)
from tests.integration.server import running

pytestmark = [pytest.mark.integration, pytest.mark.security]
SETTINGS = dict(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# text without lone surrogates (they cannot be encoded into a request at all)
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
SOME_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
FIELDS = st.one_of(
    st.sampled_from(sorted(PROPERTIES) + ["title.keyword", "dims.width", "dims.unit",
                                          "variants.color", "dims", "variants", "image_vector",
                                          "model_id", "_id", "nope", "a.b.c", "Stock", "é"]),
    ANY_TEXT)
NUMBERS = st.one_of(st.integers(min_value=-10**40, max_value=10**40).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr))
WORDS = st.sampled_from(["nan", "inf", "-inf", "1_000", "0x10", "1e400", "..", "|", "a..b", "1..",
                         "..2", '"x|y"', "now-1d/d", "2024-01-01", "2024-13-45", "true", "TRUE",
                         "10.0.0.0/8", "::1", "007", "", " ", "\x00", "\u202e", "💥", "%00",
                         "a" * 300])
VALUES = st.one_of(WORDS, NUMBERS, ANY_TEXT,
                   st.lists(st.one_of(WORDS, NUMBERS), min_size=2, max_size=4).map("|".join),
                   st.tuples(NUMBERS, NUMBERS).map("..".join))
OPS = st.sampled_from(["=", "!=", ">", ">=", "<", "<="])
DATES = st.dates().map(str)
TYPED = {"stock": st.integers(-2**31, 2**31 - 1).map(str), "dims.width": st.integers(-99, 999).map(str),
         "price": st.floats(-1e6, 1e6).map(str), "released": st.one_of(DATES, st.just("now-3d")),
         "in_stock": st.sampled_from(["true", "false", "True"]), "sku": SOME_TEXT,
         "variants.color": st.sampled_from(["red", "white", "x"]), "title": SOME_TEXT,
         "host": st.ip_addresses().map(str)}
# well-formed filters (a value of the field's type), so that many examples get past validation
WELL_FORMED = st.one_of(*[st.builds(lambda f, op, v: f"{f}{op}{v}", st.just(f), OPS, v)
                          for f, v in TYPED.items()])
FILTERS = st.one_of(
    WELL_FORMED, WELL_FORMED,
    st.builds(lambda f, op, v: f"{f}{op}{v}", FIELDS,
              st.sampled_from(["=", "!=", ">", ">=", "<", "<=", "==", "=>", " = "]), VALUES),
    ANY_TEXT)
SCALARS = st.one_of(NUMBERS, WORDS, ANY_TEXT, st.sampled_from(["1", "10", "200", "201", "0", "-1"]))
PARAM_NAMES = ["text", "like", "k", "page", "fusion", "image_weight", "text_weight",
               "min_similarity", "filter", "filters", "unknown", "k"]


def outcome_is_clean(r) -> None:
    """200 with hits, or a 4xx whose JSON has an ``error``; never a 5xx or a traceback."""
    assert "Traceback" not in r.text and 'File "' not in r.text, r.text
    assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text)
    body = r.json()
    event(f"HTTP {r.status_code}")  # --hypothesis-show-statistics shows the mix
    assert "hits" in body if r.status_code == 200 else isinstance(body.get("error"), str) and body["error"]


@pytest.fixture(scope="module")
def api(stack):
    from es_metric.web.app import create_app
    return TestClient(create_app(stack), raise_server_exceptions=False)


@settings(max_examples=200, **SETTINGS)
@given(filters=st.lists(FILTERS, min_size=1, max_size=2),
       by=st.sampled_from([{"text": "dress"}, {"like": "d3"}, {"text": "red", "like": "d1", "fusion": "rrf"}]))
def test_random_filters_through_the_api(catalogue, api, filters, by):
    r = api.get(f"/api/indices/{catalogue}/search", params={**by, "filter": filters})
    outcome_is_clean(r)


@settings(max_examples=200, **SETTINGS)
@given(fields=st.lists(st.tuples(st.sampled_from(PARAM_NAMES), SCALARS), max_size=8),
       image=st.one_of(st.none(), st.binary(max_size=300), st.just(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)),
       index=st.one_of(st.just(None), ANY_TEXT.filter(lambda s: s not in ("", ".", ".."))))
def test_random_form_fields_and_uploads(catalogue, api, fields, image, index):
    """Multipart forms with repeated, unknown and wrongly typed fields, random bytes as the
    image, and random index names in the path."""
    path = f"/api/indices/{quote(index or catalogue, safe='')}/search"
    files = {"image": ("x.bin", image, "application/octet-stream")} if image is not None else None
    form: dict[str, list[str]] = {}
    for k, v in fields:
        form.setdefault(k, []).append(v)
    r = api.post(path, data=form, files=files)
    outcome_is_clean(r)
    outcome_is_clean(api.get(path, params=[(k, v) for k, v in fields]))


@settings(max_examples=40, **SETTINGS)
@given(query=st.lists(st.tuples(st.sampled_from(PARAM_NAMES + ["%ff", "k[]", ""]),
                                st.one_of(SCALARS, st.sampled_from(["%ff%fe", "%", "%zz", "a&b", "%00"]))),
                      max_size=6),
       filters=st.lists(FILTERS, max_size=2))
def test_random_raw_query_strings_on_a_real_server(server_url, catalogue, query, filters):
    """Raw query strings (bad percent escapes, invalid UTF-8, repeated keys) through uvicorn."""
    raw = "&".join([f"{quote(k, safe='%')}={quote(v, safe='%&')}" for k, v in query]
                   + [f"filter={quote(f, safe='')}" for f in filters])
    with httpx.Client(base_url=server_url) as http:
        r = http.get(f"/api/indices/{catalogue}/search?text=dress&{raw}")
    outcome_is_clean(r)


@pytest.fixture(scope="module")
def server_url(stack):
    from es_metric.web.app import create_app
    with running(create_app(stack)) as base:
        yield base


@settings(max_examples=60, **SETTINGS)
@given(filters=st.lists(FILTERS.filter(lambda f: not f.startswith("-")), min_size=1, max_size=2),
       k=st.integers(min_value=-1, max_value=120), page=st.integers(min_value=-1, max_value=120))
def test_random_filters_and_pages_through_the_cli(catalogue, filters, k, page):
    """``esm search``: a JSON result, or exactly one ``error:`` line and a non-zero exit."""
    args = ["search", catalogue, "--text", "dress", "-k", str(k), "--page", str(page), "--json"]
    for f in filters:
        args += ["--filter", f]
    result = CliRunner().invoke(main, args)
    event(f"exit {result.exit_code}")
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        assert "hits" in json.loads(result.stdout.strip().splitlines()[-1])
    else:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
