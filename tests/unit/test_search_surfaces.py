"""One search schema, four surfaces: SearchRequest's fields are what the CLI's `esm search`, both
HTTP routes and the Python API take. An option added to one surface only fails here; the gaps
that exist today are listed by name (issue 25: close them, then shrink these sets)."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from es_metric.search.service import SearchRequest

FIELDS = {f.name for f in dataclasses.fields(SearchRequest)}

# surface -> (its names for SearchRequest fields, fields it does not offer yet, its inputs that are not fields)
RENAMED = {"GET": {"facet": "facets", "filter": "filters"},
           "POST": {"like_image": "like_images", "unlike_image": "unlike_images"}}
NOT_YET = {"cli": {"like_images", "unlike_images"},          # --like takes PATHs instead
           "POST": {"near_duplicates", "num_candidates", "qe_k", "text_fields"},
           "GET": {"image", "like_images", "unlike_images", "near_duplicates", "num_candidates", "qe_k",
                   "text_fields"}}
OWN_INPUTS = {"cli": {"index", "as_json"}, "POST": {"image_url"}, "GET": {"image_url"}}


def cli_names() -> set[str]:
    from es_metric.cli import main
    return {p.name for p in main.commands["search"].params if p.name}


def route_names(method: str) -> set[str]:
    from es_metric.config import Settings
    from es_metric.web.app import create_app
    for route in create_app(Settings.from_env()).routes:
        if getattr(route, "path", "").endswith("/search") and method in getattr(route, "methods", ()):
            dep = route.dependant  # type: ignore[attr-defined]
            return {p.alias for p in dep.query_params + dep.body_params}
    raise AssertionError(f"no {method} search route")


@pytest.mark.parametrize("surface", ["cli", "POST", "GET"])
def test_every_surface_takes_the_search_request_fields(surface):
    names = cli_names() if surface == "cli" else route_names(surface)
    names = {RENAMED.get(surface, {}).get(n, n) for n in names} - OWN_INPUTS[surface]
    assert names - FIELDS == set(), f"{surface} takes options SearchRequest does not have"
    assert FIELDS - names - NOT_YET.get(surface, set()) == set(), f"{surface} lacks these SearchRequest fields"
    assert NOT_YET.get(surface, set()) & names == set(), "a gap was closed: remove it from NOT_YET"


def test_the_python_api_passes_every_field_through():
    from es_metric.api import EsMetric
    params = inspect.signature(EsMetric.search).parameters
    named = set(params) - {"self", "index", "options"}
    assert named <= FIELDS
    assert params["options"].kind is inspect.Parameter.VAR_KEYWORD   # the rest: SearchRequest(**options)
