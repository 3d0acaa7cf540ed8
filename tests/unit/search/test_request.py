"""A SearchRequest refuses what Elasticsearch would refuse, before anything runs; index names
and Elasticsearch's error bodies are read by pure functions."""
import math

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import ApiError, BadRequestError

from es_metric.errors import ConfigError, SearchError
from es_metric.index.client import es_reason
from es_metric.index.indices import check_index_name
from es_metric.search.fusion import DEFAULT_FUSION
from es_metric.search.service import FUSIONS, MAX_RESULT_WINDOW, SearchRequest


def test_valid_requests_pass():
    SearchRequest(text="red", k=200, page=50)  # 10,000: exactly the window
    SearchRequest(like="doc", fusion="rrf", num_candidates=10_000, image_weight=0, min_similarity=-0.5)
    SearchRequest(text="red", qe_k=0, near_duplicates=True)
    assert SearchRequest(text="red", qe_k=100, text_fields="title").text_fields == ["title"]


@pytest.mark.parametrize("kwargs,message", [
    ({"fusion": "bogus"}, r"unknown fusion 'bogus' \(use one of: adaptive, minmax, zscore, rrf, weighted\)"),
    ({"examples": "median"}, r"unknown example strategy 'median' \(use one of: mean, max\)"),
    ({"unlike": ["d1", " "]}, "empty unlike"),
    ({"facets": [None]}, "facets must be strings"),
    ({"like": [f"d{i}" for i in range(21)]}, "too many examples"),
    ({"k": 200, "page": 51}, "page 51 of k=200 reaches result 10200, past Elasticsearch's "
                             "10,000-result window"),
    ({"k": 10_001}, "reaches result 10001"),
    ({"k": 0}, "k must be a whole number of at least 1"),
    ({"page": -1}, "page must be a whole number"),
    ({"k": 2.5}, "k must be a whole number"),
    ({"k": True}, "k must be a whole number"),
    ({"num_candidates": 10_001}, "num_candidates must be a whole number from 1 to 10,000"),
    ({"num_candidates": 0}, "num_candidates must be a whole number from 1"),
    ({"image_weight": -1.0}, "image_weight must be a finite number of at least 0"),
    ({"text_weight": math.nan}, "text_weight must be a finite number"),
    ({"image_weight": math.inf}, "image_weight must be a finite number"),
    ({"min_similarity": math.nan}, "min_similarity must be a finite number, not nan"),
    ({"text": "   "}, "empty text"),
    ({"like": ""}, "empty like"),
    ({"filters": [3]}, "filters must be strings"),
    ({"num_candidates": 2.5}, "num_candidates must be a whole number from 1 to 10,000"),
    ({"num_candidates": True}, "num_candidates must be a whole number"),
    ({"qe_k": 101}, r"qe_k must be a whole number from 0 to 100 \(0: no query expansion\), not 101"),
    ({"qe_k": -1}, "qe_k must be a whole number from 0"),
    ({"qe_k": 10**30}, "qe_k must be a whole number"),
    ({"near_duplicates": "yes"}, "near_duplicates must be true or false, not 'yes'"),
    ({"text_fields": ["title", ""]}, "empty text_fields"),
    ({"text_fields": [b"title"]}, "text_fields must be strings"),
    ({"text_fields": {"title": 1}}, "text_fields must be a list of strings"),
    ({"text_fields": [f"f{i}" for i in range(33)]}, "too many text fields"),
])
def test_invalid_requests_are_refused_with_the_limit(kwargs, message):
    with pytest.raises(SearchError, match=message):
        SearchRequest(**{"text": "x", **kwargs})
    assert MAX_RESULT_WINDOW == 10_000


def test_the_cli_offers_the_fusions_the_library_accepts():
    from es_metric.cli.search import search
    fusion = next(p for p in search.params if p.name == "fusion")
    assert tuple(fusion.type.choices) == FUSIONS
    assert fusion.default == DEFAULT_FUSION == SearchRequest(text="x").fusion


@pytest.mark.parametrize("name", ["shop", "t-1a2b", "a.b", "x" * 255, "été"])
def test_index_names_elasticsearch_accepts(name):
    check_index_name(name)


@pytest.mark.parametrize("name", ["", "*", "shop*", "a,b", "_all", "-x", "+x", ".", "..", "Shop",
                                  "a b", "a/b", "remote:idx", "a#b", 'a"b', "x" * 256, "é" * 128,
                                  "a\nb", "a\x00b"])
def test_index_names_that_are_patterns_or_invalid_are_refused(name):
    with pytest.raises(ConfigError, match="is not a valid index or alias name"):
        check_index_name(name)


def _api_error(cls, status: int, body):
    meta = ApiResponseMeta(status=status, http_version="1.1", headers=HttpHeaders(), duration=0.0,
                           node=NodeConfig("http", "localhost", 9200))
    return cls(message="search_phase_execution_exception", meta=meta, body=body)


def test_es_reason_takes_the_root_cause_and_what_caused_it():
    body = {"error": {"root_cause": [{"type": "query_shard_exception", "reason": "failed to create query"}],
                      "type": "search_phase_execution_exception", "reason": "all shards failed",
                      "failed_shards": [{"reason": {"type": "query_shard_exception",
                                                    "reason": "failed to create query",
                                                    "caused_by": {"type": "number_format_exception",
                                                                  "reason": 'For input string: "x"'}}}]},
            "status": 400}
    assert es_reason(_api_error(BadRequestError, 400, body)) == 'failed to create query: For input string: "x"'
    assert es_reason(_api_error(ApiError, 502, "Bad Gateway")) == "search_phase_execution_exception"
    assert es_reason(_api_error(ApiError, 500, {"error": "boom"})) == "boom"
    assert len(es_reason(_api_error(ApiError, 500, {"error": {"reason": "x" * 1000}}))) == 300

