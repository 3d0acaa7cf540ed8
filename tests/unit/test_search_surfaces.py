"""One search schema, four surfaces: SearchRequest's fields are what the CLI's `esm search`, both
HTTP routes and the Python API take. An option added to one surface only fails here; the fields
a surface cannot take are listed by name, each with why (issue 25). Both routes' parameters are
declared once (es_metric/web/app.py, SEARCH_PARAMS); a route's own extra parameter is caught here too."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from es_metric.search.service import SearchRequest

FIELDS = {f.name for f in dataclasses.fields(SearchRequest)}

# surface -> its names for SearchRequest fields; the fields it cannot take (why); its inputs that are not fields
RENAMED = {"GET": {"facet": "facets", "filter": "filters"},
           "POST": {"like_image": "like_images", "unlike_image": "unlike_images"}}
CANNOT = {"cli": {"like_images", "unlike_images"},   # --like/--unlike take a document id or an image PATH
          "GET": {"image", "like_images", "unlike_images"}}  # a query string carries no upload (image_url does)
OWN_INPUTS = {"cli": {"index", "as_json"}, "POST": {"image_url"}, "GET": {"image_url"}}


def cli_names() -> set[str]:
    from es_metric.cli import main
    return {p.name for p in main.commands["search"].params if p.name}


def route_names(method: str) -> set[str]:
    from es_metric.config import Settings
    from es_metric.web.app import create_app
    for route in create_app(Settings.from_env()).routes:
        if getattr(route, "path", "").endswith("/search") and method in getattr(route, "methods", ()):
            return inputs(route.dependant)  # type: ignore[attr-defined]
    raise AssertionError(f"no {method} search route")


def inputs(dependant) -> set[str]:
    """A route's query and form parameters, its dependencies' (SEARCH_PARAMS) included."""
    names = {p.alias for p in dependant.query_params + dependant.body_params}
    return names.union(*(inputs(d) for d in dependant.dependencies))


@pytest.mark.parametrize("surface", ["cli", "POST", "GET"])
def test_every_surface_takes_the_search_request_fields(surface):
    names = cli_names() if surface == "cli" else route_names(surface)
    names = {RENAMED.get(surface, {}).get(n, n) for n in names} - OWN_INPUTS[surface]
    assert names - FIELDS == set(), f"{surface} takes options SearchRequest does not have"
    assert FIELDS - names - CANNOT.get(surface, set()) == set(), f"{surface} lacks these SearchRequest fields"
    assert CANNOT.get(surface, set()) & names == set(), f"{surface} takes a field listed in CANNOT: unlist it"


def test_the_python_api_passes_every_field_through():
    from es_metric.api import EsMetric
    params = inspect.signature(EsMetric.search).parameters
    named = set(params) - {"self", "index", "options"}
    assert named <= FIELDS
    assert params["options"].kind is inspect.Parameter.VAR_KEYWORD   # the rest: SearchRequest(**options)
