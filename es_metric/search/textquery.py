"""The text leg of a search, as pure functions: the default weighted ``multi_match``, or the
shop's own Elasticsearch query (``--text-query JSON``).

The shop's query is data: a JSON object of bounded size and depth naming one query, which goes
*inside* a ``bool`` whose filters and exclusions es-metric writes, so it can narrow or score the
text leg but never widen it past the filters, nor name another index (term lookups,
``more_like_this`` documents, indexed shapes), run a script, or smuggle a query past these
checks (``wrapper``). Where the user's text goes into it, ``{{text}}`` says so.
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping

from ..errors import SearchError, shown

MAX_QUERY_CHARS = 16_384
MAX_DEPTH = 24
MAX_NODES = 2_000
PLACEHOLDER = "{{text}}"
BODY_KEYS = frozenset({"query", "size", "from", "index", "knn", "aggs", "aggregations", "_source",
                       "sort", "retriever", "post_filter", "collapse", "highlight", "rank"})
REFUSED_KEYS = {"index": "reads another index", "_index": "reads another index",
                "wrapper": "hides a query from these checks"}
HINT = 'give one query object, e.g. {"multi_match": {"query": "{{text}}", "fields": ["name^3", "description"]}}'
# name/title fields weigh more than descriptions in the default text leg (bench/hybrid.py)
NAME_BOOST = 3.0
NAME_WORDS = frozenset({"title", "name"})
# a shopper's words are looked for across the fields (a "wool hoodie" is "hoodie" in its name and
# "wool" in its description): cross_fields scores every word in the field it is best in and sums
# the words, where best_fields scores the one best field and ignores the other word (BENCHMARKS §7d)
DEFAULT_MATCH_TYPE = "cross_fields"


def parse_text_query(value: str | Mapping[str, Any]) -> dict[str, Any]:
    """The shop's query as a checked dict; a clear SearchError for anything else."""
    if isinstance(value, str):
        if len(value) > MAX_QUERY_CHARS:
            raise SearchError(f"text query of {len(value):,} characters", hint=f"at most {MAX_QUERY_CHARS:,}")
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise SearchError(f"text query is not JSON: {exc}", hint=HINT) from None
    if not isinstance(value, Mapping) or len(value) != 1:
        raise SearchError(f"text query must be a JSON object naming one query, not {shown(value)}", hint=HINT)
    (kind,) = value
    if kind in BODY_KEYS:
        raise SearchError(f"text query {shown(kind)} is a search body key, not a query",
                          hint=HINT + "; es-metric sets the index, size, filters and vector search itself")
    query = dict(value)
    _walk(query, 0, [0])
    if len(json.dumps(query)) > MAX_QUERY_CHARS:
        raise SearchError("text query too large", hint=f"at most {MAX_QUERY_CHARS:,} characters")
    return query


def _walk(node: Any, depth: int, count: list[int]) -> None:
    count[0] += 1
    if depth > MAX_DEPTH or count[0] > MAX_NODES:
        raise SearchError("text query nested too deep or too large",
                          hint=f"at most {MAX_DEPTH} levels and {MAX_NODES:,} values")
    if isinstance(node, Mapping):
        for key, child in node.items():
            if not isinstance(key, str):
                raise SearchError(f"text query key {shown(key)} is not a string", hint=HINT)
            why = REFUSED_KEYS.get(key) or ("runs a script" if "script" in key.lower() else None)
            if why:
                raise SearchError(f"text query refused: {shown(key)} {why}",
                                  hint="use queries on this index's own fields, without scripts")
            _walk(child, depth + 1, count)
    elif isinstance(node, list):
        for child in node:
            _walk(child, depth + 1, count)
    elif not (node is None or isinstance(node, (str, int, float, bool))):
        raise SearchError(f"text query value {shown(node)} is not JSON", hint=HINT)


def with_text(query: dict[str, Any], text: str | None) -> dict[str, Any]:
    """``query`` with every ``{{text}}`` in its string values replaced by ``text`` (inserted as
    a value, never parsed). Text with a query that has no placeholder would be lost: refused."""
    if text is None:
        if PLACEHOLDER in json.dumps(query):
            raise SearchError("the text query has a {{text}} placeholder but no text was given",
                              hint="give --text, or write the words into the query")
        return query
    if PLACEHOLDER not in json.dumps(query):
        raise SearchError("text given with a text query that has no {{text}} placeholder",
                          hint="put {{text}} where the words go, or leave the text out")
    substituted: dict[str, Any] = _substitute(query, text)
    return substituted


def _substitute(node: Any, text: str) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, text) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, text) for v in node]
    return node.replace(PLACEHOLDER, text) if isinstance(node, str) else node


def field_weights(fields: list[str], name_boost: float = NAME_BOOST) -> list[str]:
    """``multi_match`` fields with name/title fields boosted over the rest (descriptions...)."""
    if name_boost == 1:
        return list(fields)
    return [f"{f}^{name_boost:g}" if is_name(f) else f for f in fields]


def is_name(field: str) -> bool:
    """``title``, ``name``, ``product_name``, ``productTitle``, ``shop.title``: the last word."""
    words = re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", field)
    return bool(words) and words[-1].lower() in NAME_WORDS


def default_query(text: str, fields: list[str]) -> dict[str, Any]:
    """The default text leg: ``multi_match`` (each word in its best field, the words summed) over
    ``fields`` (with boosts)."""
    return {"multi_match": {"query": text, "fields": fields or ["*"], "type": DEFAULT_MATCH_TYPE}}


def leg_query(query: dict[str, Any], filter_query: dict[str, Any] | None) -> dict[str, Any]:
    """``query`` scoring inside a ``bool`` that carries the search's filters and exclusions."""
    body: dict[str, Any] = {"must": [query]}
    for key, clauses in ((filter_query or {}).get("bool") or {}).items():
        body.setdefault(key, []).extend(clauses)
    return {"bool": body}
