"""Fetching image URLs against a real local HTTP server: limits, redirects re-checked at each
hop, retries, and the SSRF guard on the address actually connected to."""
from __future__ import annotations

import time

import pytest

from es_metric.errors import ImageError
from es_metric.images import decode
from es_metric.ingest.fetch import FetchPolicy, fetch
from es_metric.urlguard import AllowList
from tests.integration.server import free_port
from tests.urlserver import png_bytes, serving, serving_handler


def policy(hostport: str, **kw) -> FetchPolicy:
    kw = {"read_timeout": 1.0, "deadline": 4.0, "backoff": 0.05, "max_bytes": 1 << 20, **kw}
    return FetchPolicy(AllowList.parse(hostport), **kw)


def reason(url: str, pol: FetchPolicy) -> str:
    with pytest.raises(ImageError) as err:
        fetch(url, pol)
    return err.value.reason


def test_good_image_is_fetched_and_decodes():
    data = png_bytes()
    with serving({"/a.png": data}) as hp:
        got = fetch(f"http://{hp}/a.png", policy(hp))
    assert got == data and decode(got).size == (48, 40)


def test_loopback_server_is_refused_unless_allow_listed_with_its_port():
    with serving({"/a.png": png_bytes()}) as hp:
        assert reason(f"http://{hp}/a.png", policy("")) == "url_refused"
        other_port = "127.0.0.1:1"
        assert reason(f"http://{hp}/a.png", policy(other_port)) == "url_refused"
        assert reason(f"http://good@{hp}/a.png", policy(hp)) == "url_refused"


def test_redirect_to_a_private_address_is_refused_at_the_hop():
    with serving({"/a.png": png_bytes()}) as hp:
        # the allow-listed server redirects to the metadata service and to a loopback port
        assert reason(f"http://{hp}/redirect-to/169.254.169.254/latest/meta-data", policy(hp)) == "url_refused"
        assert reason(f"http://{hp}/redirect-to/127.0.0.1:9/x.png", policy(hp)) == "url_refused"
        # a redirect inside the allowed server is followed
        assert fetch(f"http://{hp}/redirect-to/{hp}/a.png", policy(hp)) == png_bytes()


def test_limits_status_codes_and_retries():
    with serving() as hp:
        pol = policy(hp)
        assert reason(f"http://{hp}/missing.png", pol) == "url_not_found"
        assert reason(f"http://{hp}/gone", pol) == "url_not_found"
        assert reason(f"http://{hp}/huge.png", pol) == "too_large"          # no Content-Length
        assert reason(f"http://{hp}/loop", pol) == "too_many_redirects"
        assert reason(f"http://{hp}/slow.png", pol) == "url_timeout"
        assert reason(f"http://{hp}/flaky.png", policy(hp, retries=0)) == "url_unavailable"  # 503
        assert decode(fetch(f"http://{hp}/flaky.png", pol)).size == (48, 40)  # 503, then 200
        with pytest.raises(ImageError) as err:   # the content is sniffed, not trusted
            decode(fetch(f"http://{hp}/page.png", pol))
        assert err.value.reason == "not_an_image"


def test_per_host_fetch_slots_are_dropped_when_idle():
    """Issue 24, finding 13: every host ever fetched kept its semaphore for the life of the
    process. 200 hosts (127.0.0.1 ... 127.0.0.200, nothing listening) leave none behind."""
    from es_metric.ingest.context import current

    port = free_port()
    pol = policy("127.0.0.0/8", retries=0)
    for i in range(1, 201):
        assert reason(f"http://127.0.0.{i}:{port}/x.png", pol) == "url_unavailable"
    assert current().hosts_in_flight() == 0


def test_per_host_limit_holds_while_fetches_wait():
    """At most ``per_host`` fetches reach one host at a time; the others wait for a slot."""
    from concurrent.futures import ThreadPoolExecutor

    from es_metric.ingest.context import current

    with serving_handler() as (hp, handler), ThreadPoolExecutor(6) as pool:
        pol = policy(hp, per_host=2, read_timeout=60, deadline=60)
        futures = [pool.submit(fetch, f"http://{hp}/hold.png", pol) for _ in range(6)]
        deadline = time.monotonic() + 30
        while handler.holding[0] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert handler.holding[0] == 2 and current().hosts_in_flight() == 1
        handler.gate.set()
        assert all(f.result() == png_bytes() for f in futures)
    assert handler.holding[1] == 2 and current().hosts_in_flight() == 0
