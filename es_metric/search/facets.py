"""Facets over a search's result set: aggregation bodies and their answers, as pure functions.

Keyword-like fields (keyword, a text field's keyword sub-field, boolean, ip) get a ``terms``
aggregation; numeric ones a ``variable_width_histogram`` (ranges that follow the values).
Every bucket carries the ``--filter`` string that selects it, so a page can make it clickable.
The aggregation runs over the documents the search ranked (its window), not the whole index.
A terms facet shows its ``--facet-size`` most common values and, when more exist, a last row
``{"value": null, "other": true, "count"}`` (Elasticsearch's ``sum_other_doc_count``) whose
filter excludes the values shown.
"""
from __future__ import annotations

from typing import Any

from ..errors import SearchError, shown
from .queries import FLOAT_MAX, INTEGER_BOUNDS, STRING_TYPES, TEXT_TYPES, field_info

TERMS_SIZE = 10
MAX_FACET_SIZE = 200
RANGE_BUCKETS = 5
MAX_FACETS = 10
NUMERIC = frozenset(INTEGER_BOUNDS) | frozenset(FLOAT_MAX)


def facet_aggs(names: list[str], properties: dict[str, Any], size: int = TERMS_SIZE) -> dict[str, Any]:
    """``aggs`` for the requested facet fields, keyed by the names as given; ``size``: values
    per terms facet."""
    if not (isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= MAX_FACET_SIZE):
        raise SearchError(f"facet size must be a whole number from 1 to {MAX_FACET_SIZE}, not {shown(size)}")
    if len(names) > MAX_FACETS:
        raise SearchError(f"{len(names)} facets asked for", hint=f"ask for at most {MAX_FACETS}")
    aggs = {}
    for name in dict.fromkeys(names):
        info = field_info(name, properties)
        if info.nested or info.path == "_id":
            raise SearchError(f"cannot facet on {shown(name)}",
                              hint="facet on a keyword, boolean or numeric field outside nested objects")
        field = info.exact if info.type in TEXT_TYPES else info.path
        if info.type in NUMERIC:
            aggs[name] = {"variable_width_histogram": {"field": field, "buckets": RANGE_BUCKETS}}
        elif field and (info.type in STRING_TYPES or info.type in TEXT_TYPES or info.type == "boolean"):
            aggs[name] = {"terms": {"field": field, "size": size}}
        else:
            raise SearchError(f"cannot facet on {shown(name)} ({info.type})",
                              hint="facet on keyword, boolean or numeric fields, or text fields "
                                   "with a keyword sub-field")
    return aggs


def _literal(value: str) -> str:
    """A filter value read as itself (| and .. would otherwise mean a list or a range)."""
    return f'"{value}"' if "|" in value or ".." in value or value[:1] == '"' else value


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def facets_of(aggregations: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The answer's buckets as ``{FIELD: [{"value", "count", "filter"}, ...]}``."""
    out = {}
    for name in dict.fromkeys(names):
        agg = aggregations.get(name) or {}
        rows = []
        for b in agg.get("buckets", []):
            if "min" in b:   # a numeric range: the values it holds, inclusive
                value = {"from": b["min"], "to": b["max"]}
                filt = f"{name}={_number(b['min'])}..{_number(b['max'])}"
            else:
                value = b.get("key_as_string", b["key"])  # booleans: "true", not 1
                filt = f"{name}={_literal(str(value))}"
            rows.append({"value": value, "count": b["doc_count"], "filter": filt})
        if agg.get("sum_other_doc_count"):
            rows.append(other_row(name, rows, agg["sum_other_doc_count"]))
        out[name] = rows
    return out


def other_row(name: str, rows: list[dict[str, Any]], count: int) -> dict[str, Any]:
    """The documents whose value is not among ``rows``; its filter excludes those values
    (None when a value holds ``|`` or ``..``, which a value list cannot carry)."""
    values = [str(r["value"]) for r in rows]
    plain = all("|" not in v and ".." not in v and v[:1] != '"' and v.strip() == v and v for v in values)
    return {"value": None, "other": True, "count": count,
            "filter": f"{name}!={'|'.join(values)}" if plain and values else None}
