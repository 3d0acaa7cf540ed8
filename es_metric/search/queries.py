"""Search request bodies as pure functions (unit-tested as dicts): kNN, filters, text.

Filters go *inside* the kNN clause (pre-filtering), so k results come back even when the filter
is selective. Fusing the image and text rankings is fusion.py's (not every cluster has the RRF
or linear retrievers).
"""
from __future__ import annotations

import difflib
import ipaddress
import re
import sys
from dataclasses import dataclass, replace
from typing import Any

from ..errors import SearchError, shown
from ..index.vectors import raw_vector_field

MAX_NUM_CANDIDATES = 10_000  # Elasticsearch's ceiling for a kNN search's num_candidates
MAX_QE_K = 100               # query expansion neighbours: its first round reads this many vectors
MAX_TEXT_FIELDS = 32         # fields a request may name for the default text leg
_FILTER_RE = re.compile(r"\s*([^\s=!<>]+)\s*(!=|>=|<=|=|>|<)\s*(.*?)\s*\Z", re.DOTALL)
FILTER_SYNTAX = ('use FIELD=VALUE, FIELD!=VALUE, FIELD>=N (> < <= too), FIELD=A|B or FIELD=LO..HI; '
                 'quote a value to keep | or .. literal: FIELD="a|b"')
RANGE_OPS = {">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}
INTEGER_BOUNDS = {"byte": (-2**7, 2**7 - 1), "short": (-2**15, 2**15 - 1),
                  "integer": (-2**31, 2**31 - 1), "long": (-2**63, 2**63 - 1),
                  "unsigned_long": (0, 2**64 - 1)}
FLOAT_MAX = {"half_float": 65504.0, "float": 3.4028234663852886e38,
             "double": sys.float_info.max, "scaled_float": sys.float_info.max}
DATE_TYPES = frozenset({"date", "date_nanos"})
STRING_TYPES = frozenset({"keyword", "constant_keyword", "wildcard", "version", "ip"})
TEXT_TYPES = frozenset({"text", "match_only_text"})
FILTERABLE = (frozenset(INTEGER_BOUNDS) | frozenset(FLOAT_MAX) | DATE_TYPES | STRING_TYPES
              | TEXT_TYPES | {"boolean"})
_INT_RE = re.compile(r"[+-]?[0-9]+\Z")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_MATH = r"(?:[+-][0-9]+[yMwdhHms]|/[yMwdhHms])"
_ISO = (r"[0-9]{4}(?:-[0-9]{2}(?:-[0-9]{2}(?:T[0-9]{2}(?::[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]{1,9})?)?)?"
        r"(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?)?)?")
# the default date format (strict_date_optional_time||epoch_millis), with date math
_DATE_RE = re.compile(rf"(?:now{_MATH}*|{_ISO}(?:\|\|{_MATH}+)?|[+-]?[0-9]{{1,19}})\Z")


@dataclass(frozen=True)
class Filter:
    field: str
    op: str
    value: str


@dataclass(frozen=True)
class FieldInfo:
    """A mapped field as a filter sees it: its full path, type and enclosing nested object."""

    name: str                      # as the user wrote it
    path: str
    type: str
    nested: str | None = None      # path of the enclosing ``nested`` field, if any
    exact: str | None = None       # a text field's keyword sub-field
    date_format: str | None = None


def parse_filter(text: str) -> Filter:
    """``field=value``, ``field!=value``, ``field>=10``, ``field=a|b`` or ``field=10..50``."""
    m = _FILTER_RE.match(text)
    if not m or not m.group(3):
        raise SearchError(f"cannot read filter {shown(text)}", hint=FILTER_SYNTAX)
    return Filter(*m.groups())


def field_info(name: str, properties: dict[str, Any]) -> FieldInfo:
    """Find ``name`` (dotted paths through objects, nested fields and multi-fields) in a mapping."""
    if name == "_id":
        return FieldInfo(name, "_id", "keyword")
    node: dict[str, Any] = {"properties": properties}
    parts, path, nested, i = name.split("."), [], None, 0
    while i < len(parts):
        children = node.get("properties") or node.get("fields") or {}
        j = next((j for j in range(len(parts), i, -1) if ".".join(parts[i:j]) in children), None)
        if j is None:
            raise _unknown_field(name, properties)
        node = children[".".join(parts[i:j])]
        path.append(".".join(parts[i:j]))
        if node.get("type") == "nested":
            nested = ".".join(path)
        i = j
    kind = node.get("type") or "object"
    if kind == "alias" and node.get("path") != name:  # a field alias: filter on its target
        return replace(field_info(node["path"], properties), name=name)
    if kind in ("object", "nested"):
        inner = ", ".join(f"{name}.{f}" for f in leaf_fields(node.get("properties") or {})[:10])
        raise SearchError(f"{shown(name)} is an object, not a field", hint=f"filter on one of its fields: {inner}")
    exact = next((f"{'.'.join(path)}.{sub}" for sub, spec in (node.get("fields") or {}).items()
                  if spec.get("type") == "keyword"), None) if kind in TEXT_TYPES else None
    return FieldInfo(name, ".".join(path), kind, nested, exact, node.get("format"))


def text_field_paths(names: list[str], properties: dict[str, Any]) -> list[str]:
    """The fields the default text leg matches, as a request names them: each a text field of
    the index (dotted paths, multi-fields and aliases resolved) outside nested objects (where a
    ``multi_match`` finds nothing), named literally: no pattern (``*``, ``?``) fanning out to
    other fields and no ``^boost`` (es-metric weighs the fields itself, textquery.field_weights)."""
    known = [f for f in leaf_fields(properties) if _is_text(f, properties)]
    hint = f"text fields of this index: {', '.join(known[:30]) or 'none'}"
    out = []
    for name in names:
        if not name.strip() or any(c in name for c in "*?^"):
            raise SearchError(f"text field {shown(name)} is not a field name", hint=hint + " (no patterns or ^boosts)")
        try:
            info = field_info(name, properties)
        except SearchError:
            info = None
        if info is None or info.type not in TEXT_TYPES or info.nested:
            what = "unknown" if info is None else f"{info.type} in nested {info.nested}" if info.nested else info.type
            raise SearchError(f"{shown(name)} is not a text field of this index ({what})", hint=hint, field=name)
        out.append(info.path)
    return list(dict.fromkeys(out))


def _is_text(name: str, properties: dict[str, Any]) -> bool:
    info = field_info(name, properties)
    return info.type in TEXT_TYPES and not info.nested


def leaf_fields(properties: dict[str, Any], prefix: str = "") -> list[str]:
    """Every field path a filter can name (multi-fields included; vectors left out)."""
    out = []
    for name, node in properties.items():
        path = f"{prefix}{name}"
        if "properties" in node:
            out += leaf_fields(node["properties"], f"{path}.")
        elif node.get("type") in FILTERABLE:
            out.append(path)
            out += [f"{path}.{sub}" for sub, spec in (node.get("fields") or {}).items()
                    if spec.get("type") in FILTERABLE]
    return sorted(out)


def _unknown_field(name: str, properties: dict[str, Any]) -> SearchError:
    known = leaf_fields(properties)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    listing = ", ".join(known[:30]) + (", ..." if len(known) > 30 else "")
    guess = f"; did you mean {' or '.join(close)}?" if close else ""
    return SearchError(f"unknown field {shown(name)}{guess}",
                       hint=f"fields of this index: {listing or 'none'}", field=name)


def typed_value(info: FieldInfo, value: str) -> int | float | bool | str:
    """``value`` as the field's type asks: strict numbers, true/false, checked dates, strings."""
    kind = info.type
    if kind in INTEGER_BOUNDS:
        lo, hi = INTEGER_BOUNDS[kind]
        if _INT_RE.match(value) and lo <= int(value) <= hi:
            return int(value)
        raise _bad_value(info, value, f"an integer from {lo} to {hi}")
    if kind in FLOAT_MAX:
        if _FLOAT_RE.match(value) and abs(float(value)) <= FLOAT_MAX[kind]:
            return float(value) if any(c in value for c in ".eE") else int(value)
        raise _bad_value(info, value, f"a finite number of at most {FLOAT_MAX[kind]:g} "
                                      "(digits, '.', exponent; no '_', inf or nan)")
    if kind == "boolean":
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise _bad_value(info, value, "true or false")
    if kind in DATE_TYPES and not info.date_format and not _DATE_RE.match(value):
        raise _bad_value(info, value, "a date: YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS[Z], epoch "
                                      "milliseconds, or date math like now-7d")
    if kind == "ip" and not _is_ip(value):
        raise _bad_value(info, value, "an IP address or CIDR block")
    return value


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def _bad_value(info: FieldInfo, value: str, expected: str) -> SearchError:
    return SearchError(f"filter on {shown(info.name)}: {shown(value)} is not {expected}",
                       hint=f"the index maps {shown(info.name)} as {info.type}", field=info.name,
                       field_type=info.type)


def filter_clause(f: Filter, properties: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """One filter as a query clause typed by the mapping; True first when it excludes."""
    info = field_info(f.field, properties)
    if info.type not in FILTERABLE:
        raise SearchError(f"cannot filter on {shown(f.field)}: its type is {info.type}",
                          hint="filter on keyword, text, numeric, date, boolean or ip fields")
    literal = len(f.value) >= 2 and f.value[0] == f.value[-1] == '"'
    value = f.value[1:-1] if literal else f.value
    if f.op in RANGE_OPS:
        clause = _range(info, {RANGE_OPS[f.op]: value})
    elif not literal and ".." in value:
        lo, hi = value.split("..", 1)
        clause = _range(info, {k: v.strip() for k, v in (("gte", lo), ("lte", hi)) if v.strip()})
    elif not literal and "|" in value:
        clause = _match(info, [v.strip() for v in value.split("|")])
    else:
        clause = _match(info, [value])
    if info.nested:
        clause = {"nested": {"path": info.nested, "query": clause}}
    return f.op == "!=", clause


def _range(info: FieldInfo, bounds: dict[str, Any]) -> dict[str, Any]:
    field = info.exact if info.type in TEXT_TYPES else info.path
    if info.type == "boolean" or not field:
        raise SearchError(f"cannot compare {shown(info.name)} ({info.type}) by range",
                          hint="ranges need a numeric, date or keyword field")
    if not bounds:
        raise SearchError(f"empty range for {shown(info.name)}", hint="give LO..HI, LO.. or ..HI")
    return {"range": {field: {op: typed_value(info, v) for op, v in bounds.items()}}}


def _match(info: FieldInfo, values: list[str]) -> dict[str, Any]:
    if not all(values):
        raise SearchError(f"empty value in the list for {shown(info.name)}", hint=FILTER_SYNTAX)
    typed = [typed_value(info, v) for v in values]
    if info.type in TEXT_TYPES and not info.exact:  # analysed text only: match the phrase
        phrases = [{"match_phrase": {info.path: v}} for v in typed]
        return phrases[0] if len(phrases) == 1 else {"bool": {"should": phrases, "minimum_should_match": 1}}
    field = info.exact or info.path
    return {"term": {field: typed[0]}} if len(typed) == 1 else {"terms": {field: typed}}


def filter_clauses(filters: list[Filter], properties: dict[str, Any]) -> dict[str, Any]:
    """A ``bool`` query with ``filter`` and ``must_not`` clauses (empty dict when no filters)."""
    must: list[dict[str, Any]] = []
    must_not: list[dict[str, Any]] = []
    for f in filters:
        negate, clause = filter_clause(f, properties)
        (must_not if negate else must).append(clause)
    body: dict[str, Any] = {}
    if must:
        body["filter"] = must
    if must_not:
        body["must_not"] = must_not
    return {"bool": body} if body else {}


def default_candidates(k: int, factor: float = 1.0) -> int:
    """kNN candidates per shard when the request names none: 10 x k, at least 100, times the
    field's rescore ``factor`` (a quantised field), at most Elasticsearch's 10,000."""
    return min(10_000, max(k, int(max(min(10 * k, 10_000), 100) * factor)))


def knn_clause(field: str, vector: list[float], k: int, *, num_candidates: int | None = None,
               filter_query: dict[str, Any] | None = None, min_similarity: float | None = None,
               boost: float | None = None, exclude_ids: list[str] | None = None) -> dict[str, Any]:
    clause: dict[str, Any] = {"field": field, "query_vector": [float(x) for x in vector], "k": k,
                    "num_candidates": max(num_candidates or 0, default_candidates(k))}
    filt = with_excluded(filter_query or {}, exclude_ids)
    if filt:
        clause["filter"] = filt
    if min_similarity is not None:
        clause["similarity"] = float(min_similarity)
    if boost is not None:
        clause["boost"] = float(boost)
    return clause


def with_excluded(filter_query: dict[str, Any], exclude_ids: list[str] | None) -> dict[str, Any]:
    if not exclude_ids:
        return filter_query
    body = {k: list(v) for k, v in (filter_query.get("bool") or {}).items()}
    body.setdefault("must_not", []).append({"ids": {"values": list(exclude_ids)}})
    return {"bool": body}


def search_body(*, knn: dict[str, Any] | None = None, query: dict[str, Any] | None = None, size: int = 10,
                offset: int = 0, vector_field: str = "image_vector",
                highlight_fields: list[str] | None = None) -> dict[str, Any]:
    """The whole request: kNN and/or query, page, source without the (large) vector."""
    body: dict[str, Any] = {"size": size, "from": offset,
                  "_source": {"excludes": [vector_field, raw_vector_field(vector_field)]},
                  "track_total_hits": False}
    if knn:
        body["knn"] = knn
    if query:
        body["query"] = query
    if highlight_fields:
        body["highlight"] = {"fields": {f: {} for f in highlight_fields}, "require_field_match": True}
    return body


def expansion_body(field: str, vector: list[float], k: int, *, model_field: str = "model_id",
                   filter_query: dict[str, Any] | None = None, exclude_ids: list[str] | None = None,
                   num_candidates: int | None = None) -> dict[str, Any]:
    """Query expansion's first round: the top ``k`` documents' vectors (from doc values: a lean
    index has none in ``_source``) and model ids (``model_field``: where the index keeps them)."""
    return {"size": k, "_source": [model_field], "docvalue_fields": [field], "track_total_hits": False,
            "knn": knn_clause(field, vector, k, num_candidates=num_candidates,
                              filter_query=filter_query, exclude_ids=exclude_ids)}

