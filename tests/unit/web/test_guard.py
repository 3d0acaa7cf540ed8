"""The API key check and which paths are public: pure functions of the guard."""
from es_metric.web.guard import is_public, key_matches


def test_key_check_is_exact_and_takes_any_bytes():
    assert key_matches(None, None) and key_matches("", b"anything")
    assert key_matches("s3cret", b"s3cret") and key_matches("s3cret", "s3cret")
    assert not key_matches("s3cret", None) and not key_matches("s3cret", b"s3cret ")
    assert not key_matches("s3cret", "s3crét") and not key_matches("s3cret", b"\xff\x00")
    assert is_public("/api/health") and is_public("/static/app.js") and is_public("/")
    assert not is_public("/api/indices/x/search") and not is_public("//api/health")
